"""Residuals of a student against the labels of a graph batch, and the weighted loss built from them.

Every quantity is compared only where the batch carries its label: a structure whose
``<label>_mask`` is False contributes nothing (no zero target, no term in the count). The loss is
written as sums and counts so that it stays exact under data parallelism: each term is

    w_k / s_k**2 * (sum of squared residuals of term k) / (number of residual entries of term k)

where the entry count is summed over all ranks (``count_reduce``) and the per-rank loss is
multiplied by the world size, so that DDP's gradient average gives exactly the gradient of the
global mean (2 ranks x batch b == 1 process x batch 2b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch

__all__ = [
    "LABELS",
    "LossScales",
    "residuals",
    "weighted_loss",
]

#: the labels a student can be trained on: name -> (batch key, per-atom?)
LABELS: dict[str, tuple[str, bool]] = {
    "energy": ("energy", False),  # compared per atom: (E_pred - E) / natoms
    "forces": ("forces", True),
    "stress": ("stress", False),
    "hvp": ("hvp", True),
    "energies": ("energies", True),
}


@dataclass(frozen=True)
class LossScales:
    """Typical size (RMS) of each label in the training split, in the label's units.

    energy: eV/atom (std of the per-atom energy after E0s); forces eV/Å; stress eV/Å³; hvp eV/Å²;
    energies: eV (per atom). Each loss term is divided by its scale squared.
    """

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 1.0
    hvp: float = 1.0
    energies: float = 1.0

    def __post_init__(self) -> None:
        for name, value in self.as_dict().items():
            if not (value > 0 and value < float("inf")):
                raise ValueError(f"loss scale {name!r} must be a finite positive number, got {value!r}")

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in LABELS}


def _structure_mask(batch: Mapping, key: str) -> Optional[torch.Tensor]:
    return batch.get(f"{key}_mask")


def residuals(pred: Mapping[str, torch.Tensor], batch: Mapping, names=None) -> dict[str, torch.Tensor]:
    """Prediction minus label for every label present in both ``pred`` and ``batch``.

    pred: ``energy`` [B] eV, ``forces`` [T, 3], ``stress`` [B, 3, 3], ``hvp`` [T, K, 3],
    ``energies`` [T] (what ``predict`` / ``atomic_energies`` return). Returns, per label, the
    residuals of the structures/atoms that carry it: ``energy`` [n] eV/atom (divided by the atom
    count), ``forces`` [m, 3], ``stress`` [n, 3, 3], ``hvp`` [m, K, 3], ``energies`` [m].
    """
    out: dict[str, torch.Tensor] = {}
    for name, (key, per_atom) in LABELS.items():
        if names is not None and name not in names:
            continue
        if name not in pred or key not in batch:
            continue
        p = pred[name]
        target = batch[key].to(p.dtype)
        diff = p - target
        if name == "energy":
            diff = diff / batch["natoms"].to(p.dtype)
        mask = _structure_mask(batch, key)
        if mask is not None:
            if per_atom:
                mask = mask.index_select(0, batch["batch"])
            diff = diff[mask]
        out[name] = diff
    return out


def weighted_loss(
    res: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    scales: LossScales,
    *,
    count_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    world_size: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its (detached, weighted) terms from ``residuals``.

    count_reduce: sums the per-term entry counts over ranks (None: this process only);
    world_size: the number of ranks whose gradients DDP averages. A term with no entries on any
    rank contributes exactly zero (still part of the graph).
    """
    scale = scales.as_dict()
    anchor = next(iter(res.values())) if res else None
    if anchor is None:
        raise ValueError("no label to train on: the batch carries none of energy, forces, stress, hvp, energies")
    # one count per known label, in a fixed order: every rank reduces a tensor of the same shape
    # whatever labels its own batch happens to carry
    names = list(LABELS)
    counts = torch.tensor(
        [float(res[n].numel()) if n in res and weights.get(n, 0.0) > 0 else 0.0 for n in names],
        dtype=torch.float64, device=anchor.device,
    )
    if count_reduce is not None:
        counts = count_reduce(counts)
    total = anchor.sum() * 0.0
    terms: dict[str, torch.Tensor] = {}
    for n, count in zip(names, counts.tolist()):
        if count == 0 or n not in res or weights.get(n, 0.0) <= 0:
            continue
        term = (res[n] ** 2).sum() * (float(weights[n]) * world_size / (scale[n] ** 2 * count))
        terms[n] = term.detach() / world_size
        total = total + term
    return total, terms
