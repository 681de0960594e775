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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import DataFormatError, format_error
from ..files import check_regular_file

_SQLITE_MAGIC = b"SQLite format 3\x00"
#: file suffixes ase.db.connect opens with a backend other than SQLite
_OTHER_FILE_TYPES = {".json": "json", ".aselmdb": "aselmdb", ".lmdb": "aselmdb"}
#: columns every ASE ``systems`` table has
_REQUIRED_COLUMNS = ("id", "numbers", "positions", "cell", "pbc")


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: URL schemes (lower case, ``+driver`` removed) that ``ase.db.connect`` opens
DB_SCHEMES = {"postgresql": "postgresql", "postgres": "postgres", "mysql": "mysql", "mariadb": "mariadb"}


def is_url(path: str) -> bool:
    """True for a database address such as ``postgresql://user:pw@host:5432/db``."""
    return _SCHEME.match(str(path)) is not None


@dataclass(frozen=True)
class _UrlParts:
    scheme: str  #: as written, e.g. 'PostgreSQL+psycopg2'
    user: Optional[str]  #: None without user info
    password: Optional[str]  #: None without ':' in the user info
    rest: str  #: host[:port]/database[?query], as written
    query_secrets: tuple[str, ...]  #: values of ``password=`` query parameters

    @property
    def dialect(self) -> str:
        """'postgresql', 'mysql'...: the scheme in lower case without a ``+driver``."""
        return self.scheme.lower().split("+", 1)[0]


def _split_url(url: str) -> _UrlParts:
    """A database URL split into scheme, user, password and the rest.

    The user info ends at the *last* ``@``: people write passwords with unescaped ``/``, ``@``
    or ``?`` (``postgresql://user:s3cret/PW@host/db``), which a generic URL parser
    (``urllib.parse``) would read as the start of the path and show in full. The rest is
    parsed with ``urllib.parse`` for ``password=`` query parameters.
    """
    m = _SCHEME.match(url)
    scheme, after = m.group(1), url[m.end():]
    userinfo, at, rest = after.rpartition("@")
    user = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        password = secret if colon else None
    else:
        rest = after
    query = urlsplit(f"x://{rest}").query if "?" in rest else ""
    secrets = tuple(v for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() == "password" and v)
    secrets += tuple(re.findall(r"(?i)[?&;]password=([^&;#]+)", rest))  # as written, percent-encoded
    return _UrlParts(scheme, user, password, rest, secrets)


_QUERY_PASSWORD = re.compile(r"(?i)([?&;]password=)[^&;#]*")


def mask_password(path: str) -> str:
    """``scheme://user:pw@host/db`` -> ``scheme://user:***@host/db`` (also ``password=`` queries).

    Any password is hidden, whatever it contains (``/``, ``@``, ``?``...) and whatever the
    scheme's case or driver (``POSTGRESQL://``, ``postgresql+psycopg2://``).
    """
    path = str(path)
    if not is_url(path):
        return path
    parts = _split_url(path)
    if parts.user is None:
        return _QUERY_PASSWORD.sub(r"\1***", path)
    userinfo = parts.user if parts.password is None else f"{parts.user}:***"
    rest = _QUERY_PASSWORD.sub(r"\1***", parts.rest)
    return f"{parts.scheme}://{userinfo}@{rest}"


def secret_parts(path: str) -> list[str]:
    """The password substrings of a URL, as written and percent-decoded (to scrub them from
    third-party error messages)."""
    path = str(path)
    if not is_url(path):
        return []
    parts = _split_url(path)
    found = [*parts.query_secrets, *([parts.password] if parts.password else [])]
    found += [unquote(s) for s in found if unquote(s) != s]
    # the pieces a driver may show when it splits an unescaped password at URL delimiters
    found += [piece for s in found for piece in re.split(r"[/@?#:&;]", s) if len(piece) >= 2]
    return sorted({s for s in found if s}, key=len, reverse=True)  # longest first: no partial scrubs


def url_dialect(path: str) -> str:
    """'postgresql', 'mysql'...: a URL's scheme in lower case without ``+driver``."""
    return _split_url(str(path)).dialect


def ase_url(path: str) -> str:
    """The URL as ``ase.db.connect`` needs it: the scheme in lower case without ``+driver``
    (ASE recognises ``postgresql://``, ``mysql://``... only so)."""
    parts = _split_url(path)
    return f"{DB_SCHEMES.get(parts.dialect, parts.dialect)}://{path[_SCHEME.match(path).end():]}"


def _check_postgres_password(url: str, shown: str) -> None:
    """libpq ends the user info at the first ``/`` or ``@``: with either unescaped in the password
    it would connect to a host named after part of the password (and print it). Say so instead."""
    parts = _split_url(url)
    if parts.dialect in ("postgresql", "postgres") and parts.password and set(parts.password) & set("/@"):
        raise ValueError(
            f"{shown}: the password contains '/' or '@', which a PostgreSQL URL must percent-encode "
            "(urllib.parse.quote(password, safe='')); or leave it out of the URL and set PGPASSWORD "
            "or ~/.pgpass"
        )


