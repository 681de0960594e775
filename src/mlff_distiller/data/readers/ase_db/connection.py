"""Where an ASE database is and how to open it without leaking its password.

``mask_password`` is how a database URL appears in every message, log line and repr
(``postgresql://user:***@host/db``). ``DbLocation`` checks a local file before ``ase.db`` could
create or modify it, opens the per-process handle (the ``ase.db`` Database plus, for SQLite, a
read-only ``sqlite3`` connection) and turns backend errors into errors naming the file, with
any password scrubbed from third-party messages.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable, Optional

from ...errors import DataFormatError, format_error
from ..files import check_regular_file

_SQLITE_MAGIC = b"SQLite format 3\x00"
#: file suffixes ase.db.connect opens with a backend other than SQLite
_OTHER_FILE_TYPES = {".json": "json", ".aselmdb": "aselmdb", ".lmdb": "aselmdb"}
#: columns every ASE ``systems`` table has
_REQUIRED_COLUMNS = ("id", "numbers", "positions", "cell", "pbc")


def is_url(path: str) -> bool:
    """True for a database address such as ``postgresql://user:pw@host:5432/db``."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def mask_password(path: str) -> str:
    """``scheme://user:pw@host/db`` -> ``scheme://user:***@host/db`` (also ``password=`` queries)."""
    if not is_url(path):
        return path
    scheme, rest = path.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = userinfo.split(":", 1)[0] + ":***@" + hostport
    masked = f"{scheme}://{netloc}{sep}{tail}"
    return re.sub(r"(?i)(password=)[^&;\s]*", r"\1***", masked)


def secret_parts(path: str) -> list[str]:
    """The password substrings of a URL (to scrub them from third-party error messages)."""
    if not is_url(path):
        return []
    secrets = re.findall(r"(?i)password=([^&;\s]+)", path)
    netloc = path.split("://", 1)[1].partition("/")[0]
    userinfo, at, _ = netloc.rpartition("@")
    if at and ":" in userinfo:
        secrets.append(userinfo.split(":", 1)[1])
    return [s for s in secrets if s]


def sqlite_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection: never creates or modifies the file."""
    uri = Path(path).as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


class DbHandle:
    """What one process holds open: the ``ase.db`` Database and (SQLite) a read-only connection."""

    def __init__(self, db, con: Optional[sqlite3.Connection]) -> None:
        self.db = db
        self.con = con

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None


class DbLocation:
    """A database file or URL: its checks, its handle and its errors (password never shown).

    ``display`` is the path with any password replaced by ``***``; ``db_type`` is the local
    file's backend (``'db'`` for SQLite, ``'json'``, ``'aselmdb'``), None for a URL.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.display = mask_password(path)
        self.url = is_url(path)
        self.location = path if self.url else os.path.abspath(path)
        self._secrets = secret_parts(path)
        self.db_type: Optional[str] = None if self.url else self._check_file()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def error(self, index: Optional[int], key: Optional[str], problem: str) -> DataFormatError:
        """DataFormatError naming the database (password hidden), ``index`` and ``key``."""
        return format_error(self.display, index, key, self.scrub(problem))

    def _check_file(self) -> str:
        """Existence and type of a local file, checked before ase.db could create it."""
        p = Path(self.location)
        if not p.exists():
            raise FileNotFoundError(f"{self.display}: no such file (ASE database expected)")
        if p.is_dir():
            raise self.error(None, None, "is a directory, not an ASE database file")
        check_regular_file(self.location, "an ASE database file", self.display)  # never open a FIFO
        with open(p, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if head == _SQLITE_MAGIC:
            return "db"
        other = _OTHER_FILE_TYPES.get(p.suffix.lower())
        if other is not None:
            return other
        what = "an empty file" if not head else "not an SQLite file"
        raise self.error(None, None, f"not an ASE database ({what}; ASE databases are SQLite files "
                                     "or .json/.aselmdb files or database URLs)")

    def sqlite_columns(self) -> tuple[str, ...]:
        """The columns of an SQLite file's ``systems`` table; DataFormatError when it is not an ASE db."""
        try:
            con = sqlite_readonly(self.location)
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if "systems" not in tables:
                    raise self.error(None, None, "not an ASE database (SQLite file without a 'systems' table)")
                columns = tuple(r[1] for r in con.execute("PRAGMA table_info(systems)"))
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise self.error(None, None, f"not a readable SQLite database ({exc})") from None
        missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise self.error(None, None, f"not an ASE database: 'systems' lacks columns {missing}")
        return columns

    def connect_ase(self):
        """``ase.db.connect`` of this location (ImportError naming a missing backend)."""
        import ase.db

        try:
            if self.url:
                return ase.db.connect(self.location)
            return ase.db.connect(self.location, type=self.db_type)
        except ImportError as exc:
            raise ImportError(f"{self.display}: ase.db cannot open this database type "
                              f"({self.scrub(str(exc))}); for postgresql/mysql install ase-db-backends") from None

    def open(self, fast_sqlite: bool) -> DbHandle:
        """This process's handle; with ``fast_sqlite`` also a read-only SQLite connection."""
        db = self.connect_ase()
        con = sqlite_readonly(self.location) if fast_sqlite else None
        return DbHandle(db, con)

    def guard(self, what: str, call: Callable[[], Any], index: Optional[int] = None) -> Any:
        """Run ``call``; turn backend errors into errors naming the file (password scrubbed)."""
        try:
            return call()
        except (DataFormatError, IndexError, FileNotFoundError, ImportError):
            raise
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError, AssertionError) as exc:
            raise self.error(index, None, f"{what} failed: {type(exc).__name__}: {exc}") from None
        except Exception as exc:
            if self.url:  # connection errors of other backends (psycopg2, pymysql)
                raise ConnectionError(
                    f"{self.display}: {what} failed: {type(exc).__name__}: {self.scrub(str(exc))}"
                ) from None
            if isinstance(exc, OSError):  # e.g. ase.db: "Can not read new ase.db format"
                raise self.error(index, None, f"{what} failed: {type(exc).__name__}: {exc}") from None
            raise

__all__ = ["is_url", "mask_password", "secret_parts", "sqlite_readonly", "DbHandle", "DbLocation"]
