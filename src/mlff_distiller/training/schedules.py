"""Decay of the Hessian(-vector product) loss weight once the force error stops improving.

Amin et al. (ICLR 2025) halve the Hessian weight once the student's validation force error is within
5 % of the teacher's: the Hessian term speeds up learning early and costs force accuracy late. Here
the weight is multiplied by ``factor`` at the end of a validation epoch when

- the validation force MAE has not improved (by more than ``min_delta`` relative) for
  ``patience`` epochs in a row, or
- a ``target`` force MAE is given and the validation force MAE is within ``tolerance`` of it
  (at most once every ``patience`` epochs).

The state is plain numbers (checkpointed with the run).
"""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["HessianWeightSchedule"]


class HessianWeightSchedule:
    def __init__(
        self,
        weight: float,
        *,
        factor: float = 0.5,
        patience: int = 3,
        target: Optional[float] = None,
        tolerance: float = 0.05,
        min_delta: float = 1e-3,
    ) -> None:
        self.weight = float(weight)
        self.factor = float(factor)
        self.patience = int(patience)
        self.target = None if target is None else float(target)
        self.tolerance = float(tolerance)
        self.min_delta = float(min_delta)
        self.best = math.inf
        self.wait = 0  # epochs without improvement
        self.since_decay = 0  # epochs since the last decay
        self.decays = 0

    def step(self, force_mae: float) -> float:
        """Update with this epoch's validation force MAE (any unit, the same as ``target``);
        returns the weight for the next epoch."""
        if not math.isfinite(force_mae) or self.factor >= 1.0 or self.weight == 0.0:
            return self.weight
        self.since_decay += 1
        if force_mae < self.best * (1.0 - self.min_delta):
            self.best = force_mae
            self.wait = 0
        else:
            self.wait += 1
        plateau = self.patience > 0 and self.wait >= self.patience
        near_target = (
            self.target is not None
            and force_mae <= self.target * (1.0 + self.tolerance)
            and self.since_decay >= max(self.patience, 1)
        )
        if plateau or near_target:
            self.weight *= self.factor
            self.decays += 1
            self.wait = 0
            self.since_decay = 0
        return self.weight

    def state_dict(self) -> dict:
        return {
            "weight": self.weight,
            "best": self.best,
            "wait": self.wait,
            "since_decay": self.since_decay,
            "decays": self.decays,
        }

    def load_state_dict(self, state: dict) -> None:
        self.weight = float(state["weight"])
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self.since_decay = int(state["since_decay"])
        self.decays = int(state["decays"])
