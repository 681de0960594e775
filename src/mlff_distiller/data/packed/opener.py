"""Opening a packed file: validate the header, then memory-map every contiguous dataset."""

from __future__ import annotations

import mmap
import os
import warnings
from typing import Union

import numpy as np

from ..errors import format_error
from ..keys import DEFAULT_KEYS, KeyRegistry
from ..readers.hdf5.layouts._h5 import RefusedInput, check_declared_size
from .layout import FORMAT_ATTR, FORMAT_NAME, read_header
from .store import PackedStore

PathLike = Union[str, os.PathLike]


def is_packed_file(path: PathLike) -> bool:
    """True when ``path`` is an HDF5 file carrying the packed format's root attribute."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get(FORMAT_ATTR) in (FORMAT_NAME, FORMAT_NAME.encode())
    except (OSError, ValueError):
        return False


def open_packed(path: PathLike, keys: KeyRegistry = DEFAULT_KEYS) -> PackedStore:
    """Memory-map the packed file ``path`` (one map for the whole file, read-only).

    Datasets stored chunked or compressed (e.g. after ``h5repack``) cannot be mapped; they are
    read through h5py instead, with a warning, since that is much slower.
    """
    import h5py

    path = os.fspath(path)
    f = h5py.File(path, "r")
    try:
        header = read_header(f, path, keys)
        mapped, fallback = {}, {}
        for name in header["names"]:
            ds = f[name]
            try:  # a forged shape without storage would be allocated as zeros below
                check_declared_size(ds.id, name)
            except RefusedInput as exc:
                raise format_error(path, None, name, exc.problem) from None
            offset = ds.id.get_offset()
            if ds.size == 0:
                mapped[name] = (None, ds.shape, ds.dtype)
            elif ds.chunks is None and ds.compression is None and offset is not None and not ds.external:
                mapped[name] = (offset, ds.shape, ds.dtype)
            else:
                fallback[name] = ds
    except BaseException:
        f.close()
        raise
    if fallback:
        warnings.warn(
            f"{path}: datasets {sorted(fallback)} are chunked or compressed and cannot be memory-mapped; "
            "reading them through h5py is much slower (re-pack the file with write_packed)",
            stacklevel=3,
        )
    else:
        f.close()
        f = None
    with open(path, "rb") as raw:
        mm = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
    arrays = dict(fallback)
    for name, (offset, shape, dtype) in mapped.items():
        count = int(np.prod(shape))
        if offset is not None and offset + count * np.dtype(dtype).itemsize > len(mm):
            mm.close()
            raise format_error(path, None, name, f"dataset of shape {list(shape)} extends beyond the end of the file "
                                                 f"({len(mm)} bytes): the file is truncated or forged")
        if offset is None:
            arrays[name] = np.zeros(shape, dtype=dtype)
        else:
            arrays[name] = np.frombuffer(mm, dtype=dtype, count=count, offset=offset).reshape(shape)
    return PackedStore(arrays, keys=header["keys"], strings=header["strings"], units=header["units"],
                       metadata=header["metadata"], cutoff=header["cutoff"], path=path, mm=mm, h5file=f)


__all__ = ["open_packed", "is_packed_file"]
