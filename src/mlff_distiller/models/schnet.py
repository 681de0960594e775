"""SchNet-class invariant student (Schütt et al. 2018), written for per-call speed.

Atoms carry scalar features x [T, F]. Every interaction l does a continuous-filter convolution

    m_i = Σ_j W_l(r_ij) ⊙ (A_l x_j),        x_i <- x_i + B_l(m_i)

with filters ``W_l(r) = (Bessel(r) · envelope(r)) @ F_l`` (all layers' filters from one matmul),
A_l linear, B_l a two-layer MLP; a two-layer MLP reads out one energy per atom. The envelope takes
every message and its first two derivatives to zero at the cutoff (smooth energy and forces).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .base import StudentModel
from .layers import energy_readout

__all__ = ["SchNet"]


class SchNet(StudentModel):
    """SchNet student. Hyperparameters: ``hidden`` (feature width F), ``layers`` (interactions),
    ``rbf`` (Bessel functions), ``envelope_p`` (envelope exponent), ``avg_neighbors`` (messages
    are scaled by 1/sqrt of it)."""

    name = "schnet"

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float,
        dtype: Any = torch.float32,
        *,
        hidden: int = 64,
        layers: int = 3,
        rbf: int = 16,
        envelope_p: int = 6,
        avg_neighbors: float = 20.0,
    ) -> None:
        super().__init__(species, cutoff, dtype)
        hidden, layers, rbf = self._init_network(hidden, layers, rbf, envelope_p, avg_neighbors)
        self.filters = nn.Linear(rbf, layers * hidden, bias=False)
        self.inputs = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
        self.updates = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(layers)
        )
        self.readout = energy_readout(hidden)
        self.to(self._dtype)

    def node_outputs(self, idx: torch.Tensor, vectors: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        i, j = edge_index[0], edge_index[1]
        r = torch.linalg.vector_norm(vectors, dim=1)
        filters = self.filters(self.radial(r)).split(self.hidden, dim=1)  # layers x [E, F]
        x = self.embedding(idx)
        for layer in range(self.layers):
            h = self.inputs[layer](x).index_select(0, j) * filters[layer]
            m = torch.zeros_like(x).index_add(0, i, h)
            x = x + self.updates[layer](m)
        return self.readout(x).squeeze(-1)
