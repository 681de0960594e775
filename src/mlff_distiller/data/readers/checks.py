"""The one validation of the values every reader returns, by the key registry's declarations.

Each reader calls :func:`check_structure` on every ``Structure`` it builds (the packed reader
calls :func:`check_packed_batch` on every batch it gathers), so an impossible value never reaches
a sample, whatever the format: positions, cell and float labels finite (the ``finite`` check of
their keys), atomic numbers 1..118 (``atomic_number``), at least one atom (a structure without
atoms has nothing to learn, and per-atom normalisation would divide its energy by zero). The
checks are the functions of :data:`mlff_distiller.data.keys.CHECKS` named in each key's
declaration; shapes were already checked by the reader that built the arrays.

Errors are ``DataFormatError`` naming the file, the structure index and the key (``names`` maps a
field to the key as the file spells it, e.g. ``{"numbers": "structures/3/species"}``).
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from ..errors import format_error
from ..keys import CHECKS, DEFAULT_KEYS, KeyRegistry
from ..structure import Structure

#: Structure field -> its key in the registry
FIELD_KEYS = {"positions": "positions", "numbers": "species", "cell": "cell", "energy": "energy",
              "forces": "forces", "stress": "stress"}
NO_ATOMS = "structure has no atoms (nothing to learn; per-atom energies would divide by zero)"


def _checks(registry: KeyRegistry, key: str) -> tuple:
    declared = registry.get(key)
    return () if declared is None else tuple(CHECKS[c] for c in declared.checks)


def check_structure(
    s: Structure,
    *,
    path: str,
    index: Optional[int],
    names: Optional[Mapping[str, str]] = None,
    registry: KeyRegistry = DEFAULT_KEYS,
) -> Structure:
    """``s`` unchanged, or DataFormatError for the first impossible value (see the module docstring)."""
    names = names or {}
    numbers = np.asarray(s.numbers)
    if numbers.ndim != 1 or numbers.shape[0] == 0:
        raise format_error(path, index, names.get("numbers", "species") if numbers.ndim != 1 else None,
                           NO_ATOMS if numbers.ndim == 1 else f"species must be 1-D, got shape {numbers.shape}")
    if numbers.dtype.kind not in "iu":
        raise format_error(path, index, names.get("numbers", "species"), f"atomic numbers must be integers, "
                                                                         f"got {numbers.dtype}")
    for field, key in FIELD_KEYS.items():
        value = getattr(s, field)
        if value is None:
            continue
        arr = np.asarray(value)
        for check in _checks(registry, key):
            problem = check(arr)
            if problem is not None:
                raise format_error(path, index, names.get(field, key), problem)
    pbc = np.asarray(s.pbc)
    if pbc.dtype != bool or pbc.shape != (3,):
        raise format_error(path, index, names.get("pbc", "pbc"), f"pbc must be 3 booleans, got {pbc.dtype} {list(pbc.shape)}")
    return s


def check_packed_batch(
    columns: Mapping[str, np.ndarray],
    natoms: np.ndarray,
    indices: np.ndarray,
    *,
    path: str,
    present: Optional[Mapping[str, np.ndarray]] = None,
    edge_index: Optional[np.ndarray] = None,
    num_edges: Optional[np.ndarray] = None,
    registry: KeyRegistry = DEFAULT_KEYS,
) -> None:
    """The same checks on a gathered batch of a packed file, vectorised.

    columns: name -> gathered values (per-atom rows in batch order, or per-structure rows);
    natoms [B], indices [B] (dataset indices, for messages); present: name -> [B] bool for keys
    some structures lack (their rows are fill values, not checked). edge_index [2, E] holds
    structure-local atom indices, num_edges [B] edges per structure: every index must be in
    ``[0, natoms)`` of its structure (a stored -7 would otherwise pick another atom).
    """
    if natoms.size and natoms.min() <= 0:
        b = int(np.flatnonzero(natoms <= 0)[0])
        raise format_error(path, int(indices[b]), "offsets", NO_ATOMS)
    for name, values in columns.items():
        key = registry.get(name)
        if key is None or not key.checks or values.dtype.kind not in "fiub":
            continue
        mask = None if present is None else present.get(name)
        owners = np.arange(natoms.shape[0])
        rows = values
        if mask is not None and not mask.all():
            rows = values[mask.repeat(natoms) if key.kind == "atom" else mask]
            owners = owners[mask]
        for check_name in key.checks:
            if check_name == "unit_directions":
                continue  # per structure, checked when the file was written
            if _passes_quickly(check_name, rows):
                continue
            check = CHECKS[check_name]
            problem = check(rows)
            if problem is not None:
                b = _first_failing(rows, natoms[owners], owners, key.kind, check)
                raise format_error(path, int(indices[b]), name, problem)
    if edge_index is not None and num_edges is not None and edge_index.size:
        # the largest index of each structure's edges against its atom count; a negative index
        # viewed as unsigned is larger than any atom count
        unsigned = edge_index.view(np.uint32 if edge_index.dtype.itemsize == 4 else np.uint64)
        has = num_edges > 0
        starts = (np.cumsum(num_edges) - num_edges)[has]
        if (np.maximum.reduceat(unsigned.max(axis=0), starts) >= natoms[has]).any():
            bound = np.repeat(natoms, num_edges)
            bad = (edge_index < 0) | (edge_index >= bound)
            e = int(np.flatnonzero(bad.any(axis=0))[0])
            b = int(np.searchsorted(np.cumsum(num_edges), e, side="right"))
            value = int(edge_index[:, e][bad[:, e]][0])
            raise format_error(path, int(indices[b]), "edge_index",
                               f"atom index {value} outside 0..{int(natoms[b]) - 1} of the structure")


def _passes_quickly(check: str, values: np.ndarray) -> bool:
    """A cheap reduction that proves ``check`` passes (False: run the check itself, which also
    words the problem). A sum is finite only when every value is (an overflow sends the few
    huge-but-finite arrays to the exact check)."""
    if values.size == 0:
        return True
    if check == "finite":
        if values.dtype.kind not in "fc":
            return True
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isfinite(values.sum()))
    if check == "atomic_number":
        return bool(values.min() >= 1 and values.max() <= 118)
    if check == "non_negative":
        return bool(values.min() >= 0)
    return False


def check_string_codes(codes: Mapping[str, np.ndarray], strings: Mapping[str, list], *, path: str) -> None:
    """Every stored code of a packed file's string key indexes its string table, or is -1 (absent):
    another negative code would silently pick a string from the end of the table."""
    for name, array in codes.items():
        values = np.asarray(array)
        size = len(strings.get(name, ()))
        bad = (values < -1) | (values >= size)
        if bad.any():
            s = int(np.flatnonzero(bad)[0])
            raise format_error(path, s, name, f"string code {int(values[s])} outside -1..{size - 1} of its table")


def _first_failing(rows: np.ndarray, counts: np.ndarray, owners: np.ndarray, kind: str, check) -> int:
    """Batch position of the first structure whose rows fail ``check`` (the error path only)."""
    parts = np.split(rows, np.cumsum(counts)[:-1]) if kind == "atom" else [rows[i : i + 1] for i in range(len(rows))]
    for owner, part in zip(owners, parts):
        if check(part) is not None:
            return int(owner)
    return int(owners[0])


__all__ = ["check_structure", "check_packed_batch", "check_string_codes", "FIELD_KEYS", "NO_ATOMS"]