class Hidden:
    """A value kept out of ``repr``/``str``/``vars()`` (no ``__dict__``), so that loggers that
    record an object's attributes (hyperparameter loggers, ``vars(dataset)``) never see it.

    It still travels in pickles: DataLoader workers must reconnect with it. Prefer passwords
    that never enter the URL (PostgreSQL: ``PGPASSWORD`` or ``~/.pgpass``).
    """

    __slots__ = ("_value",)

    def __init__(self, value) -> None:
        self._value = value

    def reveal(self):
        return self._value

    def __repr__(self) -> str:
        return "Hidden(***)"

    __str__ = __repr__

    def __reduce__(self):
        return (Hidden, (self._value,))


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


def _row_snapshot(handle: DbHandle) -> tuple[int, int]:
    """(row count, largest id) of an open database."""
    if handle.con is not None:
        count, last = handle.con.execute("SELECT count(*), max(id) FROM systems").fetchone()
        return int(count), int(last or 0)
    count = handle.db.count()
    last = next(iter(handle.db.select(sort="-id", limit=1, include_data=False)), None)
    return int(count), int(last.id) if last is not None else 0


class DbLocation:
    """A database file or URL: its checks, its handle and its errors (password never shown).

    ``display`` is the path with any password replaced by ``***``; ``db_type`` is the local
    file's backend (``'db'`` for SQLite, ``'json'``, ``'aselmdb'``), None for a URL.
    """

    def __init__(self, path: str) -> None:
        path = str(path)
        #: the path as shown everywhere (password replaced by ***)
        self.display = mask_password(path)
        self.path = self.display
        self.url = is_url(path)
        if self.url:
            _check_postgres_password(path, self.display)
        self._location = Hidden(ase_url(path) if self.url else os.path.abspath(path))
        self._secrets = Hidden(secret_parts(path))
        self.db_type: Optional[str] = None if self.url else self._check_file()
        #: (row count, largest id) when this process first opened it (see ``open``)
        self.rows: Optional[tuple[int, int]] = None

    @property
    def location(self) -> str:
        """What ``ase.db.connect`` opens (for a URL, with its password: never show it)."""
        return self._location.reveal()

    def scrub(self, text: str) -> str:
        for secret in self._secrets.reveal():
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
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # a corrupt schema decodes as garbage text
            raise self.error(None, None, f"not a readable SQLite database ({type(exc).__name__}: {exc})") from None
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
        """This process's handle; with ``fast_sqlite`` also a read-only SQLite connection.

        The first open records the rows (count, largest id); every later one (a DataLoader
        worker, a reopen) checks them: rows added or removed since the dataset was indexed are an
        error, never the old index applied to other rows (the only check a server database has;
        files are also compared by device, inode, size and time)."""
        db = self.connect_ase()
        con = sqlite_readonly(self.location) if fast_sqlite else None
        handle = DbHandle(db, con)
        try:
            rows = self.guard("counting rows", lambda: _row_snapshot(handle))
            if self.rows is None:
                self.rows = rows
            elif rows != self.rows:
                raise self.error(None, None, f"database changed since the dataset was opened ({self.rows[0]} rows up to "
                                             f"id {self.rows[1]} then, {rows[0]} up to id {rows[1]} now); open the "
                                             "dataset again")
        except BaseException:
            handle.close()
            raise
        return handle

    def guard(self, what: str, call: Callable[[], Any], index: Optional[int] = None) -> Any:
        """Run ``call``; turn backend errors into errors naming the file (password scrubbed).

        The new error is raised outside the ``except`` block, so the backend's exception (whose
        text may quote the password) is neither its cause nor its context."""
        try:
            return call()
        except (DataFormatError, IndexError, FileNotFoundError, ImportError):
            raise
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError, AssertionError) as exc:
            error: Exception = self.error(index, None, f"{what} failed: {type(exc).__name__}: {exc}")
        except Exception as exc:
            if self.url:  # connection errors of other backends (psycopg2, pymysql)
                error = ConnectionError(f"{self.display}: {what} failed: {type(exc).__name__}: {self.scrub(str(exc))}")
            elif isinstance(exc, OSError):  # e.g. ase.db: "Can not read new ase.db format"
                error = self.error(index, None, f"{what} failed: {type(exc).__name__}: {exc}")
            else:
                raise
        raise error

__all__ = [
    "DB_SCHEMES", "Hidden", "is_url", "mask_password", "secret_parts", "url_dialect", "ase_url", "sqlite_readonly", "DbHandle",
    "DbLocation",
]
