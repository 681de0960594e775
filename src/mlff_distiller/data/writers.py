"""Write structures to an ASE database, extended XYZ, HDF5 (the guide's layout) or the packed format.

Every writer is lossless for what it stores — positions, atomic numbers, cell, pbc and the labels
(energy, forces, stress); ``Structure.extras`` are not written. Float64 arrays survive a
write/read round trip bit for bit:

- ``ase``: an ASE database; the labels live in a ``SinglePointCalculator``, so ``ase.db`` and
  ``ase.io.read`` see them. Arrays are stored as binary float64.
- ``xyz``: extended XYZ that ``ase.io.read`` reads. ASE's own writer prints per-atom columns with
  ``%16.8f`` (8 decimals, lossy), so the per-atom lines are written here with the shortest repr
  that round-trips exactly; the comment line (Lattice, Properties, energy, stress, pbc) is built by
  ASE's ``output_column_format``, which already writes floats exactly.
- ``hdf5``: ``structures/<i>/{positions, species, cell, pbc, energy, forces, stress}``; a label a
  structure lacks is omitted; dtypes are kept as given.
- ``packed``: delegated to ``mlff_distiller.data.packed.write_packed``.

Every writer refuses a structure with a NaN or infinite value (positions, cell, energy, forces,
stress) with a ``DataFormatError`` naming the output file, the structure index and the key: NaN is
never written.
ASE stores stress as the 6 Voigt components, so the ``ase`` and ``xyz`` writers refuse an
asymmetric [3, 3] stress rather than silently symmetrising it (``hdf5`` keeps all 9 values).
A file is written under a temporary name and moved into place when complete; an existing file is
never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .errors import format_error
from .structure import Structure, structure_to_atoms

WRITE_FORMATS = ("ase", "xyz", "hdf5", "packed")


def _normalize(path: Path, fmt: Optional[str]) -> str:
    from .readers import guess_format, normalize_format  # no reader module is imported here

    return normalize_format(fmt) if fmt is not None else guess_format(path)


#: the float fields a structure must hold finite values in
FINITE_FIELDS = ("positions", "cell", "energy", "forces", "stress")


def check_finite(structure: Structure, index: int, path: str | os.PathLike) -> None:
    """DataFormatError naming ``path``, structure ``index`` and the key when a value is NaN/inf."""
    for key in FINITE_FIELDS:
        value = getattr(structure, key)
        if value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise format_error(str(path), index, key, f"{bad} NaN/inf value(s); refusing to write them")


def _finite(structures: Iterable[Structure], path: Path) -> Iterator[Structure]:
    """``structures`` passed through ``check_finite`` one by one (indices counted from 0)."""
    for i, s in enumerate(structures):
        check_finite(s, i, path)
        yield s


def to_atoms(structure: Structure, index: int = 0):
    """``ase.Atoms`` holding the structure's labels in a SinglePointCalculator (float64); a stress
    that is not exactly symmetric is refused (ASE formats keep 6 Voigt components only)."""
    try:
        return structure_to_atoms(structure, symmetric_stress=True)
    except ValueError as exc:
        raise ValueError(f"structure {index}, {exc}") from None


# -- ASE database ------------------------------------------------------------------------
def _write_ase(path: Path, structures: Iterable[Structure]) -> int:
    from ase.db import connect

    count = 0
    db = connect(str(path), type="db", append=False)
    with db:  # one transaction
        for i, s in enumerate(structures):
            db.write(to_atoms(s, i))
            count += 1
    return count


# -- extended XYZ ------------------------------------------------------------------------
def _xyz_frame(structure: Structure, index: int) -> str:
    """One extended-XYZ frame with every float written exactly (shortest round-trip repr)."""
    from ase.io.extxyz import output_column_format

    atoms = to_atoms(structure, index)  # refuses an asymmetric stress, as for the db
    atoms.calc = None  # labels go to the header (info) and the forces column, written exactly
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
    comment = output_column_format(atoms, columns, arrays, write_info=True)[0]
    rows = np.concatenate(blocks, axis=1).tolist()  # python floats: repr is exact
    lines = [f"{len(atoms)}", comment]
    lines.extend(
        f"{sym:<2s}" + "".join(f" {v!r:>22}" for v in row) for sym, row in zip(arrays["symbols"].tolist(), rows)
    )
    return "\n".join(lines) + "\n"


def _write_xyz(path: Path, structures: Iterable[Structure]) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        for i, s in enumerate(structures):
            fh.write(_xyz_frame(s, i))
            count += 1
    return count


# -- HDF5 (guide layout) -------------------------------------------------------------------
def _write_hdf5(path: Path, structures: Iterable[Structure]) -> int:
    import h5py

    count = 0
    with h5py.File(path, "w") as f:
        root = f.create_group("structures", track_order=True)
        for i, s in enumerate(structures):
            g = root.create_group(str(i))
            g.create_dataset("positions", data=np.asarray(s.positions))
            g.create_dataset("species", data=np.asarray(s.numbers, dtype=np.int64))
            g.create_dataset("cell", data=np.asarray(s.cell))
            g.create_dataset("pbc", data=np.asarray(s.pbc, dtype=bool))
            for name, value in s.labels().items():
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


def _write_packed(path: Path, structures: Iterable[Structure]) -> int:
    return int(_packed_writer()(path, structures))


WRITERS: dict[str, Callable[[Path, Iterable[Structure]], int]] = {
    "ase": _write_ase,
    "xyz": _write_xyz,
    "hdf5": _write_hdf5,
    "packed": _write_packed,
}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _store_metadata(path: Path, fmt: str, metadata: dict) -> None:
    """File-level metadata of a written ase/hdf5 file (xyz: a warning, nowhere to store it)."""
    import json
    import warnings

    if fmt == "ase":
        from ase.db import connect

        connect(str(path), type="db").metadata = metadata
    elif fmt == "hdf5":
        import h5py

        with h5py.File(path, "r+") as f:
            f.attrs["metadata"] = json.dumps(metadata)
    else:
        warnings.warn(f"{fmt} files have no file metadata: {sorted(metadata)} not stored", UserWarning, stacklevel=3)


def write_structures(
    path: str | os.PathLike,
    structures: Iterable[Structure],
    format: Optional[str] = None,
    *,
    overwrite: bool = False,
    metadata: Optional[dict] = None,
) -> int:
    """Write ``structures`` to ``path`` in ``format`` (guessed from the suffix when None).

    ``metadata`` (a JSON-able dict, e.g. ``{"teacher": {...}}``) is the file's metadata: ASE db
    ``db.metadata``, the packed/HDF5 file's ``metadata`` attribute (JSON); extended XYZ has no place
    for it (a warning says so).

    Returns the number of structures written.
    Raises FileExistsError when ``path`` exists and ``overwrite`` is False, ValueError for an
    unknown format or a structure the format cannot hold exactly. Nothing is left at ``path``
    when writing fails.
    """
    path = Path(path)
    fmt = _normalize(path, format)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory")
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    _remove(tmp)
    try:
        if metadata and fmt == "packed":
            count = int(_packed_writer()(tmp, _finite(structures, path), metadata=metadata))
        else:
            count = WRITERS[fmt](tmp, _finite(structures, path))
            if metadata:
                _store_metadata(tmp, fmt, metadata)
        if overwrite and (path.is_dir() or tmp.is_dir()):
            _remove(path)  # os.replace cannot replace a directory or put one over a file
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return count


def structure_difference(a: Structure, b: Structure) -> Optional[str]:
    """The first field in which two structures differ (exact comparison of values), or None.

    Arrays are compared by value, not dtype: a float32 array equals its float64 copy.
    """
    for name in ("numbers", "positions", "cell", "pbc", "energy", "forces", "stress"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None):
            return f"{name}: present in one structure only"
        if x is not None and (np.shape(x) != np.shape(y) or not np.array_equal(x, y)):
            return f"{name}: values differ"
    return None


__all__ = ["write_structures", "to_atoms", "structure_difference", "check_finite", "WRITE_FORMATS"]
