"""One ``ase.Atoms`` -> a graph batch of one structure (B = 1)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.neighbors import compute_neighbors
from .base import parse_dtype

__all__ = ["atoms_to_batch"]


def atoms_to_batch(atoms, cutoff: float, dtype: Any = torch.float32, device: Any = "cpu") -> dict[str, torch.Tensor]:
    """Graph batch of ``atoms`` with a vesin neighbor list within ``cutoff`` Å.

    Keys: species [N], positions [N, 3] Å (``dtype``), batch [N] (zeros), ptr [2], natoms [1],
    cell [1, 3, 3] Å, pbc [1, 3], edge_index [2, E], shifts [E, 3]. The cell is kept as ASE holds
    it (a molecule without a cell has a zero cell).
    """
    dtype = parse_dtype(dtype)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    edges = compute_neighbors(positions, cell, pbc, cutoff)
    n = len(positions)
    return {
        "species": torch.as_tensor(np.asarray(atoms.numbers, dtype=np.int64), device=device),
        "positions": torch.as_tensor(positions, device=device).to(dtype),
        "batch": torch.zeros(n, dtype=torch.int64, device=device),
        "ptr": torch.tensor([0, n], dtype=torch.int64, device=device),
        "natoms": torch.tensor([n], dtype=torch.int64, device=device),
        "cell": torch.as_tensor(cell, device=device).to(dtype).unsqueeze(0),
        "pbc": torch.as_tensor(pbc, device=device).unsqueeze(0),
        "edge_index": torch.as_tensor(edges.edge_index, device=device),
        "shifts": torch.as_tensor(edges.shifts, device=device),
    }
