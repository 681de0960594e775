"""Building blocks shared by the students: a Bessel basis, a smooth cutoff envelope, the energy readout.

Both act on edge lengths ``r`` [E] Å and are cheap elementwise formulas (few tensor ops: per-call
overhead is what single-point speed is made of on a CPU).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BesselBasis", "PolynomialEnvelope", "RadialEmbedding", "energy_readout"]


class BesselBasis(nn.Module):
    """``sqrt(2/rc) sin(n π r / rc) / r`` for n = 1..num [E] -> [E, num] (DimeNet's radial basis).

    The frequencies are fixed (not trained): a buffer, so they move with ``.to(dtype)``.
    """

    def __init__(self, cutoff: float, num: int) -> None:
        super().__init__()
        if num < 1:
            raise ValueError(f"the radial basis needs at least one function, got rbf={num}")
        self.cutoff = float(cutoff)
        self.register_buffer("freq", torch.arange(1, num + 1, dtype=torch.get_default_dtype()) * (math.pi / cutoff))
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.sin(r.unsqueeze(-1) * self.freq) * (self.prefactor / r).unsqueeze(-1)


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff u(r) [E] -> [E] (DimeNet, exponent p): u(0) = 1 and u, u', u'' vanish at
    ``r = cutoff``; u = 0 beyond it (so edges longer than the model's cutoff contribute nothing).

    ``u(d) = 1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) - p(p+1)/2 d^(p+2)``, ``d = r / cutoff``.
    An optional constant ``factor`` multiplies u (folded into the coefficients: no extra op);
    the students use it for the 1/sqrt(average neighbors) message normalisation.
    """

    def __init__(self, cutoff: float, p: int = 6, factor: float = 1.0) -> None:
        super().__init__()
        if p < 2:
            raise ValueError(f"envelope exponent must be >= 2 (smooth forces), got {p}")
        self.cutoff = float(cutoff)
        self.p = int(p)
        self.factor = float(factor)
        self.a = -factor * (p + 1) * (p + 2) / 2.0
        self.b = factor * p * (p + 2.0)
        self.c = -factor * p * (p + 1) / 2.0

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        d = r * (1.0 / self.cutoff)
        u = d.pow(self.p) * (self.a + d * (self.b + self.c * d)) + self.factor
        return u * (d < 1.0)


class RadialEmbedding(nn.Module):
    """Edge lengths [E] Å -> Bessel basis times the envelope [E, num] (zero at and past the cutoff)."""

    def __init__(self, cutoff: float, num: int, p: int = 6, factor: float = 1.0) -> None:
        super().__init__()
        self.basis = BesselBasis(cutoff, num)
        self.envelope = PolynomialEnvelope(cutoff, p, factor)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.basis(r) * self.envelope(r).unsqueeze(-1)


def energy_readout(hidden: int) -> nn.Sequential:
    """Two-layer MLP from ``hidden`` scalar features to one energy per atom (inner width hidden // 2)."""
    inner = hidden // 2 or 1
    return nn.Sequential(nn.Linear(hidden, inner), nn.SiLU(), nn.Linear(inner, 1))
