"""Publishing a file a writer produced: never through a planted name, never over a file that
appeared meanwhile, nothing left behind on failure, leftovers of killed writers cleaned up.

Every writer of the project (``write_structures``, ``write_packed``, and any engine that
writes a result file) writes through :func:`publish`::

    with publish(out, overwrite=False) as tmp:   # tmp: a fresh hidden file beside ``out``
        write_everything_to(tmp)
    # now ``out`` exists, complete; if anything failed, neither ``tmp`` nor ``out`` exists

- The temporary file ``.<name>.partial-<host>-<pid>-<random>`` is created exclusively
  (``mkstemp``: ``O_CREAT | O_EXCL``, mode 0600) in the target's directory, so a symlink planted
  at a predictable name is never written through, and the final rename stays on one filesystem.
- Without ``overwrite`` the file is published by ``os.link(tmp, out)``, which fails if ``out``
  exists: two runs writing the same name can never both "succeed" with one result silently
  gone; the second gets ``FileExistsError``. With ``overwrite``, ``os.replace`` (atomic).
- On any failure the temporary file and its side files (SQLite's ``-journal``, ``-wal``, ``-shm``,
  ASE's ``.lock``) are removed; a full disk (``ENOSPC``, ``EFBIG``, SQLite's "database or disk is full") becomes
  one ``OSError`` naming ``out`` and saying nothing was written.
- Leftovers of writers that were killed (``kill -9``) on this host — partial files, their side
  files and spill directories whose process no longer exists — are removed the next time the same
  name is written (:func:`remove_stale`).

Small files (configs, reports, markers, a student) are written by :func:`write_atomic`, the same
steps for bytes, text or a callback that writes to the open temporary file::

    write_atomic(path, text)                              # replaces path atomically
    write_atomic(path, lambda fh: fig.savefig(fh, format="png"), overwrite=False)

HDF5 cannot survive a full disk (h5py crashes the interpreter when it closes a file whose
metadata writes failed), so HDF5 writers also ask a :class:`SpaceGuard` before each structure,
which stops them with ``ENOSPC`` while there is still room to close the file cleanly.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import shutil
import socket
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

#: side files SQLite creates next to a database
SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")
#: side files a writer of a temporary file may leave beside it: SQLite's and ASE's lock file
#: (``ase.db`` writes under ``<file>.lock``, which a killed writer leaves behind)
SIDE_FILES = SQLITE_SIDE_FILES + (".lock",)
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


def _owner(kind: str) -> str:
    return f"{kind}-{_HOST}-{os.getpid()}-"


def temp_prefix(target: Path, kind: str = "partial") -> str:
    """``.<name>.<kind>-<host>-<pid>-``: the name start of this process's temporary files for ``target``."""
    return f".{target.name}.{_owner(kind)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale(target: PathLike) -> list[Path]:
    """Remove leftovers of dead writers of ``target`` on this host (partial files, their side files
    :data:`SIDE_FILES`, spill directories); returns what was removed. Files of live processes, of other hosts and
    anything not named like a leftover are never touched."""
    target = Path(target)
    directory = target.parent
    side = "(?:" + "|".join(re.escape(x) for x in SIDE_FILES) + ")?"
    patterns = [
        re.compile(rf"^\.{re.escape(target.name)}\.(?:partial|spill)-{re.escape(_HOST)}-(\d+)-[A-Za-z0-9_]+{side}$"),
        # names of the writers before this module: .<stem>.partial-<pid><suffix>, .<name>.partial-<pid>
        re.compile(rf"^\.{re.escape(target.stem)}\.partial-(\d+){re.escape(target.suffix)}{side}$"),
        re.compile(rf"^\.{re.escape(target.name)}\.partial-(\d+){side}$"),
    ]
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = next((m for m in (p.match(name) for p in patterns) if m), None)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        path = directory / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass  # another run cleaned it at the same time
    return removed


class WriteError(OSError):
    """A write that failed (nothing was published); its message names the file."""

    def __str__(self) -> str:
        return str(self.strerror)


class DiskFullError(WriteError):
    """A write that ran out of disk space or hit the file-size limit (``errno`` ENOSPC)."""


def _near_limits(path: Path) -> bool:
    """Whether ``path``'s filesystem is (almost) full or the file reached the file-size limit."""
    try:
        st = os.statvfs(path.parent)
        if st.f_bavail * st.f_frsize < 2**20:
            return True
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit == resource.RLIM_INFINITY:
            return False
        sizes = [os.path.getsize(p) for p in (path, *(path.with_name(path.name + x) for x in SQLITE_SIDE_FILES))
                 if os.path.exists(p)]
        return max(sizes, default=0) + 2**16 >= limit
    except OSError:
        return False


def is_disk_full(exc: BaseException, path: Optional[Path] = None) -> bool:
    """A write that failed because the disk (or the file-size limit) is full. SQLite says
    "database or disk is full", or only "disk I/O error" at the limit: then ``path`` is checked."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return True
    if isinstance(exc, sqlite3.OperationalError):
        if "disk is full" in str(exc):
            return True
        return "disk I/O error" in str(exc) and path is not None and _near_limits(path)
    return False


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def remove_partial(tmp: Path) -> None:
    """Remove a temporary file (or directory) and its side files (:data:`SIDE_FILES`)."""
    _remove(tmp)
    for suffix in SIDE_FILES:
        _remove(tmp.with_name(tmp.name + suffix))


def check_target(target: Path, overwrite: bool) -> None:
    """FileExistsError now (before any work) when ``target`` exists and ``overwrite`` is False;
    FileNotFoundError when its directory does not exist."""
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target.parent}: no such directory")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")


def _link_new(tmp: Path, target: Path) -> None:
    """Make ``tmp`` appear as ``target``, failing with FileExistsError if ``target`` exists."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileExistsError(
            f"{target} already exists (another run wrote it meanwhile?); nothing was replaced; "
            "pass overwrite=True (--overwrite) to replace it"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        # a filesystem without hard links: claim the name exclusively, then move the file over it
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            raise FileExistsError(f"{target} already exists (another run wrote it meanwhile?); nothing was replaced") from None
        os.close(fd)
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def _replace(tmp: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)  # os.replace cannot put a file over a directory
    os.replace(tmp, target)


