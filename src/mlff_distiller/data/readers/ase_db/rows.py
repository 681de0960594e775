"""One row of an ASE database as raw pieces, decoded exactly as ``ase.db`` decodes it.

Shared by the SQLite fast path (a tuple of columns, ``raw_from_tuple``) and the generic
``ase.db`` path (an ``AtomsRow``, ``raw_from_atomsrow``). ``key_value_pairs`` and ``data`` are
decoded on first use, and binary ``row.data`` entry by entry (``LazyData``). SchNetPack 0.x
stores arrays in ``row.data`` as base64 text with ``_shape_<k>``/``_dtype_<k>`` entries
(``decode_data_value``). Nothing here unpickles.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ...errors import DataFormatError

#: calculator results ASE stores as columns of its ``systems`` table
CALC_COLUMNS = ("energy", "free_energy", "forces", "stress", "dipole", "magmoms", "magmom", "charges")
#: calculator results that hold one value per atom
CALC_PER_ATOM = ("forces", "magmoms", "charges", "energies")
#: per-atom arrays ASE stores as columns (name -> (dtype, row shape)), as ``ase.db.sqlite`` decodes them
ARRAY_COLUMNS = {
    "initial_magmoms": (np.float64, None),
    "initial_charges": (np.float64, None),
    "masses": (np.float64, None),
    "tags": (np.int32, None),
    "momenta": (np.float64, (-1, 3)),
}

#: ``error(index, key, problem)`` -> an exception naming the database
ErrorFn = Callable[[Optional[int], Optional[str], str], DataFormatError]

_PBC_BITS = np.array([1, 2, 4])


@dataclass
class RawRow:
    """Arrays of one row plus its label sources; kvp and data are decoded on first use."""

    row_id: int
    numbers: np.ndarray  # [N] int64
    positions: np.ndarray  # [N, 3] float64, Å
    cell: np.ndarray  # [3, 3] float64, Å
    pbc: np.ndarray  # [3] bool
    calc: dict[str, Any]  # calculator results present in the row
    #: per-atom arrays fetched (``ARRAY_COLUMNS``), and ``constraints`` as stored (JSON text or a list)
    arrays: dict[str, Any] = field(default_factory=dict)
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


def raw_from_tuple(values: Sequence, columns: Sequence[str], index: int, error: ErrorFn) -> RawRow:
    """RawRow from a tuple of SQLite ``systems`` columns, decoded exactly as ase.db.sqlite does."""
    from ase.io.jsonio import decode

    v = dict(zip(columns, values))
    row_id = v["id"]

    def blob(column: str, dtype, shape=None, required: bool = True):
        """Column ``column`` decoded as ase.db.sqlite does; a value of the wrong type or size is
        an error naming the column (never a bare ValueError/TypeError from numpy)."""
        value = v[column]
        if value is None and not required:
            return None
        if not isinstance(value, (bytes, memoryview)):
            raise error(index, column, f"row id {row_id}: expected a binary array, got {type(value).__name__}")
        try:
            return _deblob(value, dtype, shape)
        except ValueError as exc:
            raise error(index, column, f"row id {row_id}: bad array blob of {len(value)} bytes ({exc})") from None

    numbers = blob("numbers", np.int32).astype(np.int64)
    positions = blob("positions", np.float64, (-1, 3))
    cell = blob("cell", np.float64, (3, 3), required=False)
    cell = np.zeros((3, 3)) if cell is None else cell
    pbc = v["pbc"]
    if pbc is None:
        pbc = np.zeros(3, bool)
    elif isinstance(pbc, int) and not isinstance(pbc, bool) and 0 <= pbc <= 7:
        pbc = (pbc & _PBC_BITS).astype(bool)
    else:
        raise error(index, "pbc", f"row id {row_id}: expected an integer 0..7 (3 bits), got {pbc!r}")
    calc = {}
    for c in CALC_COLUMNS:
        x = v.get(c)
        if x is None:
            continue
        if isinstance(x, (bytes, memoryview)):
            x = blob(c, np.float64, (-1, 3) if c == "forces" else (() if c == "magmom" else None))
        elif not isinstance(x, (int, float)) or isinstance(x, bool):
            raise error(index, c, f"row id {row_id}: expected a number or a binary array, got {x!r:.60}")
        calc[c] = x
    arrays = {}
    for c, (dtype, shape) in ARRAY_COLUMNS.items():
        if v.get(c) is not None:
            arrays[c] = blob(c, dtype, shape)
    if v.get("constraints") is not None:
        arrays["constraints"] = v["constraints"]
    kvp_text = v.get("key_value_pairs")
    data_blob = v.get("data")

    def load_kvp():
        return decode(kvp_text) if kvp_text not in (None, "{}") else {}

    def load_data():
        if data_blob is None or data_blob == "null":
            return {}
        return decode(data_blob) if isinstance(data_blob, str) else LazyData(data_blob)

    return RawRow(int(v["id"]), numbers, positions, cell, pbc, calc, arrays, load_kvp, load_data)


def raw_from_atomsrow(row) -> RawRow:
    """RawRow from an ``ase.db`` AtomsRow (generic path)."""
    kvp = row.key_value_pairs
    calc = {c: row.get(c) for c in CALC_COLUMNS if c not in kvp and row.get(c) is not None}
    cell = row.cell if row.get("cell") is not None else np.zeros((3, 3))
    pbc = row.pbc if row.get("pbc") is not None else np.zeros(3, bool)
    arrays = {c: np.array(row.get(c)) for c in ARRAY_COLUMNS if row.get(c) is not None}
    if row.get("constraints"):
        arrays["constraints"] = row.get("constraints")
    return RawRow(
        int(row.id),
        np.array(row.numbers, dtype=np.int64),
        np.array(row.positions, dtype=np.float64),
        np.array(cell, dtype=np.float64),
        np.array(pbc, dtype=bool),
        calc,
        arrays,
        lambda: kvp,
        lambda: dict(row.data),
    )


def fixed_atoms(constraints: Any, natoms: int) -> np.ndarray:
    """[N] bool: atoms a ``FixAtoms`` constraint holds (all False without one). ``constraints`` is
    what the row stores: JSON text (SQLite) or a list of constraint dicts/objects; decoded as
    ``ase.db.row.AtomsRow.constraints`` does (``ase.constraints.dict2constraint``)."""
    from ase.constraints import FixAtoms, dict2constraint
    from ase.io.jsonio import decode

    mask = np.zeros(natoms, dtype=bool)
    if not constraints:
        return mask
    items = decode(constraints) if isinstance(constraints, str) else constraints
    for c in items:
        if isinstance(c, dict):
            c = dict(c)
            name = c.pop("__name__", None)
            c = dict2constraint({"name": name, "kwargs": c} if name else c)
        if isinstance(c, FixAtoms):
            mask[np.asarray(c.index, dtype=np.int64)] = True
    return mask


__all__ = ["CALC_COLUMNS", "CALC_PER_ATOM", "ARRAY_COLUMNS", "fixed_atoms", "RawRow", "LazyData", "decode_data_value", "raw_from_tuple", "raw_from_atomsrow"]
