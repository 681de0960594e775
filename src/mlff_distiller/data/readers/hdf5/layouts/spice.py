"""SPICE files: one group per molecule with ``atomic_numbers`` [N], ``conformations`` [C, N, 3],
``dft_total_energy`` [C] and ``dft_total_gradient`` [C, N, 3] (plus charges, multipoles...).

Units come from each dataset's ``units`` attribute (SPICE writes 'bohr', 'hartree',
'hartree/bohr'); without one the SPICE convention (the same units) is used. Forces are
-gradient: ``forces = -dft_total_gradient * (Ha/bohr -> eV/Å)``.

Properties (``properties=``): ``charges`` from ``mbis_charges`` [C, N, 1] (e), ``dipole`` from
``scf_dipole`` [C, 3] (e·bohr -> e·Å), and ``total_charge``, which SPICE does not store, from the
formal charges of the group's ``smiles`` (``properties.smiles_total_charge``).
"""

from __future__ import annotations

import h5py

import numpy as np

from ....properties import smiles_total_charge
from ._h5 import as_text
from .base import H5Files, first_leaf
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
    property_units=((r"charges$", "elementary_charge"), (r"dipoles?$", "elementary_charge*bohr")),
)


class SpiceLayout(ConformerGroupLayout):
    name = "spice"
    convention = SPICE
    nan_marks_missing = True

    def derived_properties(self, files: H5Files, g: int) -> dict:
        """``total_charge`` (e): the sum of the formal charges in the group's mapped SMILES (SPICE
        stores no total charge; its molecules are defined by that SMILES)."""
        grp = files[0][self._groups[g].path]
        if "smiles" not in grp:
            return {}
        smiles = np.asarray(grp["smiles"][()]).reshape(-1)
        if smiles.size != 1:
            return {}
        return {"total_charge": np.float64(smiles_total_charge(as_text(smiles[0])))}

    @classmethod
    def detect(cls, f: h5py.File) -> bool:
        _, datasets = first_leaf(f)
        return "conformations" in datasets
