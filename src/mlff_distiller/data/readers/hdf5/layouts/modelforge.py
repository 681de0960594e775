"""modelforge's curated HDF5 (format v1.1): one group per molecule with ``positions`` [C, N, 3],
``atomic_numbers`` [N, 1], per-system properties [C, k] and per-atom properties [C, N, k], each
dataset carrying ``format`` (per_system / per_atom / meta_data) and a pint unit string ``u``
('nanometer', 'kilojoule_per_mole', 'kilojoule_per_mole / nanometer', ...).

Units come from ``u``; modelforge's own convention (nm, kJ/mol) applies where it is missing.
Energy: ``energy_key`` if given, else the first of energy, energies, dft_total_energy,
total_energy, internal_energy_at_0K (QM9's U0); forces: forces, dft_total_force, or
-dft_total_gradient.
"""

from __future__ import annotations

import h5py

from .base import first_leaf
from .conformers import ConformerGroupLayout, Convention

MODELFORGE = Convention(
    positions=("positions",),
    species=("atomic_numbers",),
    energy=("energy", "energies", "dft_total_energy", "total_energy", "internal_energy_at_0K"),
    forces=("forces", "dft_total_force", "force", "dft_total_gradient"),
    length_unit="nanometer",
    energy_unit="kilojoule_per_mole",
    forces_unit="kilojoule_per_mole / nanometer",
    source="modelforge convention",
)


class ModelforgeLayout(ConformerGroupLayout):
    name = "modelforge"
    convention = MODELFORGE

    @classmethod
    def detect(cls, f: h5py.File) -> bool:
        _, datasets = first_leaf(f)
        pos = datasets.get("positions")
        if pos is None or pos.ndim != 3:
            return False
        return "n_configs" in datasets or "u" in pos.attrs or "format" in pos.attrs

    @classmethod
    def accepts(cls, f: h5py.File) -> bool:
        """Forced, conformer ``positions`` [C, N, 3] suffice (units then follow modelforge's convention)."""
        _, datasets = first_leaf(f)
        pos = datasets.get("positions")
        return pos is not None and pos.ndim == 3
