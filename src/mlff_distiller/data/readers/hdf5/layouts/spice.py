"""SPICE files: one group per molecule with ``atomic_numbers`` [N], ``conformations`` [C, N, 3],
``dft_total_energy`` [C] and ``dft_total_gradient`` [C, N, 3] (plus charges, multipoles...).

Units come from each dataset's ``units`` attribute (SPICE writes 'bohr', 'hartree',
'hartree/bohr'); without one the SPICE convention (the same units) is used. Forces are
-gradient: ``forces = -dft_total_gradient * (Ha/bohr -> eV/Å)``.
"""

from __future__ import annotations

import h5py

from .base import first_leaf
from .conformers import ConformerGroupLayout, Convention

SPICE = Convention(
    positions=("conformations",),
    species=("atomic_numbers",),
    energy=("dft_total_energy",),
    forces=("dft_total_force", "dft_total_gradient"),
    length_unit="bohr",
    energy_unit="hartree",
    forces_unit="hartree/bohr",
    source="SPICE convention",
)


class SpiceLayout(ConformerGroupLayout):
    name = "spice"
    convention = SPICE
    nan_marks_missing = True

    @classmethod
    def detect(cls, f: h5py.File) -> bool:
        _, datasets = first_leaf(f)
        return "conformations" in datasets
