"""Reader for ASE databases: any database ``ase.db.connect`` opens (SQLite file, JSON, URL).

Index ``i`` is the ``i``-th row in id order. Positions, numbers, cell and pbc are exactly
``row.toatoms()``'s (float64 bit for bit). Labels are looked up where real files keep them,
in this order: the row's calculator results (``row.energy``/``row.forces``/``row.stress``),
then ``key_value_pairs``, then ``row.data``, under ``keys.candidates(label)``. SchNetPack
layouts are understood: 0.x base64 data (``_shape_<k>``/``_dtype_<k>``), a leading batch
axis, and units declared in ``metadata['_property_unit_dict']`` / ``['_distance_unit']``
(converted to eV, Å, eV/Å, eV/Å³ with :mod:`mlff_distiller.data.units` and recorded in
``reader.units``; they apply to values read from key_value_pairs/data, never to calculator
results, which ASE keeps in its own units).

SQLite files are read through a read-only ``sqlite3`` connection that fetches only the
columns a sample needs (the fast path); every other backend (PostgreSQL, MySQL, JSON) goes
through ``ase.db``'s own API, which gives identical results (``fast_sqlite=False`` forces it).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from ..errors import DataFormatError, format_error
from ..labels import finalize_labels, is_virial_key
from ..structure import LABEL_NAMES, Structure
from ..units import UnitError, conversion
from .base import Reader

# ----------------------------------------------------------------------------------------
# Locations: local files vs. database URLs, and hiding passwords
# ----------------------------------------------------------------------------------------

_SQLITE_MAGIC = b"SQLite format 3\x00"
#: file suffixes ase.db.connect opens with a backend other than SQLite
_OTHER_FILE_TYPES = {".json": "json", ".aselmdb": "aselmdb", ".lmdb": "aselmdb"}


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


def _secret_parts(path: str) -> list[str]:
    """The password substrings of a URL (to scrub them from third-party error messages)."""
    if not is_url(path):
        return []
    secrets = re.findall(r"(?i)password=([^&;\s]+)", path)
    netloc = path.split("://", 1)[1].partition("/")[0]
    userinfo, at, _ = netloc.rpartition("@")
    if at and ":" in userinfo:
        secrets.append(userinfo.split(":", 1)[1])
    return [s for s in secrets if s]


# ----------------------------------------------------------------------------------------
# One row, as raw pieces (shared by the SQLite fast path and the generic ase.db path)
# ----------------------------------------------------------------------------------------

#: calculator results ASE stores as columns of its ``systems`` table
CALC_COLUMNS = ("energy", "free_energy", "forces", "stress", "dipole", "magmoms", "magmom", "charges")


@dataclass
class RawRow:
    """Arrays of one row plus its label sources; kvp and data are decoded on first use."""

    row_id: int
    numbers: np.ndarray  # [N] int64
    positions: np.ndarray  # [N, 3] float64, Å
    cell: np.ndarray  # [3, 3] float64, Å
    pbc: np.ndarray  # [3] bool
    calc: dict[str, Any]  # calculator results present in the row
    load_kvp: Callable[[], Mapping] = field(repr=False, default=dict)
    load_data: Callable[[], Mapping] = field(repr=False, default=dict)
    _kvp: Optional[Mapping] = field(default=None, repr=False)
    _data: Optional[Mapping] = field(default=None, repr=False)

    @property
    def kvp(self) -> Mapping:
        if self._kvp is None:
            self._kvp = self.load_kvp() or {}
        return self._kvp

    @property
    def data(self) -> Mapping:
        if self._data is None:
            self._data = self.load_data() or {}
        return self._data


def decode_data_value(data: dict, key: str) -> Any:
    """``data[key]``, decoding SchNetPack 0.x base64 buffers (``_shape_<k>``, ``_dtype_<k>``).

    Raises ValueError for a malformed buffer; never unpickles.
    """
    value = data[key]
    shape_key, dtype_key = f"_shape_{key}", f"_dtype_{key}"
    if not (isinstance(value, str) and shape_key in data and dtype_key in data):
        return value
    try:
        dtype = np.dtype(str(data[dtype_key]))
    except TypeError:
        raise ValueError(f"unknown dtype {data[dtype_key]!r} in {dtype_key!r}") from None
    if dtype.kind not in "biuf":
        raise ValueError(f"dtype {dtype} in {dtype_key!r} is not numeric")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a valid base64 string") from None
    shape = tuple(int(s) for s in np.atleast_1d(np.asarray(data[shape_key])))
    if int(np.prod(shape)) * dtype.itemsize != len(raw):
        raise ValueError(f"{len(raw)} bytes do not fill shape {shape} of {dtype}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _b2o(node: Any, blob: bytes) -> Any:
    """``ase.db.core.b2o`` with a quicker path for a plain ndarray entry (same result, writable)."""
    if isinstance(node, dict) and len(node) == 1 and "__ndarray__" in node:
        shape, name, offset = node["__ndarray__"]
        dtype = np.dtype(name)
        count = 1
        for s in shape:
            count *= int(s)
        arr = np.frombuffer(blob, dtype, count=count, offset=offset)
        if not np.little_endian:  # pragma: no cover - big-endian hosts
            arr = arr.byteswap()
        return arr.reshape(shape).copy()
    from ase.db.core import b2o

    return b2o(node, blob)


class LazyData(Mapping):
    """ASE's binary ``row.data`` (schema >= 9) decoding only the entries that are accessed.

    Each entry is decoded with ``ase.db.core.b2o``, exactly as ``row.data`` would decode it.
    """

    def __init__(self, blob: bytes) -> None:
        import json

        blob = bytes(blob)
        offset = int(np.frombuffer(blob[:8], "<i8")[0])
        self._blob = blob
        self._tree = json.loads(blob[offset:].decode())
        if not isinstance(self._tree, dict):
            raise ValueError("row.data is not a dict")
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            self._cache[key] = _b2o(self._tree[key], self._blob)
        return self._cache[key]

    def __iter__(self):
        return iter(self._tree)

    def __len__(self) -> int:
        return len(self._tree)

    def __contains__(self, key: object) -> bool:
        return key in self._tree


def _deblob(buf, dtype, shape=None) -> Optional[np.ndarray]:
    """ASE's blob -> ndarray (little-endian storage), as a writable copy."""
    if buf is None:
        return None
    if len(buf) == 0:
        arr = np.zeros(0, dtype)
    else:
        arr = np.frombuffer(buf, dtype)
        if not np.little_endian:  # pragma: no cover - big-endian hosts
            arr = arr.byteswap()
    if shape is not None:
        arr = arr.reshape(shape)
    return arr.copy()


