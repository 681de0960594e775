"""Reader for ASE databases: any database ``ase.db.connect`` opens (SQLite file, JSON, URL).

Index ``i`` is the ``i``-th row in id order. Positions, numbers, cell and pbc are exactly
``row.toatoms()``'s (float64 bit for bit). Labels are looked up where real files keep them,
in this order: the row's calculator results (``row.energy``/``row.forces``/``row.stress``),
then ``key_value_pairs``, then ``row.data``, under ``keys.candidates(label)``. SchNetPack
layouts are understood: 0.x base64 data (``_shape_<k>``/``_dtype_<k>``, see ``db_rows``), a
leading batch axis, and units declared in ``metadata['_property_unit_dict']`` /
``['_distance_unit']`` (``db_units``; converted to eV, Å, eV/Å, eV/Å³ and recorded in
``reader.units``; they apply to values read from key_value_pairs/data, never to calculator
results, which ASE keeps in its own units).

SQLite files are read through a read-only ``sqlite3`` connection that fetches only the
columns a sample needs (the fast path); every other backend (PostgreSQL, MySQL, JSON) goes
through ``ase.db``'s own API, which gives identical results (``fast_sqlite=False`` forces it).
A URL's password never appears in a message or repr (``db_connection``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from ...errors import DataFormatError
from ...keys import ATOM, STRUCTURE, STRUCTURE_EXTRAS, registry_of
from ...labels import finalize_labels, find_extras, is_virial_key
from ...properties import PropertiesLike, PropertySource, declare_properties, read_properties
from ...structure import LABEL_NAMES, Structure
from ...units import LabelUnits, UnitError
from ..base import Reader
from ..checks import check_structure
from .connection import DbHandle, DbLocation, is_url, mask_password, secret_parts
from .rows import (
    ARRAY_COLUMNS, CALC_COLUMNS, CALC_PER_ATOM, RawRow, decode_data_value, fixed_atoms, raw_from_atomsrow,
    raw_from_tuple,
)
from .units import read_db_units

#: rows fetched per SQL query by ``read_many``
_ROWS_PER_QUERY = 500


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
        select: Union[None, str, Mapping] = None,
        properties: PropertiesLike = None,
        extra_keys=None,
        energy_unit: Optional[str] = None,
        forces_unit: Optional[str] = None,
        stress_unit: Optional[str] = None,
        length_unit: Optional[str] = None,
    ) -> None:
        super().__init__(path, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key, properties=properties)
        self._db = DbLocation(self.path)
        self.path = self.display_path = self._db.display  # the password only in self._db (hidden)
        self._fast = bool(fast_sqlite) and self._db.db_type == "db"
        if select is not None and not isinstance(select, (str, Mapping)):
            raise TypeError(f"select must be an ASE query string or a dict of conditions, got {type(select).__name__}")
        #: the ASE query (``'natoms<50,config_type=bulk'`` or ``{'config_type': 'bulk'}``) rows must match
        self.select = select
        self._unit_options = LabelUnits.from_options(energy_unit, forces_unit, stress_unit, length_unit)
        self._columns: tuple[str, ...] = ()
        if self._db.db_type == "db":  # before ase.db could add its tables to a foreign SQLite file
            self._columns = self._db.sqlite_columns()
        self._ids, self._natoms = self._build_index()
        metadata = self._db.guard("reading metadata", lambda: self.handle.db.metadata)
        self.metadata = dict(metadata or {})
        self._units = read_db_units(metadata, self.keys, self._db.error, self._unit_options)
        self.units = self._units.described
        self._calc_needed = {
            label: tuple(k for k in self.keys.candidates(label) if k in CALC_COLUMNS) for label in LABEL_NAMES
        }
        wanted = {k for p in self._properties for k in p.candidates}
        needed = dict.fromkeys(
            [k for label in LABEL_NAMES for k in self._calc_needed[label]]
            + [c for c in CALC_COLUMNS if c in wanted]
            + [c for c in ARRAY_COLUMNS if c in wanted]
            + (["constraints"] if wanted & {"fixed", "constraints"} else [])
        )
        self._sql_one, self._row_columns = self._row_query(needed)
        self.key_registry = declare_properties(
            self._properties, registry_of(extra_keys), lambda i: self._sources(self._fetch(i), i),
            lambda i: int(self._natoms[i]), len(self), path=self.display_path,
        )

    def _open(self) -> DbHandle:
        return self._db.open(self._fast)

    # -- the index: ids and atom counts in one query ----------------------------------
    def _build_index(self) -> tuple[np.ndarray, np.ndarray]:
        guard = self._db.guard
        if self.select is not None:
            return self._selected_index()
        if self._fast:
            sql = "SELECT id, length(numbers) FROM systems ORDER BY id"
            rows = guard("listing rows", lambda: self.handle.con.execute(sql).fetchall())
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            nbytes = np.fromiter((r[1] or 0 for r in rows), dtype=np.int64, count=len(rows))
            bad = np.flatnonzero(nbytes % 4)
            if bad.size:
                raise self._db.error(int(bad[0]), "numbers", "blob length is not a whole number of int32 values")
            return ids, nbytes // 4

        def scan():
            rows = self.handle.db.select(columns=["id", "numbers"], include_data=False)
            return [(row.id, len(row.numbers)) for row in rows]

        pairs = guard("listing rows", scan)
        ids = np.array([p[0] for p in pairs], dtype=np.int64)
        natoms = np.array([p[1] for p in pairs], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        return ids[order], natoms[order]

    def _selected_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids and atom counts of the rows matching ``select``, in id order (``ase.db``'s query)."""
        sel = self.select
        args, kwargs = ((), dict(sel)) if isinstance(sel, Mapping) else ((sel,), {})

        def query():
            rows = self.handle.db.select(*args, columns=["id", "numbers"], include_data=False, **kwargs)
            return [(int(row.id), len(row.numbers)) for row in rows]

        try:
            pairs = query()
        except (ValueError, KeyError, TypeError, AttributeError, SyntaxError) as exc:
            raise ValueError(f"{self.display_path}: select={sel!r} is not a query ASE understands "
                             f"({type(exc).__name__}: {self._db.scrub(str(exc))})") from None
        except Exception:
            pairs = self._db.guard("selecting rows", query)
        pairs.sort()
        ids = np.array([p[0] for p in pairs], dtype=np.int64)
        return ids, np.array([p[1] for p in pairs], dtype=np.int64)

    # -- fetching raw rows ------------------------------------------------------------
    def _row_query(self, calc_columns: Iterable[str]) -> tuple[str, tuple[str, ...]]:
        """SQL fetching one row's needed columns (fast path only)."""
        cols = ["id", "numbers", "positions", "cell", "pbc"]
        cols += [c for c in calc_columns if c in self._columns]
        cols += [c for c in ("key_value_pairs", "data") if c in self._columns]
        return f"SELECT {', '.join(cols)} FROM systems WHERE id=?", tuple(cols)

    def _fetch(self, i: int, *, all_calc: bool = False) -> RawRow:
        """Raw row of (normalised) index ``i``; ``all_calc`` fetches every calculator column."""
        row_id = int(self._ids[i])
        if self._fast:
            sql, cols = (self._row_query(CALC_COLUMNS) if all_calc else (self._sql_one, self._row_columns))
            values = self._db.guard("reading a row", lambda: self.handle.con.execute(sql, (row_id,)).fetchone(), i)
            if values is None:
                raise self._db.error(i, None, f"row id {row_id} disappeared from the database")
            return raw_from_tuple(values, cols, i, self._db.error)
        row = self._db.guard("reading a row", lambda: self.handle.db.get(id=row_id), i)
        return raw_from_atomsrow(row)

    def _fetch_many(self, indices: Sequence[int]) -> list[RawRow]:
        """Raw rows of (normalised) ``indices``: one query per 500 rows on SQLite, one range
        query elsewhere when the rows are dense enough, else one query per row."""
        pairs = [(i, int(self._ids[i])) for i in indices]
        unique_ids = sorted({rid for _, rid in pairs})
        first_index = {}
        for i, rid in pairs:
            first_index.setdefault(rid, i)
        guard = self._db.guard
        by_id: dict[int, RawRow] = {}
        if self._fast:
            cols = self._row_columns
            select = self._sql_one.rsplit(" WHERE ", 1)[0]
            for start in range(0, len(unique_ids), _ROWS_PER_QUERY):
                chunk = unique_ids[start:start + _ROWS_PER_QUERY]
                sql = f"{select} WHERE id IN ({', '.join('?' * len(chunk))})"
                rows = guard("reading rows", lambda: self.handle.con.execute(sql, chunk).fetchall())
                for values in rows:
                    rid = int(values[0])
                    by_id[rid] = raw_from_tuple(values, cols, first_index[rid], self._db.error)
        elif unique_ids:
            lo, hi = unique_ids[0], unique_ids[-1]
            in_range = int(np.searchsorted(self._ids, hi, "right") - np.searchsorted(self._ids, lo, "left"))
            if in_range <= 2 * len(unique_ids):
                wanted = set(unique_ids)
                rows = guard("reading rows", lambda: list(self.handle.db.select(f"id>={lo},id<={hi}")))
                by_id = {int(r.id): raw_from_atomsrow(r) for r in rows if int(r.id) in wanted}
        out = []
        for i, rid in pairs:
            if rid not in by_id:
                if self._fast:
                    raise self._db.error(i, None, f"row id {rid} disappeared from the database")
                by_id[rid] = self._fetch(i)
            out.append(by_id[rid])
        return out

    # -- labels -----------------------------------------------------------------------
    def _source(self, raw: RawRow, name: str, index: int) -> Mapping:
        """``raw.kvp`` or ``raw.data``, with a corrupt blob / JSON text reported as bad input."""
        try:
            return raw.kvp if name == "key_value_pairs" else raw.data
        except Exception as exc:
            raise self._db.error(
                index, name, f"row id {raw.row_id}: cannot decode ({type(exc).__name__}: {exc})"
            ) from None

    def _label_factor(self, label: str, key: str, from_calc: bool, index: int) -> float:
        """The factor of ``label`` read from ``key``: the user's unit option, else the metadata's
        (kvp/data only), else 1."""
        if self._unit_options.given:
            try:
                factor = self._unit_options.factor(label, virial=label == "stress" and is_virial_key(key),
                                                   where=f"{self.display_path}, structure {index}")
            except UnitError as exc:
                raise DataFormatError(str(exc)) from None
            if factor is not None:
                return factor
        return 1.0 if from_calc else self._units.factors.get((label, key), 1.0)

    def _find_label(self, raw: RawRow, label: str, index: int) -> tuple[Optional[str], Any]:
        """(key, value in ASE units) of ``label``: calculator, then kvp, then data; (None, None) if absent."""
        for key in self._calc_needed[label]:
            if key in raw.calc:
                factor = self._label_factor(label, key, True, index)
                return key, raw.calc[key] if factor == 1.0 else np.asarray(raw.calc[key]) * factor
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
                        raise self._db.error(index, key, f"row id {raw.row_id}: row.data: {exc}") from None
                    break
        if found is None:
            return None, None
        key, value = found
        factor = self._label_factor(label, key, False, index)
        if factor != 1.0:
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiu":
                raise self._db.error(index, key, f"row id {raw.row_id}: {label} must be numeric, got {value!r}")
            value = arr * factor
        return key, value

    def _structure(self, raw: RawRow, index: int) -> Structure:
        natoms = int(raw.numbers.shape[0])
        if raw.positions.shape != (natoms, 3):
            raise self._db.error(index, "positions", f"row id {raw.row_id}: shape {raw.positions.shape} "
                                                     f"does not match {natoms} atoms")
        positions, cell = raw.positions, raw.cell
        if self._units.distance != 1.0:
            positions, cell = positions * self._units.distance, cell * self._units.distance
        found = {label: self._find_label(raw, label, index) for label in LABEL_NAMES}
        keys = {label: (key or label) for label, (key, _) in found.items()}
        try:
            energy, forces, stress = finalize_labels(
                energy=found["energy"][1], forces=found["forces"][1], stress=found["stress"][1],
                keys=keys, natoms=natoms, cell=cell, path=self.display_path, index=index,
            )
            extras = find_extras(  # energies, hvp, provenance (declared in ``data.keys``)
                (raw.calc, self._source(raw, "key_value_pairs", index), self._source(raw, "data", index)),
                STRUCTURE_EXTRAS, self.key_registry, natoms=natoms, path=self.display_path, index=index,
                decode=decode_data_value,
            )
            if self._properties:
                extras.update(read_properties(
                    self._properties, self._sources(raw, index), self.key_registry, natoms=natoms,
                    path=self.display_path, index=index, units=self._unit_options, used=self.used_keys,
                ))
        except DataFormatError as exc:
            raise DataFormatError(f"{exc} (row id {raw.row_id})") from None
        for label, value in (("energy", energy), ("forces", forces), ("stress", stress)):
            if value is not None:
                self.used_keys.setdefault(label, set()).add(keys[label])
        structure = Structure(positions=positions, numbers=raw.numbers, cell=cell, pbc=raw.pbc,
                              energy=energy, forces=forces, stress=stress, extras=extras)
        return check_structure(structure, path=self.display_path, index=index, names={"numbers": "numbers"})

    def _sources(self, raw: RawRow, index: int) -> list[PropertySource]:
        """Where a row keeps property values (see ``properties.py``): calculator results, per-atom
        arrays, FixAtoms constraints (``fixed``), key-value pairs, then ``row.data``."""
        natoms = int(raw.numbers.shape[0])
        calc_atom = {k: v for k, v in raw.calc.items() if k in CALC_PER_ATOM}
        calc_structure = {k: v for k, v in raw.calc.items() if k not in CALC_PER_ATOM}
        arrays = {k: v for k, v in raw.arrays.items() if k != "constraints"}
        units = self._units.property_units

        def unit(key: str):
            return units.get(key)

        sources = [
            PropertySource(calc_atom, ATOM, "the calculator results"),
            PropertySource(calc_structure, STRUCTURE, "the calculator results"),
            PropertySource(arrays, ATOM, "the per-atom arrays"),
        ]
        if any("fixed" in p.candidates for p in self._properties) and raw.arrays.get("constraints"):
            try:
                fixed = fixed_atoms(raw.arrays.get("constraints"), natoms)
            except Exception as exc:  # a constraint ASE cannot rebuild
                raise self._db.error(index, "constraints", f"row id {raw.row_id}: cannot decode ({exc})") from None
            sources.append(PropertySource({"fixed": fixed}, ATOM, "the constraints"))
        sources += [
            PropertySource(self._source(raw, "key_value_pairs", index), STRUCTURE, "the key-value pairs", unit),
            PropertySource(self._source(raw, "data", index), None, "row.data", unit, read=decode_data_value),
        ]
        return sources

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
        i = self._check_index(index)
        return self._structure(self._fetch(i), i)

    def read_many(self, indices: Sequence[int]) -> list[Structure]:
        """Several structures in the order given; one query per 500 rows on SQLite."""
        idx = [self._check_index(i) for i in indices]
        return [self._structure(raw, i) for raw, i in zip(self._fetch_many(idx), idx)]

    def read_atoms(self, index: int, *, with_info: bool = False):
        """``row.toatoms()`` of structure ``index``: the original Atoms with its calculator.

        Unlike :meth:`read`, no unit conversion and no label lookup: exactly what ASE gives.
        ``with_info``: also the row's key-value pairs in ``atoms.info`` and its ``row.data`` as
        ``atoms.info['data']`` (``row.toatoms()`` leaves both out).
        """
        i = self._check_index(index)
        row_id = int(self._ids[i])
        row = self._db.guard("reading a row", lambda: self.handle.db.get(id=row_id), i)
        atoms = row.toatoms()
        if with_info:
            atoms.info.update(row.key_value_pairs)
            data = row.get("data")
            if data:
                atoms.info["data"] = dict(data)
        return atoms

    def label_keys(self, index: int) -> list[str]:
        """Label-like keys of structure ``index``: calculator results, numeric kvp, data keys."""
        i = self._check_index(index)
        raw = self._fetch(i, all_calc=True)
        names = list(raw.calc)
        names += [k for k, v in self._source(raw, "key_value_pairs", i).items()
                  if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))]
        data = self._source(raw, "data", i)
        names += [k for k in data if not (k.startswith("_shape_") or k.startswith("_dtype_"))]
        return list(dict.fromkeys(names))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_path!r}, structures={len(self)})"


__all__ = ["AseDbReader", "mask_password", "is_url", "secret_parts"]
