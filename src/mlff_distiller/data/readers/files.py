"""What a reader may open: a regular file, never a FIFO or device (opening a FIFO blocks until
someone writes to it), with messages that say what the path is instead."""

from __future__ import annotations

import os
import stat

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


__all__ = ["check_regular_file", "file_kind"]
