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
from h5py import h5d, h5g, h5i, h5l, h5o, h5s, h5t

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


# -- what a file may make the reader do: links and declared sizes ------------------------------

#: a dataset may always declare this many bytes (one read of it is a bounded allocation) ...
ALWAYS_READABLE = 256 * 2**20
#: ... and beyond that at most this many times the size of its file: no compression filter
#: reaches it on real data, while a forged or sparse dataset (shape (10**12, 3) in a 49 kB file)
#: would otherwise make the reader allocate terabytes
MAX_EXPANSION = 1024
_LINK_KINDS = {h5l.TYPE_SOFT: "soft", h5l.TYPE_EXTERNAL: "external"}


class RefusedInput(ValueError):
    """A link or dataset this reader refuses to follow or read; the reader adds the file name."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(problem)
        self.where = where
        self.problem = problem


def _text(name) -> str:
    return name.decode("utf-8", errors="replace") if isinstance(name, bytes) else str(name)


def check_declared_size(ds: h5d.DatasetID, where: str, shape=False, itemsize: Optional[int] = None) -> None:
    """RefusedInput when dataset ``ds`` declares more bytes than its file could hold
    (see ``ALWAYS_READABLE``/``MAX_EXPANSION``); nothing is read. ``shape``/``itemsize``: the
    dataset's, when the caller has them already (asking h5py costs a few µs)."""
    if shape is False:
        shape = ds.shape
    if not shape:
        return
    count = 1
    for n in shape:
        count *= int(n)
    if count <= ALWAYS_READABLE // 64:  # no HDF5 element type is wider than 64 bytes here
        return
    nbytes = count * (ds.get_type().get_size() if itemsize is None else itemsize)
    if nbytes <= ALWAYS_READABLE:
        return
    file_size = h5i.get_file_id(ds).get_filesize()
    if nbytes > MAX_EXPANSION * file_size:
        raise RefusedInput(
            where,
            f"declares shape {tuple(int(n) for n in shape)} ({nbytes / 2**30:.3g} GiB) but the whole file is "
            f"{file_size} bytes; refusing to read it (a sparse or forged dataset)",
        )


def check_storage(ds: h5d.DatasetID, where: str, allow_external: bool) -> None:
    """RefusedInput for a dataset whose values live in other files (external raw storage, a
    virtual dataset), unless ``allow_external``. Contiguous data inside the file (an offset in
    it, ~1 µs to ask) needs no further look; other layouts cost one property-list query (~8 µs)."""
    if allow_external or ds.get_offset() is not None:
        return
    dcpl = ds.get_create_plist()
    if dcpl.get_external_count() > 0:
        raise RefusedInput(where, "its values are stored in external raw files; pass allow_external_links=True to read them")
    if dcpl.get_layout() == h5d.VIRTUAL:
        raise RefusedInput(where, "is a virtual dataset mapping other files; pass allow_external_links=True to read it")


