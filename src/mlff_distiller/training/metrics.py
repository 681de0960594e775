"""Validation errors accumulated over an epoch: MAE and RMSE per label, exact under data parallelism.

Sums of |r| and r² and entry counts are kept in float64 and summed over ranks at the end of the
epoch, so the reported errors are those of the whole validation split whatever the world size.
Reported in milli-units: energy meV/atom, forces meV/Å, stress meV/Å³, hvp meV/Å², energies meV.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

import torch

__all__ = ["ErrorAccumulator", "METRIC_UNITS"]

#: label -> unit of its MAE/RMSE as reported (milli-eV based)
METRIC_UNITS = {
    "energy": "meV/atom",
    "forces": "meV/Å",
    "stress": "meV/Å³",
    "hvp": "meV/Å²",
    "energies": "meV/atom",
}
_ORDER = tuple(METRIC_UNITS)


class ErrorAccumulator:
    """Running sums of absolute and squared residuals per label (see ``losses.residuals``)."""

    def __init__(self) -> None:
        # per label: [sum |r|, sum r², count]
        self.sums = torch.zeros(len(_ORDER), 3, dtype=torch.float64)

    def reset(self) -> None:
        self.sums.zero_()

    def update(self, res: Mapping[str, torch.Tensor]) -> None:
        """Add residuals (``losses.residuals``); the sums stay on the residuals' device (no sync)."""
        for name, r in res.items():
            r = r.detach().to(torch.float64).reshape(-1)
            if self.sums.device != r.device:
                self.sums = self.sums.to(r.device)
            k = _ORDER.index(name)
            self.sums[k, 0] += r.abs().sum()
            self.sums[k, 1] += (r * r).sum()
            self.sums[k, 2] += r.numel()

    def results(
        self, reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(errors, mean squares) over the epoch, summed over ranks with ``reduce`` (None: this process).

        errors: ``{label}_mae`` and ``{label}_rmse`` in milli-units for every label seen on any
        rank; mean squares: mean squared residual per label in the label's units squared (for the
        validation loss).
        """
        sums = (self.sums if reduce is None else reduce(self.sums.clone())).cpu()
        errors: dict[str, float] = {}
        squares: dict[str, float] = {}
        for k, name in enumerate(_ORDER):
            abs_sum, sq_sum, count = (float(v) for v in sums[k].tolist())
            if count == 0:
                continue
            errors[f"{name}_mae"] = 1000.0 * abs_sum / count
            errors[f"{name}_rmse"] = 1000.0 * math.sqrt(sq_sum / count)
            squares[name] = sq_sum / count
        return errors, squares
