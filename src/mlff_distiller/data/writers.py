"""Write structures to an ASE database, extended XYZ, HDF5 (the guide's layout) or the packed format.

Every writer is lossless for what it stores — positions, atomic numbers, cell, pbc, the labels
(energy, forces, stress) and the declared extras (``energies``, ``hvp``, ``hvp_directions``,
provenance such as ``sample_method``/``sample_seed``/``config_type``...). Float64 arrays survive a
write/read round trip bit for bit:

- ``ase``: an ASE database; energy, forces, stress and ``energies`` live in a
  ``SinglePointCalculator``, so ``ase.db`` and ``ase.io.read`` see them (ASE's SQLite backend has no
  column for per-atom ``energies`` and drops it, so it is also stored in ``row.data['energies']``).
  Other array extras (``hvp``, ``hvp_directions`` [N, K, 3] float64) go to ``row.data``; strings and
  per-structure numbers (provenance, ``config_type``) to key-value pairs. ``metadata`` becomes
  ``db.metadata``.
- ``xyz``: extended XYZ that ``ase.io.read`` reads. ASE's own writer prints per-atom columns with
  ``%16.8f`` (8 decimals, lossy), so the per-atom lines are written here with the shortest repr
  that round-trips exactly; the comment line (Lattice, Properties, energy, stress, pbc, provenance)
  is built by ASE's ``output_column_format``, which already writes floats exactly. Per-atom extras
  are columns (``hvp`` [N, K, 3] as 3K columns ``hvp``). There is no place for file metadata (a
  warning says so).
- ``hdf5``: ``structures/<i>/{positions, species, cell, pbc, energy, forces, stress, <extras>}``; a
  label a structure lacks is omitted; dtypes are kept as given; strings are UTF-8 string datasets;
  ``metadata`` is the JSON root attribute ``metadata``.
- ``packed``: delegated to ``mlff_distiller.data.packed.write_packed`` (metadata as an attribute).

Every writer refuses a structure with a NaN or infinite value (positions, cell, energy, forces,
stress, float extras) or an extra that fails its declared checks (``keys.py``) with a
``DataFormatError`` naming the output file, the structure index and the key: NaN is never written.
ASE stores stress as the 6 Voigt components, so the ``ase`` and ``xyz`` writers refuse an
asymmetric [3, 3] stress rather than silently symmetrising it (``hdf5`` keeps all 9 values).
A file is written under a temporary name and moved into place when complete; an existing file is
never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .errors import format_error
from .keys import ATOM, DEFAULT_KEYS, LIST, STRUCTURE_LABELS, KeyRegistry
from .publish import SpaceGuard, check_target, publish
from .structure import Structure, structure_to_atoms

WRITE_FORMATS = ("ase", "xyz", "hdf5", "packed")


def _normalize(path: Path, fmt: Optional[str]) -> str:
    from .readers import guess_format, normalize_format  # no reader module is imported here

    return normalize_format(fmt) if fmt is not None else guess_format(path)


#: the float fields a structure must hold finite values in
FINITE_FIELDS = ("positions", "cell") + STRUCTURE_LABELS


def check_finite(structure: Structure, index: int, path: str | os.PathLike, keys: KeyRegistry = DEFAULT_KEYS) -> None:
    """DataFormatError naming ``path``, structure ``index`` and the key when a value is NaN/inf
    or an extra fails its declared checks (``Key.check``)."""
    for key in FINITE_FIELDS:
        value = getattr(structure, key)
        if value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise format_error(str(path), index, key, f"{bad} NaN/inf value(s); refusing to write them")
    for name, value in structure.extras.items():
        keys.require(name, where=str(path)).check(value, natoms=structure.natoms, path=str(path), index=index)


def _finite(structures: Iterable[Structure], path: Path, keys: KeyRegistry) -> Iterator[Structure]:
    """``structures`` passed through ``check_finite`` one by one (indices counted from 0); a key
    whose row shape has a symbol (K of ``hvp``) must have the same row shape in every structure."""
    rows: dict[str, tuple] = {}
    for i, s in enumerate(structures):
        check_finite(s, i, path, keys)
        for name, value in s.extras.items():
            key = keys[name]
            if any(isinstance(d, str) for d in key.shape):
                row = np.shape(value)[1 if key.kind == ATOM else 0:]
                if rows.setdefault(name, row) != row:
                    raise format_error(str(path), i, name, f"row shape {list(row)} differs from {list(rows[name])} "
                                                          "of earlier structures: it must be the same for every "
                                                          "structure of a file")
        yield s


def to_atoms(structure: Structure, index: int = 0, keys: KeyRegistry = DEFAULT_KEYS):
    """``ase.Atoms`` holding the structure's labels in a SinglePointCalculator (float64); a stress
    that is not exactly symmetric is refused (ASE formats keep 6 Voigt components only)."""
    try:
        return structure_to_atoms(structure, symmetric_stress=True, keys=keys)
    except ValueError as exc:
        raise ValueError(f"structure {index}, {exc}") from None


# -- ASE database ------------------------------------------------------------------------
#: calculator results ASE's SQLite backend stores as columns (other extras: kvp or row.data)
_DB_CALC_COLUMNS = ("free_energy", "dipole", "magmoms", "magmom", "charges")


def _python(value):
    """A scalar as a Python int/float/str (what ASE key-value pairs accept)."""
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def db_row_parts(structure: Structure, index: int, keys: KeyRegistry) -> tuple:
    """(Atoms with the calculator results, key-value pairs, row.data) of one structure, as the
    ``ase`` writer stores it (see module docstring)."""
    atoms = to_atoms(structure, index, keys)
    kvp, data = {}, {}
    for name, value in structure.extras.items():
        key = keys.require(name)
        if name == "energies":
            data[name] = np.asarray(value, dtype=np.float64)  # SQLite drops calc['energies']
        elif name in _DB_CALC_COLUMNS:
            continue  # a calculator result (to_atoms put it there)
        elif key.kind == LIST or (key.kind != ATOM and np.ndim(value) == 0):
            kvp[name] = _python(value)
        else:
            data[name] = np.asarray(value)
    for name in list(atoms.arrays):
        if name in structure.extras:
            del atoms.arrays[name]
    atoms.info.clear()
    return atoms, kvp, data


def _write_ase(path: Path, structures: Iterable[Structure], metadata: Optional[dict], keys: KeyRegistry,
               name: str) -> int:
    from ase.db import connect

    count = 0
    db = connect(str(path), type="db", append=False)
    with db:  # one transaction
        for i, s in enumerate(structures):
            atoms, kvp, data = db_row_parts(s, i, keys)
            db.write(atoms, key_value_pairs=kvp, data=data or None)
            count += 1
    if metadata:
        db.metadata = metadata
    return count


# -- extended XYZ ------------------------------------------------------------------------
def _xyz_frame(structure: Structure, index: int, keys: KeyRegistry = DEFAULT_KEYS) -> str:
    """One extended-XYZ frame with every float written exactly (shortest round-trip repr)."""
    from ase.io.extxyz import output_column_format

    atoms = to_atoms(structure, index, keys)  # refuses an asymmetric stress, as for the db
    atoms.calc = None  # labels go to the header (info) and the per-atom columns, written exactly
    atoms.info.clear()
    if structure.energy is not None:
        atoms.info["energy"] = float(structure.energy)
    if structure.stress is not None:
        atoms.info["stress"] = np.asarray(structure.stress, dtype=np.float64)
    columns = ["symbols", "positions"]
    arrays = {"symbols": np.array(atoms.get_chemical_symbols()), "positions": atoms.positions}
    blocks = [atoms.positions]
    if structure.forces is not None:
        forces = np.asarray(structure.forces, dtype=np.float64)
        columns.append("forces")
        arrays["forces"] = forces
        blocks.append(forces)
    for name, value in structure.extras.items():
        key = keys.require(name)
        if key.kind == ATOM:
            value = np.asarray(value)
            block = value.reshape(len(value), -1)
            if block.shape[1] == 0:
                raise format_error("<xyz>", index, name, "a per-atom key with no values cannot be an XYZ column")
            columns.append(name)
            arrays[name] = block[:, 0] if block.shape[1] == 1 else block
            blocks.append(block.astype(np.float64) if block.dtype.kind == "f" else block)
        else:
            atoms.info[name] = _python(value) if np.ndim(value) == 0 or key.kind == LIST else np.asarray(value)
    comment = output_column_format(atoms, columns, arrays, write_info=True)[0]
    rows = [sum(parts, []) for parts in zip(*(b.tolist() for b in blocks))]  # python numbers: repr is exact
    lines = [f"{len(atoms)}", comment]
    lines.extend(
        f"{sym:<2s}" + "".join(f" {v!r:>22}" for v in row) for sym, row in zip(arrays["symbols"].tolist(), rows)
    )
    return "\n".join(lines) + "\n"


def _write_xyz(path: Path, structures: Iterable[Structure], metadata: Optional[dict], keys: KeyRegistry,
               name: str) -> int:
    if metadata:
        warnings.warn(f"extended XYZ files have no file metadata: {sorted(metadata)} not stored in {name}",
                      UserWarning, stacklevel=4)
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        for i, s in enumerate(structures):
            fh.write(_xyz_frame(s, i, keys))
            count += 1
    return count


# -- HDF5 (guide layout) -------------------------------------------------------------------
def _write_hdf5(path: Path, structures: Iterable[Structure], metadata: Optional[dict], keys: KeyRegistry,
                name: str) -> int:
    import h5py

    count = 0
    space = SpaceGuard(path, shown=name)  # h5py cannot close a file once a write failed: stop before the disk is full
    with h5py.File(path, "w") as f:
        if metadata:
            f.attrs["metadata"] = json.dumps(metadata)
        root = f.create_group("structures", track_order=True)
        for i, s in enumerate(structures):
            space.reserve(2 * np.asarray(s.positions).nbytes + 2048)
            g = root.create_group(str(i))
            g.create_dataset("positions", data=np.asarray(s.positions))
            g.create_dataset("species", data=np.asarray(s.numbers, dtype=np.int64))
            g.create_dataset("cell", data=np.asarray(s.cell))
            g.create_dataset("pbc", data=np.asarray(s.pbc, dtype=bool))
            for name, value in s.labels().items():
                g.create_dataset(name, data=np.asarray(value))
            for name, value in s.extras.items():
                if isinstance(value, str):
                    g.create_dataset(name, data=value, dtype=h5py.string_dtype())
                else:
                    g.create_dataset(name, data=np.asarray(value))
            count += 1
    return count


# -- packed (another module) ---------------------------------------------------------------
def _packed_writer() -> Callable:
    """``mlff_distiller.data.packed.write_packed`` (imported lazily), or ValueError."""
    try:
        from .packed import write_packed
    except ImportError as exc:
        raise ValueError(f"the 'packed' format writer is not available ({exc})") from exc
    return write_packed


def _write_packed(path: Path, structures: Iterable[Structure], metadata: Optional[dict], keys: KeyRegistry,
                  name: str, overwrite: bool) -> int:
    """The packed writer publishes ``path`` itself (``publish.py``, with its spill directory)."""
    return int(_packed_writer()(path, structures, metadata=metadata, keys=keys, name=name, overwrite=overwrite))


#: writers of one temporary file that ``write_structures`` publishes
WRITERS: dict[str, Callable[..., int]] = {
    "ase": _write_ase,
    "xyz": _write_xyz,
    "hdf5": _write_hdf5,
}


def write_structures(
    path: str | os.PathLike,
    structures: Iterable[Structure],
    format: Optional[str] = None,
    *,
    overwrite: bool = False,
    metadata: Optional[dict] = None,
    keys=None,
) -> int:
    """Write ``structures`` to ``path`` in ``format`` (guessed from the suffix when None).

    ``metadata`` (a JSON-able dict, e.g. ``{"teacher": {...}}``) is the file's metadata: ASE db
    ``db.metadata``, the packed/HDF5 file's ``metadata`` attribute (JSON), read back as
    ``reader.metadata`` / ``dataset.metadata``; extended XYZ has no place for it (a warning says
    so). ``keys``: declarations of extras beyond the built-in keys (Keys or a ``KeyRegistry``).

    Returns the number of structures written.
    Raises FileExistsError when ``path`` exists and ``overwrite`` is False, ValueError for an
    unknown format or a structure the format cannot hold exactly. Nothing is left at ``path``
    when writing fails.
    """
    path = Path(path)
    fmt = _normalize(path, format)
    check_target(path, overwrite)
    if metadata is not None:
        json.dumps(metadata)  # TypeError now, not after writing everything
    registry = DEFAULT_KEYS.extend(keys)
    if fmt == "packed":
        return _write_packed(path, _finite(structures, path, registry), metadata, registry, str(path), overwrite)
    # a fresh temporary file (O_EXCL) beside path, published without replacing a file that
    # appeared meanwhile (unless overwrite); removed with SQLite's side files on any failure
    with publish(path, overwrite=overwrite) as tmp:
        count = WRITERS[fmt](tmp, _finite(structures, path, registry), metadata, registry, str(path))
    return count


def structure_difference(a: Structure, b: Structure, *, extras: bool = True) -> Optional[str]:
    """The first field in which two structures differ (exact comparison of values), or None.

    Arrays are compared by value, not dtype: a float32 array equals its float64 copy.
    ``extras=False`` compares positions, numbers, cell, pbc and energy/forces/stress only.
    """
    for name in ("numbers", "positions", "cell", "pbc") + STRUCTURE_LABELS:
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None):
            return f"{name}: present in one structure only"
        if x is not None and (np.shape(x) != np.shape(y) or not np.array_equal(x, y)):
            return f"{name}: values differ"
    for name in sorted(set(a.extras) | set(b.extras)) if extras else ():
        if (name in a.extras) != (name in b.extras):
            return f"{name}: present in one structure only"
        x, y = a.extras[name], b.extras[name]
        if isinstance(x, str) or isinstance(y, str):
            if x != y:
                return f"{name}: values differ"
        elif np.shape(x) != np.shape(y) or not np.array_equal(x, y):
            return f"{name}: values differ"
    return None


__all__ = ["write_structures", "to_atoms", "structure_difference", "check_finite", "WRITE_FORMATS"]
