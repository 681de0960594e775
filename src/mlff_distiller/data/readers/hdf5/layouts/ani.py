"""ANI-style files: groups of conformers sharing species (TorchANI / ANI-1x / ANI-2x releases),
including the original ANI-1 ``pyanitools`` files where the groups sit two levels down
(``gdb11_s01/gdb11_s01-0/{coordinates, energies, species}``, species as element-symbol bytes).

Datasets: ``coordinates`` [C, N, 3], ``species`` ([N] symbols or atomic numbers, or [C, N]) or
``atomic_numbers`` [N]; energies under ``energies``/``energy`` or, in the ANI-1x/1ccx releases,
one key per level of theory (``wb97x_dz.energy``, ``ccsd(t)_cbs.energy``; pick one with
``energy_key=``; by default ``wb97x_dz.energy``, the ANI-1x DFT reference, is used when no plain
``energies`` exists, and forces of the same level, ``wb97x_dz.forces``).
Units (documented by the data set papers, Smith et al. 2017/2020, and TorchANI): coordinates Å,
energies Hartree, forces Hartree/Å; properties: charges (``wb97x_dz.cm5_charges``...) e, molecular
dipoles (``wb97x_dz.dipole``) e·Å. They are per atom / per conformer as their key declarations say
(``properties={"charges": "wb97x_dz.cm5_charges", "dipole": "wb97x_dz.dipole"}``).
The ANI-1x/1ccx releases write NaN for a level of theory not computed for a conformer; such a
label is an error unless ``nan_as_missing=True`` (then it is absent), and the error says so.
"""

from __future__ import annotations

import h5py

from .base import first_leaf
from .conformers import ConformerGroupLayout, Convention

ANI = Convention(
    positions=("coordinates",),
    species=("species", "atomic_numbers"),
    energy=("energies", "energy", "wb97x_dz.energy"),
    forces=("forces",),
    length_unit="angstrom",
    energy_unit="hartree",
    forces_unit="hartree/angstrom",
    source="ANI convention",
    # ANI-1x/1ccx data descriptor (Smith et al., Sci. Data 7, 134, 2020): charges in e, dipoles in e·Å
    property_units=((r"charges$", "e"), (r"\.dipole$", "e*Å")),
)


class AniLayout(ConformerGroupLayout):
    name = "ani"
    convention = ANI
    nan_marks_missing = True

    @classmethod
    def detect(cls, f: h5py.File) -> bool:
        _, datasets = first_leaf(f)
        return "coordinates" in datasets


class Ani1Layout(AniLayout):
    """The original ANI-1 nested layout; the same reader (groups are found at any depth)."""

    name = "ani1"