@contextmanager
def publish(target: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary file beside ``target``; publish it as ``target`` when the block
    succeeds (see the module docstring).

    Raises FileExistsError (before any work, or at publishing when another run created
    ``target`` meanwhile), FileNotFoundError for a missing directory, and ``OSError(ENOSPC)``
    naming ``target`` for a full disk."""
    with _staged(target, overwrite) as (fd, tmp):
        os.close(fd)
        yield tmp


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(target: PathLike, data, *, overwrite: bool = True, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``target`` atomically; returns ``target`` as a Path.

    ``data``: ``bytes``, ``str`` (encoded with ``encoding``), or a callable given the open binary
    temporary file (``lambda fh: fig.savefig(fh, format="png")``). The temporary file is created
    exclusively beside ``target`` (``mkstemp``) and written through the descriptor ``mkstemp``
    returned (never by name: a symlink planted anywhere in the directory is never followed), synced,
    then published by ``os.replace`` (``overwrite``, the default) or ``os.link`` (fails with
    FileExistsError when ``target`` exists). The file gets the mode ``open()`` would give it
    (0666 less the umask). On failure nothing is left behind and ``target`` is unchanged;
    IsADirectoryError when ``target`` is a directory."""
    target = Path(target)
    if target.is_dir() and not target.is_symlink():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not replaced by a file", str(target))
    if isinstance(data, str):
        data = data.encode(encoding)
    with _staged(target, overwrite) as (fd, tmp):
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return target


@contextmanager
def _staged(target: PathLike, overwrite: bool) -> Iterator[tuple[int, Path]]:
    """:func:`publish`'s steps; yields the temporary file's open descriptor (the block closes it) and path."""
    target = Path(target)
    check_target(target, overwrite)
    remove_stale(target)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(target), dir=target.parent)
    tmp = Path(name)
    try:
        yield fd, tmp
        if overwrite:
            _replace(tmp, target)
        else:
            _link_new(tmp, target)
    except BaseException as exc:
        full = is_disk_full(exc, tmp)
        remove_partial(tmp)
        if isinstance(exc, WriteError):
            raise  # names the file already (a SpaceGuard's stop)
        if full:
            limit = getattr(exc, "errno", None) == errno.EFBIG or "limit" in str(exc)
            what = "the file-size limit was reached" if limit else "the disk is full"
            raise DiskFullError(errno.ENOSPC, f"{target}: {what} while writing it; nothing was written "
                                              f"(the partial file was removed)") from None
        if isinstance(exc, sqlite3.Error):  # e.g. "disk I/O error" (SQLite's word for EFBIG too)
            raise WriteError(errno.EIO, f"{target}: SQLite could not write it ({exc}); nothing was written "
                                        f"(the partial file was removed)") from None
        raise


@contextmanager
def spill_directory(target: PathLike) -> Iterator[Path]:
    """A scratch directory ``.<name>.spill-<host>-<pid>-<random>`` beside ``target`` (removed on
    exit; a killed writer's one is removed by the next :func:`remove_stale` of ``target``)."""
    target = Path(target)
    path = Path(tempfile.mkdtemp(prefix=temp_prefix(target, "spill"), dir=target.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class SpaceGuard:
    """Stops an HDF5 writer with ``OSError(ENOSPC)`` while there is still room to close its file.

    ``reserve(nbytes)`` before writing each piece of data: every ``every`` bytes it compares the
    free space of the file's filesystem (and the process's file-size limit) with what is still
    to be written plus ``margin`` (HDF5 keeps up to 32 MB of metadata in its cache and writes it
    when the file is closed).
    """

    def __init__(self, path: PathLike, *, shown: Optional[str] = None, margin: int = 48 * 2**20,
                 every: int = 2**20) -> None:
        self.path = Path(path)
        #: the file as messages name it (the published name, not the temporary one)
        self.shown = str(path) if shown is None else str(shown)
        self.margin = int(margin)
        self.every = int(every)
        self._pending = self.every  # check at the first reserve

    def reserve(self, nbytes: int) -> None:
        self._pending += int(nbytes)
        if self._pending >= self.every:
            self.check(self._pending)
            self._pending = 0

    def check(self, upcoming: int = 0) -> None:
        need = int(upcoming) + self.margin
        st = os.statvfs(self.path.parent)
        free = st.f_bavail * st.f_frsize
        if free < need:
            raise DiskFullError(errno.ENOSPC, f"{self.shown}: the disk is (nearly) full: {free / 2**20:.1f} MB free, "
                                              f"the HDF5 writer stops while {need / 2**20:.0f} MB remain (h5py cannot "
                                              "close a file on a full disk); nothing was written")
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            try:
                size = os.path.getsize(self.path)
            except OSError:
                size = 0
            if size + need > limit:
                raise DiskFullError(errno.EFBIG, f"{self.shown}: the file-size limit ({limit} bytes) would be reached; "
                                                 "the HDF5 writer stops before it; nothing was written")


__all__ = [
    "publish", "spill_directory", "remove_stale", "remove_partial", "check_target", "is_disk_full",
    "temp_prefix", "SpaceGuard", "WriteError", "DiskFullError", "SQLITE_SIDE_FILES", "SIDE_FILES",
    "write_atomic",
]
