"""Which files a path names: one file, a directory of shards, or a glob pattern."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ....errors import DataFormatError
from ...files import check_regular_file
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
        # hidden files are never shards: a writer's leftover ``.train_3.h5.partial-123`` is not data
        files = [
            str(q) for q in p.iterdir()
            if not q.name.startswith(".") and q.is_file() and q.suffix.lower() in SHARD_SUFFIXES
        ]
        if not files:
            raise FileNotFoundError(f"{text}: directory holds no HDF5 files ({', '.join(SHARD_SUFFIXES)})")
        return _distinct(sorted(files, key=lambda s: natural_key(Path(s).name)))
    if os.path.exists(text):  # a FIFO, socket or device: never opened (a FIFO would block)
        check_regular_file(text, "an HDF5 file or a directory of shards")
    if _GLOB_CHARS & set(text):
        files = [f for f in glob.glob(text) if os.path.isfile(f)]
        if not files:
            raise FileNotFoundError(f"{text}: no file matches this pattern")
        return _distinct(sorted(files, key=natural_key))
    raise FileNotFoundError(f"{text}: no such file")


def _distinct(files: list[str]) -> list[str]:
    """``files``, or DataFormatError when two names are one file (a hard or symbolic link):
    its structures would be read twice."""
    seen: dict[tuple[int, int], str] = {}
    for f in files:
        st = os.stat(f)
        first = seen.setdefault((st.st_dev, st.st_ino), f)
        if first != f:
            raise DataFormatError(f"{f}: same file as {first} (a hard or symbolic link); each shard must be listed once")
    return files