class LinkPolicy:
    """Which links a reader follows: hard and soft links inside the file, never an external
    link (a file from a stranger naming another file on this machine) unless allowed.

    ``members(gid, where)`` lists a group checking its links at no extra cost; a soft link seen
    there triggers one ``scan`` of the whole file (its target may pass through an external link
    elsewhere). ``scan`` visits every link of a file once (~1 µs per link).
    """

    def __init__(self, allow_external: bool = False) -> None:
        self.allow_external = bool(allow_external)
        self.scanned: set[int] = set()

    def _refuse(self, where: str, kind: int, target: str = "") -> RefusedInput:
        what = _LINK_KINDS.get(kind, f"user-defined (type {kind})")
        return RefusedInput(
            where, f"is an {what} link{' to ' + target if target else ''}; external links are not followed "
                   "(pass allow_external_links=True to follow them)"
        )

    def check_dataset(self, ds: h5d.DatasetID, where: str, shape=False) -> None:
        """Declared size and storage of an open dataset (see ``check_declared_size``/``check_storage``)."""
        check_declared_size(ds, where, shape)
        check_storage(ds, where, self.allow_external)

    def check_link(self, gid, name: str, where: str) -> None:
        """Refuse ``name`` in the open group ``gid`` when it is an external or user-defined link."""
        if self.allow_external:
            return
        info = gid.links.get_info(name.encode())
        if info.type == h5l.TYPE_HARD:
            return
        if info.type == h5l.TYPE_SOFT:
            self.scan(gid)
            return
        raise self._refuse(where, info.type, self._target(gid, name.encode()))

    def members(self, gid, where: str) -> list[str]:
        """``member_names(gid)`` after checking every link of the group."""
        out: list[bytes] = []
        odd: list[tuple[bytes, int]] = []

        def visit(name: bytes, info) -> None:
            out.append(name)
            if info.type != h5l.TYPE_HARD:
                odd.append((name, info.type))

        gid.links.iterate(visit, info=True)
        if odd and not self.allow_external:
            for name, kind in odd:
                if kind != h5l.TYPE_SOFT:
                    raise self._refuse(f"{where}/{_text(name)}".lstrip("/"), kind, self._target(gid, name))
            self.scan(gid)
        return [n.decode("utf-8", errors="replace") for n in out]

    def scan(self, obj) -> None:
        """Visit every link of the file holding ``obj`` (once per file); refuse external ones."""
        if self.allow_external:
            return
        fid = h5i.get_file_id(obj)
        key = fid.fileno
        if key in self.scanned:
            return
        bad: list[tuple[bytes, int]] = []

        def visit(name: bytes, info):
            if info.type not in (h5l.TYPE_HARD, h5l.TYPE_SOFT):
                bad.append((name, info.type))
                return True  # stop at the first one
            return None

        fid.links.visit(visit, info=True)
        if bad:
            name, kind = bad[0]
            raise self._refuse(_text(name), kind, self._target(fid, name))
        self.scanned.add(key)

    @staticmethod
    def _target(gid, name: bytes) -> str:
        try:
            value = gid.links.get_val(name)
        except Exception:  # noqa: BLE001 - only for the message
            return ""
        if isinstance(value, tuple):
            return ":".join(_text(v) for v in value)
        return _text(value)


def check_datasets(f: h5py.File, allow_external: bool) -> None:
    """Check every dataset of an open file (declared size, external storage) without reading
    any; for layouts that read through h5py's high-level API."""
    problems: list[RefusedInput] = []

    def visit(name: bytes, info):
        if info.type != h5o.TYPE_DATASET:
            return None
        where = _text(name)
        try:
            ds = h5d.open(f.id, name)
            check_declared_size(ds, where)
            check_storage(ds, where, allow_external)
        except RefusedInput as exc:
            problems.append(exc)
            return True
        return None

    h5o.visit(f.id, visit, info=True)
    if problems:
        raise problems[0]


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

    def __init__(
        self, ds: h5d.DatasetID, dtypes: Optional["DtypeCache"] = None, name: str = "", where: Optional[str] = None
    ) -> None:
        self.ds = ds
        self.tid = ds.get_type()
        self.shape = ds.shape
        check_declared_size(ds, where or name, self.shape)
        self.is_string = self.tid.get_class() == h5t.STRING
        if self.is_string:
            self.dtype: Optional[np.dtype] = None
        elif dtypes is not None:
            self.dtype = dtypes.dtype(name, self.tid)
        else:
            self.dtype = self.tid.dtype

    @classmethod
    def open(
        cls, parent, name: str, dtypes: Optional["DtypeCache"] = None, where: Optional[str] = None
    ) -> "DatasetReader":
        """Open ``name`` under ``parent``; KeyError if there is no such dataset, RefusedInput
        (naming ``where``, default ``name``) if it declares more than its file could hold."""
        return cls(h5d.open(parent, name.encode()), dtypes, name, where)

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
