"""PaiNN-class equivariant student (Schütt, Unke, Gastegger 2021), written for per-call speed.

Atoms carry scalar features s [T, F] and vector features v [T, 3, F] (v starts at zero). Each layer:

- message: (a, b, c) = φ(s_j) ⊙ W(r_ij) (three F-blocks), with W(r) = (Bessel(r) · envelope(r)) @ F_l
  (all layers' filters from one matmul);  s_i += Σ_j a,  v_i += Σ_j (b ⊙ v_j + c ⊙ r̂_ij)
- update: (U v, V v) = linear maps of v over features; (a_vv, a_sv, a_ss) = MLP([s, |V v|]);
  v += a_vv ⊙ U v,  s += a_sv ⊙ <U v, V v> + a_ss

and a two-layer MLP of s reads out one energy per atom. Rotations act on v's middle axis only, so
the energy is invariant and forces are equivariant; no spherical harmonics, no e3nn.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .base import StudentModel
from .layers import energy_readout

__all__ = ["PaiNN"]


class PaiNN(StudentModel):
    """PaiNN student. Hyperparameters: ``hidden`` (F), ``layers``, ``rbf`` (Bessel functions),
    ``envelope_p``, ``avg_neighbors`` (messages scaled by 1/sqrt of it).

    Default size 32 x 2 (26.7 k parameters for 3 elements): the fastest size measured to reach
    < 40 meV/Å force MAE against SevenNet-0 on aspirin MD (29.7 meV/Å; 32 x 3: 27.7 meV/Å at
    1.3-1.6x the cost per call)."""

    name = "painn"

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float,
        dtype: Any = torch.float32,
        *,
        hidden: int = 32,
        layers: int = 2,
        rbf: int = 16,
        envelope_p: int = 6,
        avg_neighbors: float = 20.0,
    ) -> None:
        super().__init__(species, cutoff, dtype)
        f, layers, rbf = self._init_network(hidden, layers, rbf, envelope_p, avg_neighbors)
        self.filters = nn.Linear(rbf, layers * 3 * f, bias=False)
        self.phi = nn.ModuleList(nn.Sequential(nn.Linear(f, f), nn.SiLU(), nn.Linear(f, 3 * f)) for _ in range(layers))
        self.uv = nn.ModuleList(nn.Linear(f, 2 * f, bias=False) for _ in range(layers))
        self.gate = nn.ModuleList(nn.Sequential(nn.Linear(2 * f, f), nn.SiLU(), nn.Linear(f, 3 * f)) for _ in range(layers))
        self.readout = energy_readout(f)
        self.to(self._dtype)

    def node_outputs(self, idx: torch.Tensor, vectors: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        i, j = edge_index[0], edge_index[1]
        f = self.hidden
        r = torch.linalg.vector_norm(vectors, dim=1)
        unit = (vectors / r.unsqueeze(1)).unsqueeze(2)  # [E, 3, 1]
        filters = self.filters(self.radial(r)).split(3 * f, dim=1)  # layers x [E, 3F]
        s = self.embedding(idx)
        v = s.new_zeros((s.shape[0], 3, f))
        for layer in range(self.layers):
            x = self.phi[layer](s).index_select(0, j) * filters[layer]
            ds, dvv, dvs = x.split(f, dim=1)
            dv = dvs.unsqueeze(1) * unit  # [E, 3, F]
            if layer > 0:  # v is zero before the first message
                dv = dv + dvv.unsqueeze(1) * v.index_select(0, j)
            s = s.index_add(0, i, ds)
            v = v.index_add(0, i, dv)
            uv, vv = self.uv[layer](v).split(f, dim=2)  # [T, 3, F] each
            norm = torch.sqrt((vv * vv).sum(dim=1) + 1e-8)  # [T, F]
            avv, asv, ass = self.gate[layer](torch.cat([s, norm], dim=1)).split(f, dim=1)
            if layer < self.layers - 1:  # the readout sees only s: the last vector update is unused
                v = v + avv.unsqueeze(1) * uv
            s = s + asv * (uv * vv).sum(dim=1) + ass
        return self.readout(s).squeeze(-1)