_PBC_BITS = np.array([1, 2, 4])


# ----------------------------------------------------------------------------------------
# Backends: a per-process handle with the ase.db object and, for SQLite, a read-only cursor
# ----------------------------------------------------------------------------------------


class _Handle:
    """What one process holds open: the ``ase.db`` Database and (SQLite) a read-only connection."""

    def __init__(self, db, con: Optional[sqlite3.Connection]) -> None:
        self.db = db
        self.con = con

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None


def _sqlite_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection: never creates or modifies the file."""
    uri = Path(path).as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


class AseDbReader(Reader):
    """Rows of an ASE database as :class:`Structure` records.

    path: a file ``ase.db.connect`` opens (``.db`` SQLite, ``.json``) or a URL
        (``postgresql://user:pw@host:port/db``; needs the ``ase-db-backends`` package).
    energy_key, forces_key, stress_key: where the labels live (see module docstring).
    fast_sqlite: read SQLite files through a read-only connection fetching only the needed
        columns (default); False uses ``ase.db``'s API like any other backend.

    ``display_path`` is the path with any password replaced by ``***``; every error uses it.
    """

    format_name = "ase"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        fast_sqlite: bool = True,
    ) -> None:
        super().__init__(path, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key)
        self.display_path = mask_password(self.path)
        self._secrets = _secret_parts(self.path)
        self._url = is_url(self.path)
        self._location = self.path if self._url else os.path.abspath(self.path)
        self._db_type = None if self._url else self._check_file()
        self._fast = bool(fast_sqlite) and self._db_type == "db"
        self._columns: tuple[str, ...] = ()
        if self._db_type == "db":  # before ase.db could add its tables to a foreign SQLite file
            self._columns = self._check_sqlite_schema()
        self._factors: dict[tuple[str, str], float] = {}
        self._distance_factor = 1.0
        self._ids, self._natoms = self._build_index()
        self._read_units()
        self._calc_needed = {
            label: tuple(k for k in self.keys.candidates(label) if k in CALC_COLUMNS) for label in LABEL_NAMES
        }
        self._sql_one, self._row_columns = self._row_query(self._needed_calc_columns())

    # -- opening ----------------------------------------------------------------------
    def _error(self, index: Optional[int], key: Optional[str], problem: str) -> DataFormatError:
        return format_error(self.display_path, index, key, self._scrub(problem))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _check_file(self) -> str:
        """Existence and type of a local file, checked before ase.db could create it."""
        p = Path(self._location)
        if not p.exists():
            raise FileNotFoundError(f"{self.display_path}: no such file (ASE database expected)")
        if p.is_dir():
            raise self._error(None, None, "is a directory, not an ASE database file")
        with open(p, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if head == _SQLITE_MAGIC:
            return "db"
        other = _OTHER_FILE_TYPES.get(p.suffix.lower())
        if other is not None:
            return other
        what = "an empty file" if not head else "not an SQLite file"
        raise self._error(None, None, f"not an ASE database ({what}; ASE databases are SQLite files "
                                      "or .json/.aselmdb files or database URLs)")

    def _check_sqlite_schema(self) -> tuple[str, ...]:
        """The columns of the ``systems`` table; DataFormatError when it is not an ASE db."""
        try:
            con = _sqlite_readonly(self._location)
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if "systems" not in tables:
                    raise self._error(None, None, "not an ASE database (SQLite file without a 'systems' table)")
                columns = tuple(r[1] for r in con.execute("PRAGMA table_info(systems)"))
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise self._error(None, None, f"not a readable SQLite database ({exc})") from None
        missing = [c for c in ("id", "numbers", "positions", "cell", "pbc") if c not in columns]
        if missing:
            raise self._error(None, None, f"not an ASE database: 'systems' lacks columns {missing}")
        return columns

    def _connect_ase(self):
        import ase.db

        try:
            if self._url:
                return ase.db.connect(self._location)
            return ase.db.connect(self._location, type=self._db_type)
        except ImportError as exc:
            raise ImportError(f"{self.display_path}: ase.db cannot open this database type "
                              f"({self._scrub(str(exc))}); for postgresql/mysql install ase-db-backends") from None

    def _open(self) -> _Handle:
        db = self._connect_ase()
        con = _sqlite_readonly(self._location) if self._fast else None
        return _Handle(db, con)

    def _guard(self, what: str, call: Callable[[], Any], index: Optional[int] = None) -> Any:
        """Run ``call``; turn backend errors into errors naming the file (password scrubbed)."""
        try:
            return call()
        except (DataFormatError, IndexError, FileNotFoundError, ImportError):
            raise
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError, AssertionError) as exc:
            raise self._error(index, None, f"{what} failed: {type(exc).__name__}: {exc}") from None
        except Exception as exc:
            if self._url:  # connection errors of other backends (psycopg2, pymysql)
                raise ConnectionError(
                    f"{self.display_path}: {what} failed: {type(exc).__name__}: {self._scrub(str(exc))}"
                ) from None
            if isinstance(exc, OSError):  # e.g. ase.db: "Can not read new ase.db format"
                raise self._error(index, None, f"{what} failed: {type(exc).__name__}: {exc}") from None
            raise

    # -- the index: ids and atom counts in one query ----------------------------------
    def _build_index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._fast:
            sql = "SELECT id, length(numbers) FROM systems ORDER BY id"
            rows = self._guard("listing rows", lambda: self.handle.con.execute(sql).fetchall())
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            nbytes = np.fromiter((r[1] or 0 for r in rows), dtype=np.int64, count=len(rows))
            bad = np.flatnonzero(nbytes % 4)
            if bad.size:
                raise self._error(int(bad[0]), "numbers", "blob length is not a whole number of int32 values")
            return ids, nbytes // 4

        def scan():
            pairs = [(row.id, len(row.numbers)) for row in
                     self.handle.db.select(columns=["id", "numbers"], include_data=False)]
            return pairs

        pairs = self._guard("listing rows", scan)
        ids = np.array([p[0] for p in pairs], dtype=np.int64)
        natoms = np.array([p[1] for p in pairs], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        return ids[order], natoms[order]

    def _read_units(self) -> None:
        """Factors from SchNetPack metadata for every key a label may be read from."""
        metadata = self._guard("reading metadata", lambda: self.handle.db.metadata)
        if not isinstance(metadata, dict):
            return
        distance = metadata.get("_distance_unit")
        if distance is not None:
            try:
                conv = conversion(distance, "positions")
            except UnitError as exc:
                raise self._error(None, "_distance_unit", f"metadata: {exc}") from None
            self._distance_factor = conv.factor
            if conv.factor != 1.0:
                self.units["positions"] = conv.describe("_distance_unit")
        units = metadata.get("_property_unit_dict")
        if units is None:
            return
        if not isinstance(units, dict):
            raise self._error(None, "_property_unit_dict", "metadata entry is not a dict")
        for label in LABEL_NAMES:
            notes = []
            for key in self.keys.candidates(label):
                if key not in units:
                    continue
                quantity = "virial" if (label == "stress" and is_virial_key(key)) else label
                try:
                    conv = conversion(units[key], quantity)
                except UnitError as exc:
                    raise self._error(None, key, f"metadata '_property_unit_dict': {exc}") from None
                self._factors[(label, key)] = conv.factor
                if conv.factor != 1.0:
                    notes.append(conv.describe(key))
            if notes:
                self.units[label] = "; ".join(notes)

    # -- fetching raw rows ------------------------------------------------------------
    def _needed_calc_columns(self) -> tuple[str, ...]:
        wanted = [k for label in LABEL_NAMES for k in self._calc_needed[label]]
        return tuple(dict.fromkeys(wanted))

    def _row_query(self, calc_columns: Iterable[str]) -> tuple[str, tuple[str, ...]]:
        """SQL fetching one row's needed columns (fast path only)."""
        cols = ["id", "numbers", "positions", "cell", "pbc"]
        cols += [c for c in calc_columns if c in self._columns]
        cols += [c for c in ("key_value_pairs", "data") if c in self._columns]
        return f"SELECT {', '.join(cols)} FROM systems WHERE id=?", tuple(cols)

    def _raw_from_tuple(self, values: Sequence, columns: Sequence[str], index: int) -> RawRow:
        """RawRow from a tuple of SQLite columns, decoded exactly as ase.db.sqlite does."""
        from ase.io.jsonio import decode

        v = dict(zip(columns, values))
        try:
            numbers = _deblob(v["numbers"], np.int32).astype(np.int64)
            positions = _deblob(v["positions"], np.float64, (-1, 3))
            cell = _deblob(v["cell"], np.float64, (3, 3)) if v["cell"] is not None else np.zeros((3, 3))
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._error(index, "numbers/positions/cell", f"row id {v['id']}: bad array blob ({exc})") from None
        pbc = (v["pbc"] & _PBC_BITS).astype(bool) if v["pbc"] is not None else np.zeros(3, bool)
        calc = {}
        for c in CALC_COLUMNS:
            x = v.get(c)
            if x is None:
                continue
            if isinstance(x, (bytes, memoryview)):
                x = _deblob(x, np.float64, (-1, 3) if c == "forces" else (() if c == "magmom" else None))
            calc[c] = x
        kvp_text = v.get("key_value_pairs")
        data_blob = v.get("data")

        def load_kvp():
            return decode(kvp_text) if kvp_text not in (None, "{}") else {}

        def load_data():
            if data_blob is None or data_blob == "null":
                return {}
            return decode(data_blob) if isinstance(data_blob, str) else LazyData(data_blob)

        return RawRow(int(v["id"]), numbers, positions, cell, pbc, calc, load_kvp, load_data)

    @staticmethod
    def _raw_from_atomsrow(row) -> RawRow:
        """RawRow from an ``ase.db`` AtomsRow (generic path)."""
        kvp = row.key_value_pairs
        calc = {c: row.get(c) for c in CALC_COLUMNS if c not in kvp and row.get(c) is not None}
        cell = row.cell if row.get("cell") is not None else np.zeros((3, 3))
        pbc = row.pbc if row.get("pbc") is not None else np.zeros(3, bool)
        return RawRow(
            int(row.id),
            np.array(row.numbers, dtype=np.int64),
            np.array(row.positions, dtype=np.float64),
            np.array(cell, dtype=np.float64),
            np.array(pbc, dtype=bool),
            calc,
            lambda: kvp,
            lambda: dict(row.data),
        )

    def _row_id(self, index: int) -> tuple[int, int]:
        """(normalised index, row id) or IndexError."""
        n = len(self._ids)
        i = int(index)
        if i != index:
            raise TypeError(f"{self.display_path}: index must be an integer, got {index!r}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.display_path}: structure index {index} out of range for {n} structures")
        return i, int(self._ids[i])

    def _fetch(self, index: int, *, all_calc: bool = False) -> RawRow:
        i, row_id = self._row_id(index)
        if self._fast:
            sql, cols = (self._row_query(CALC_COLUMNS) if all_calc else (self._sql_one, self._row_columns))
            values = self._guard("reading a row", lambda: self.handle.con.execute(sql, (row_id,)).fetchone(), i)
            if values is None:
                raise self._error(i, None, f"row id {row_id} disappeared from the database")
            return self._raw_from_tuple(values, cols, i)
        row = self._guard("reading a row", lambda: self.handle.db.get(id=row_id), i)
        return self._raw_from_atomsrow(row)

    def _fetch_many(self, indices: Sequence[int]) -> list[RawRow]:
        pairs = [self._row_id(i) for i in indices]
        unique_ids = sorted({rid for _, rid in pairs})
        first_index = {}
        for i, rid in pairs:
            first_index.setdefault(rid, i)
        by_id: dict[int, RawRow] = {}
        if self._fast:
            cols = self._row_columns
            select = self._sql_one.rsplit(" WHERE ", 1)[0]
            for start in range(0, len(unique_ids), 500):
                chunk = unique_ids[start:start + 500]
                sql = f"{select} WHERE id IN ({', '.join('?' * len(chunk))})"
                rows = self._guard("reading rows", lambda: self.handle.con.execute(sql, chunk).fetchall())
                for values in rows:
                    rid = int(values[0])
                    by_id[rid] = self._raw_from_tuple(values, cols, first_index[rid])
        elif unique_ids:
            lo, hi = unique_ids[0], unique_ids[-1]
            in_range = int(np.searchsorted(self._ids, hi, "right") - np.searchsorted(self._ids, lo, "left"))
            if in_range <= 2 * len(unique_ids):
                wanted = set(unique_ids)
                rows = self._guard("reading rows", lambda: list(self.handle.db.select(f"id>={lo},id<={hi}")))
                by_id = {int(r.id): self._raw_from_atomsrow(r) for r in rows if int(r.id) in wanted}
        out = []
        for i, rid in pairs:
            if rid not in by_id:
                if self._fast:
                    raise self._error(i, None, f"row id {rid} disappeared from the database")
                by_id[rid] = self._fetch(i)
            out.append(by_id[rid])
        return out

    # -- labels -----------------------------------------------------------------------
    def _source(self, raw: RawRow, name: str, index: int) -> Mapping:
        """``raw.kvp`` or ``raw.data``, with a corrupt blob / JSON text reported as bad input."""
        try:
            return raw.kvp if name == "key_value_pairs" else raw.data
        except Exception as exc:
            raise self._error(index, name, f"row id {raw.row_id}: cannot decode ({type(exc).__name__}: {exc})") from None

    def _find_label(self, raw: RawRow, label: str, index: int) -> tuple[Optional[str], Any]:
        """(key, value in ASE units) of ``label``: calculator, then kvp, then data; (None, None) if absent."""
        for key in self._calc_needed[label]:
            if key in raw.calc:
                return key, raw.calc[key]
        candidates = self.keys.candidates(label)
        found = None
        kvp = self._source(raw, "key_value_pairs", index)
        for key in candidates:
            if key in kvp:
                found = key, kvp[key]
                break
        if found is None:
            data = self._source(raw, "data", index)
            for key in candidates:
                if key in data:
                    try:
                        found = key, decode_data_value(data, key)
                    except ValueError as exc:
                        raise self._error(index, key, f"row id {raw.row_id}: row.data: {exc}") from None
                    break
        if found is None:
            return None, None
        key, value = found
        factor = self._factors.get((label, key), 1.0)
        if factor != 1.0:
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiu":
                raise self._error(index, key, f"row id {raw.row_id}: {label} must be numeric, got {value!r}")
            value = arr * factor
        return key, value

    def _structure(self, raw: RawRow, index: int) -> Structure:
        natoms = int(raw.numbers.shape[0])
        if raw.positions.shape != (natoms, 3):
            raise self._error(index, "positions", f"row id {raw.row_id}: shape {raw.positions.shape} "
                                                  f"does not match {natoms} atoms")
        positions, cell = raw.positions, raw.cell
        if self._distance_factor != 1.0:
            positions, cell = positions * self._distance_factor, cell * self._distance_factor
        found = {label: self._find_label(raw, label, index) for label in LABEL_NAMES}
        keys = {label: (key or label) for label, (key, _) in found.items()}
        try:
            energy, forces, stress = finalize_labels(
                energy=found["energy"][1], forces=found["forces"][1], stress=found["stress"][1],
                keys=keys, natoms=natoms, cell=cell, path=self.display_path, index=index,
            )
        except DataFormatError as exc:
            raise DataFormatError(f"{exc} (row id {raw.row_id})") from None
        return Structure(positions=positions, numbers=raw.numbers, cell=cell, pbc=raw.pbc,
                         energy=energy, forces=forces, stress=stress)

    # -- the interface ----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def natoms_array(self) -> np.ndarray:
        """[S] int64 atom count of every row, in index order (from the one index query)."""
        return self._natoms

    @property
    def row_ids(self) -> np.ndarray:
        """[S] int64 database id of each index."""
        return self._ids

    def read(self, index: int) -> Structure:
        """Structure ``index`` (the index-th row in id order); one query."""
        i, _ = self._row_id(index)
        return self._structure(self._fetch(i), i)

    def read_many(self, indices: Sequence[int]) -> list[Structure]:
        """Several structures in the order given; one query per 500 rows on SQLite."""
        idx = [self._row_id(i)[0] for i in indices]
        return [self._structure(raw, i) for raw, i in zip(self._fetch_many(idx), idx)]

    def read_atoms(self, index: int):
        """``row.toatoms()`` of structure ``index``: the original Atoms with its calculator.

        Unlike :meth:`read`, no unit conversion and no label lookup: exactly what ASE gives.
        """
        i, row_id = self._row_id(index)
        row = self._guard("reading a row", lambda: self.handle.db.get(id=row_id), i)
        return row.toatoms()

    def label_keys(self, index: int) -> list[str]:
        """Label-like keys of structure ``index``: calculator results, numeric kvp, data keys."""
        i, _ = self._row_id(index)
        raw = self._fetch(i, all_calc=True)
        names = list(raw.calc)
        names += [k for k, v in self._source(raw, "key_value_pairs", i).items()
                  if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))]
        data = self._source(raw, "data", i)
        names += [k for k in data if not (k.startswith("_shape_") or k.startswith("_dtype_"))]
        return list(dict.fromkeys(names))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_path!r}, structures={len(self)})"
