"""The raw, format-independent record of one labeled structure, as every reader returns it.

Units are ASE's: positions Å, energy eV, forces eV/Å, stress eV/Å³ (ASE sign convention).
Arrays keep the dtype the file stores (float64 from ASE/XYZ, float32 where an HDF5 file
stores float32); the dataset converts to the requested torch dtype. Every other key a structure
carries (``energies`` [N] eV, ``hvp``/``hvp_directions`` [N, K, 3], provenance such as
``sample_method`` or ``config_type``...) is in ``extras``, under a name declared in ``keys.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .keys import ATOM, DEFAULT_KEYS, LIST, STRUCTURE_LABELS, KeyRegistry

#: the labels that are fields of ``Structure`` (the rest travel in ``extras``)
LABEL_NAMES = STRUCTURE_LABELS
#: extras that are ASE calculator properties: ``structure_to_atoms`` puts them in the calculator
CALC_RESULTS = ("energies", "free_energy", "charges", "magmoms", "magmom", "dipole")


@dataclass
class Structure:
    """One structure and its labels.

    positions: [N, 3] Å
    numbers:   [N] int64 atomic numbers
    cell:      [3, 3] Å, rows are lattice vectors (zeros for a molecule)
    pbc:       [3] bool
    energy:    [] eV, or None when the structure carries no energy label
    forces:    [N, 3] eV/Å, or None
    stress:    [3, 3] eV/Å³ (ASE sign convention), or None
    extras:    further declared keys -> numpy arrays (per atom: [N, ...]) or Python str/int/float
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: Optional[np.ndarray] = None
    forces: Optional[np.ndarray] = None
    stress: Optional[np.ndarray] = None
    extras: dict = field(default_factory=dict)

    @property
    def natoms(self) -> int:
        return int(self.numbers.shape[0])

    def labels(self) -> dict:
        """The labels this structure carries, by name (only those that are not None)."""
        return {k: getattr(self, k) for k in LABEL_NAMES if getattr(self, k) is not None}


def structure_to_atoms(structure: Structure, *, symmetric_stress: bool = False, keys: KeyRegistry = DEFAULT_KEYS):
    """An ``ase.Atoms`` whose SinglePointCalculator returns the structure's labels (float64).

    ASE keeps stress as the 6 Voigt components; ``symmetric_stress=True`` (used by writers, where
    that is what gets stored) refuses a stress that is not exactly symmetric instead of averaging it.
    Extras: ``energies``, ``charges``, ``magmoms``, ``dipole``, ``magmom`` and ``free_energy`` are
    calculator results (``atoms.get_potential_energies()``, ``get_charges()``...), ``fixed`` is
    also a ``FixAtoms`` constraint, other
    per-atom extras go to ``atoms.arrays`` (``hvp`` [N, K, 3]...), per-structure ones to
    ``atoms.info`` (``sample_method``, ``config_type``...).
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    atoms = Atoms(
        numbers=np.asarray(structure.numbers),
        positions=np.asarray(structure.positions, dtype=np.float64),
        cell=np.asarray(structure.cell, dtype=np.float64),
        pbc=np.asarray(structure.pbc, dtype=bool),
    )
    results = {}
    if structure.energy is not None:
        results["energy"] = float(structure.energy)
    if structure.forces is not None:
        results["forces"] = np.asarray(structure.forces, dtype=np.float64)
    if structure.stress is not None:
        stress = np.asarray(structure.stress, dtype=np.float64)
        if symmetric_stress and not np.array_equal(stress, stress.T):
            raise ValueError(
                "key 'stress': stress is not symmetric; ASE formats store the 6 Voigt components "
                "only — write 'hdf5' (or 'packed') to keep all 9 values"
            )
        results["stress"] = full_3x3_to_voigt_6_stress(stress)
    for name, value in structure.extras.items():
        key = keys.require(name)
        if name in CALC_RESULTS:  # ASE calculator properties: atoms.get_charges(), get_dipole_moment()...
            results[name] = np.asarray(value, dtype=np.float64) if np.ndim(value) else float(value)
        elif name == "fixed":  # ASE's own form: a FixAtoms constraint (what ase.db and extxyz store)
            from ase.constraints import FixAtoms

            atoms.set_constraint(FixAtoms(mask=np.asarray(value, dtype=bool)))
            atoms.arrays[name] = np.array(value)
        elif key.kind == ATOM:
            atoms.arrays[name] = np.array(value)
        elif key.kind == LIST or np.ndim(value) == 0:
            atoms.info[name] = value.item() if isinstance(value, np.ndarray) else value
        else:
            atoms.info[name] = np.array(value)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
