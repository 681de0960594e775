"""Losses over padded batches: only real atoms count, padding never does.

``pred`` and ``target`` are per-atom tensors of a padded batch, e.g. forces [B, M, 3] eV/Å, and
``mask`` [B, M] bool marks the real atoms (``batch['mask']``; combine with ``batch['forces_mask']``
as ``mask & batch['forces_mask'][:, None]`` when some structures lack forces). The mean runs over
the components of real atoms only, so a batch padded to 1000 atoms weighs the same as unpadded.

Padding is selected out, not multiplied by zero, so garbage (even NaN) in padded slots of ``pred``
cannot leak into the loss or its gradient. A fully masked batch (no atom carries the label) gives a
zero loss that is still part of the autograd graph, so ``loss.backward()`` works and contributes
nothing.
"""

from __future__ import annotations

import torch

__all__ = ["masked_mse_loss", "masked_mae_loss"]


def _select(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {list(pred.shape)} but target has {list(target.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if mask.shape != pred.shape[: mask.ndim]:
        raise ValueError(
            f"mask of shape {list(mask.shape)} does not match the leading dimensions of pred {list(pred.shape)}"
        )
    return pred[mask], target[mask]


def _zero_like_graph(selected: torch.Tensor) -> torch.Tensor:
    """A 0-d zero connected to ``selected``'s graph (``selected`` is empty)."""
    return selected.sum() * 0.0


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is True.

    pred, target: [B, M, ...] (e.g. forces [B, M, 3] eV/Å); mask: [B, M] bool. Returns a 0-d
    tensor: sum of squared errors over real atoms' components / their number (eV²/Å² for forces).
    """
    p, t = _select(pred, target, mask)
    if p.numel() == 0:
        return _zero_like_graph(p)
    return torch.mean((p - t) ** 2)


def masked_mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the entries where ``mask`` is True (same shapes as ``masked_mse_loss``)."""
    p, t = _select(pred, target, mask)
    if p.numel() == 0:
        return _zero_like_graph(p)
    return torch.mean(torch.abs(p - t))
