"""The raw, format-independent record of one labeled structure, as every reader returns it.

Units are ASE's: positions Å, energy eV, forces eV/Å, stress eV/Å³ (ASE sign convention).
Arrays keep the dtype the file stores (float64 from ASE/XYZ, float32 where an HDF5 file
stores float32); the dataset converts to the requested torch dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

LABEL_NAMES = ("energy", "forces", "stress")


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
