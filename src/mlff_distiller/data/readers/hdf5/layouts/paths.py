"""Which files a path names: one file, a directory of shards, or a glob pattern."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ._h5 import natural_key

#: suffixes of the shard files collected from a directory
SHARD_SUFFIXES = (".h5", ".hdf5", ".hdf")
_GLOB_CHARS = set("*?[")


def resolve_paths(path: str | os.PathLike) -> list[str]:
    """The files ``path`` stands for, in natural order (train_2 before train_10).

    A file -> [file]; a directory -> its *.h5/*.hdf5/*.hdf files; a pattern with * ? [ -> the
    files it matches. FileNotFoundError naming the path when nothing is there.
    """
    text = str(path)
    p = Path(text)
    if p.is_file():
        return [text]
    if p.is_dir():
        files = [str(q) for q in p.iterdir() if q.is_file() and q.suffix.lower() in SHARD_SUFFIXES]
        if not files:
            raise FileNotFoundError(f"{text}: directory holds no HDF5 files ({', '.join(SHARD_SUFFIXES)})")
        return sorted(files, key=lambda s: natural_key(Path(s).name))
    if _GLOB_CHARS & set(text):
        files = [f for f in glob.glob(text) if os.path.isfile(f)]
        if not files:
            raise FileNotFoundError(f"{text}: no file matches this pattern")
        return sorted(files, key=natural_key)
    raise FileNotFoundError(f"{text}: no such file")
