"""``dataset.get_atoms(i)`` / ``dataset[i]['atoms']``: the structure as ``ase.Atoms`` with everything
the file holds.

The Atoms carry the dataset's labels in a ``SinglePointCalculator`` (eV, eV/Å, eV/Å³, after the
dataset's key choice and unit conversions) and its extras (``Structure.extras``: per-atom ones in
``atoms.arrays``, per-structure ones in ``atoms.info``; ``charges``/``magmoms``/``dipole``/``magmom``/
``free_energy``/``energies`` as calculator results). For formats ASE reads itself (ASE database,
extended XYZ), what ``row.toatoms()`` / ``ase.io.read`` gives is kept as well: every ``info`` entry,
per-atom array, constraint (``FixAtoms``...) and calculator result the file holds — as the file
stores them (its own keys and units), wherever the dataset's values do not already take that place.
An ASE database row's key-value pairs go to ``atoms.info`` and its ``row.data`` to
``atoms.info['data']`` (``row.toatoms()`` leaves them out).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .keys import DEFAULT_KEYS, KeyRegistry
from .structure import Structure, structure_to_atoms


def file_atoms(reader, index: int):
    """``ase.Atoms`` as ASE itself reads structure ``index`` of ``reader`` (``read_atoms``), or None
    for formats ASE does not read (HDF5, packed). A multi-file reader asks the member file."""
    members = getattr(reader, "readers", None)
    if members is not None and hasattr(reader, "locate"):
        k, local = reader.locate(index)
        return file_atoms(members[k], local)
    read_atoms = getattr(reader, "read_atoms", None)
    if read_atoms is None:
        return None
    if getattr(reader, "format_name", "") == "ase":  # key-value pairs and row.data too
        return read_atoms(index, with_info=True)
    return read_atoms(index)


def full_atoms(structure: Structure, reader=None, index: Optional[int] = None,
               keys: KeyRegistry = DEFAULT_KEYS):
    """``structure`` as Atoms (see module docstring): ``structure_to_atoms`` plus the info, arrays,
    constraints and calculator results of ``reader``'s own Atoms of ``index`` (when it has them)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = structure_to_atoms(structure, keys=keys)
    raw = file_atoms(reader, index) if reader is not None and index is not None else None
    if raw is None or len(raw) != len(atoms):
        return atoms
    for name, value in raw.info.items():
        atoms.info.setdefault(name, value)
    for name, value in raw.arrays.items():
        if name not in atoms.arrays:
            atoms.arrays[name] = np.array(value)
    if raw.constraints:
        atoms.set_constraint([c.copy() for c in raw.constraints])
    raw_results = dict(raw.calc.results) if raw.calc is not None else {}
    if raw_results:
        ours = dict(atoms.calc.results) if atoms.calc is not None else {}
        merged = {**{k: v for k, v in raw_results.items() if k not in ours}, **ours}
        if merged != ours:
            atoms.calc = SinglePointCalculator(atoms, **merged)
    return atoms


__all__ = ["file_atoms", "full_atoms"]
