"""Exponential moving average of the weights: Lightning's ``WeightAveraging`` callback with a warm-up.

Lightning swaps the averaged weights in for validation (so the validation metrics, the LR schedule,
early stopping and the best checkpoint all see the EMA weights) and stores both the averaged and
the current weights in every checkpoint (``state_dict`` = averaged, ``current_model_state`` =
current), so ``best.ckpt``'s ``state_dict`` is the best epoch's EMA weights.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after n updates (as TensorFlow's
``ExponentialMovingAverage(num_updates=...)``): a plain 0.99-0.999 EMA would still sit near the
random initial weights after the few hundred steps of a short run.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging

__all__ = ["EMA", "WarmupEMA"]


class WarmupEMA:
    """``avg_fn`` of ``torch.optim.swa_utils.AveragedModel``: EMA with a warm-up of its decay."""

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay!r}")
        self.decay = float(decay)

    def __call__(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = float(num_averaged)
        d = min(self.decay, (1.0 + n) / (10.0 + n))
        return averaged + (current - averaged) * (1.0 - d)


class EMA(WeightAveraging):
    """EMA of the parameters after every optimizer step (buffers such as E0s are not averaged)."""

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__(use_buffers=False, avg_fn=WarmupEMA(decay))
        self.decay = float(decay)
