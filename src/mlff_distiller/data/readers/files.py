"""What a reader may open, and whether it is still the file it indexed.

``check_regular_file``: a regular file, never a FIFO or device (opening a FIFO blocks until
someone writes to it), with messages that say what the path is instead.

``FileIdentity``: what a reader indexed (device, inode, size, modification time). A reader
records it when it is built and compares it whenever a process opens the file again (a
DataLoader worker, a reopen after ``close()``): a file replaced or modified since (our own
``--overwrite`` replaces files atomically, so this happens in normal use) is an error, never the
old index applied to new content.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Iterable, Optional

from ..errors import DataFormatError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """'a directory', 'a FIFO (named pipe)', ... for an ``st_mode`` that is not a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: str, what: str, shown: str | None = None) -> os.stat_result:
    """``os.stat(path)`` of a regular file (symlinks followed).

    FileNotFoundError (``<path>: no such file (<what> expected)``), IsADirectoryError for a
    directory, DataFormatError for a FIFO, socket or device; nothing is opened. ``shown``: the
    path as messages show it (default ``path``).
    """
    shown = path if shown is None else shown
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown}: no such file ({what} expected)") from None
    if stat.S_ISREG(st.st_mode):
        return st
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{shown}: is a directory, not {what}")
    raise DataFormatError(f"{shown}: is {file_kind(st.st_mode)}, not {what}; only regular files are read")


@dataclass(frozen=True)
class FileIdentity:
    """One file as a reader indexed it."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> "FileIdentity":
        st = os.stat(path)
        return cls(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def change(self) -> Optional[str]:
        """How the file at ``path`` differs from this record now, or None."""
        try:
            now = FileIdentity.of(self.path)
        except FileNotFoundError:
            return "it was removed"
        if (now.device, now.inode) != (self.device, self.inode):
            return "it was replaced by another file"
        if now.size != self.size:
            return f"its size changed from {self.size} to {now.size} bytes"
        if now.mtime_ns != self.mtime_ns:
            return "it was modified"
        return None


def identities(paths: Iterable[str]) -> tuple[FileIdentity, ...]:
    """The identity of every regular file among ``paths`` (URLs, globs and missing paths skipped)."""
    out = []
    for path in paths:
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                out.append(FileIdentity.of(path))
        except (OSError, ValueError):
            continue
    return tuple(out)


def check_unchanged(recorded: Iterable[FileIdentity]) -> None:
    """DataFormatError naming the first file that changed since it was recorded."""
    for identity in recorded:
        change = identity.change()
        if change is not None:
            raise DataFormatError(
                f"{identity.path}: file changed since the dataset was opened ({change}); its index no longer "
                "applies: open the dataset again"
            )


__all__ = ["check_regular_file", "file_kind", "FileIdentity", "identities", "check_unchanged"]
