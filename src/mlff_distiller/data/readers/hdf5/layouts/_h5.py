"""Low-level h5py access shared by the layouts: one open and one read per dataset, exact dtype.

h5py's high-level ``group[name][()]`` costs ~80 µs per dataset (path parsing, selection objects,
type conversion set-up). The layouts read through ``h5py.h5d``/``h5py.h5g`` instead: open by
name relative to an open group, read the whole dataset (or one row of it) into a buffer of the
file's own dtype with the file's type as memory type, so nothing is converted and float64 stays
float64 bit for bit. String datasets (MACE's ``"None"``, ANI species symbols) go through the
high-level API, which knows how to decode them.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

import h5py
import numpy as np
from h5py import h5d, h5g, h5s, h5t

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key ordering '10' after '9' and 'set.010' after 'set.009'."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(name))


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=natural_key)


def as_text(value) -> str:
    """bytes / numpy bytes / str -> str."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def member_names(gid: h5g.GroupID) -> list[str]:
    """Names of the links in an open group, in storage order (one HDF5 iteration, ~4 µs)."""
    out: list[bytes] = []
    gid.links.iterate(out.append)
    return [n.decode("utf-8", errors="replace") for n in out]


def open_group(parent, name: str) -> h5g.GroupID:
    """Open a group by path relative to ``parent`` (a FileID or GroupID); KeyError if missing."""
    return h5g.open(parent, name.encode())


def exists(parent, name: str) -> bool:
    return bool(parent.links.exists(name.encode()))


class DtypeCache(dict):
    """name -> (HDF5 type, numpy dtype): turning an HDF5 type into a dtype costs ~8 µs, comparing
    two types ~1 µs, and consecutive structures almost always store a key with the same type."""

    def dtype(self, name: str, tid: h5t.TypeID) -> np.dtype:
        hit = self.get(name)
        if hit is not None and hit[0] == tid:
            return hit[1]
        dt = tid.dtype
        self[name] = (tid, dt)
        return dt


class DatasetReader:
    """An open dataset with its type, dtype and shape resolved once.

    ``all()`` reads the whole dataset, ``row(r)`` reads ``ds[r]``; both return arrays of the
    file's dtype in native byte order. String datasets return decoded values via h5py.
    """

    __slots__ = ("ds", "tid", "dtype", "shape", "is_string")

    def __init__(self, ds: h5d.DatasetID, dtypes: Optional["DtypeCache"] = None, name: str = "") -> None:
        self.ds = ds
        self.tid = ds.get_type()
        self.is_string = self.tid.get_class() == h5t.STRING
        if self.is_string:
            self.dtype: Optional[np.dtype] = None
        elif dtypes is not None:
            self.dtype = dtypes.dtype(name, self.tid)
        else:
            self.dtype = self.tid.dtype
        self.shape = ds.shape

    @classmethod
    def open(cls, parent, name: str, dtypes: Optional["DtypeCache"] = None) -> "DatasetReader":
        """Open ``name`` under ``parent``; KeyError if there is no such dataset."""
        return cls(h5d.open(parent, name.encode()), dtypes, name)

    def _native(self, arr: np.ndarray) -> np.ndarray:
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr

    def all(self):
        if self.is_string or self.shape is None:
            return h5py.Dataset(self.ds)[()]
        arr = np.empty(self.shape, self.dtype)
        if arr.size:
            self.ds.read(h5s.ALL, h5s.ALL, arr, mtype=self.tid)
        return self._native(arr)

    def row(self, r: int):
        """``ds[r]`` for a dataset of shape (rows, ...)."""
        if self.is_string:
            return h5py.Dataset(self.ds)[r]
        rest = tuple(self.shape[1:])
        fspace = self.ds.get_space()
        fspace.select_hyperslab((r,) + (0,) * len(rest), (1,) + rest)
        arr = np.empty((1,) + rest, self.dtype)
        if arr.size:
            mspace = h5s.create_simple(arr.shape)
            self.ds.read(mspace, fspace, arr, mtype=self.tid)
        return self._native(arr[0])


def read_dataset(parent, name: str):
    """The whole dataset ``name`` under ``parent`` (numeric arrays keep their dtype)."""
    return DatasetReader.open(parent, name).all()


def dataset_shape(parent, name: str) -> Optional[tuple]:
    """Shape of dataset ``name`` under ``parent`` without reading it (KeyError if missing)."""
    return h5d.open(parent, name.encode()).shape


def is_none_marker(value) -> bool:
    """MACE writes the string "None" for a property a configuration does not have."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SUO" and value.size == 1:
            value = value.reshape(())[()]
        else:
            return False
    return isinstance(value, (str, bytes, np.bytes_)) and as_text(value) == "None"


def list_tree(f: h5py.File, limit: int = 20, depth: int = 3) -> list[str]:
    """Up to ``limit`` group/dataset paths of a file (breadth first, ``depth`` levels) for errors."""
    out: list[str] = []
    level = [("", f)]
    for _ in range(depth):
        nxt = []
        for prefix, grp in level:
            try:
                names = natural_sorted(grp.keys())
            except Exception:  # pragma: no cover - unreadable group
                continue
            for name in names:
                path = f"{prefix}/{name}"
                try:
                    obj = grp.get(name, getlink=False)
                except Exception:  # pragma: no cover - broken link
                    obj = None
                if isinstance(obj, h5py.Group):
                    out.append(path + "/")
                    nxt.append((path, obj))
                elif isinstance(obj, h5py.Dataset):
                    out.append(f"{path} {obj.dtype}{list(obj.shape) if obj.shape is not None else ''}")
                else:
                    out.append(path)
                if len(out) >= limit:
                    return out
        level = nxt
    return out
