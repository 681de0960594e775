"""Training students on teacher labels with Lightning.

>>> from mlff_distiller.training import train                           # doctest: +SKIP
>>> result = train("labels.db", model="schnet", out_dir="run", epochs=50)  # doctest: +SKIP
>>> result.student, result.best_metrics["val_forces_mae"]              # doctest: +SKIP
(PosixPath('run/student.safetensors'), 41.2)

Modules: ``config`` (TrainConfig, LossWeights), ``data`` (split, training-split statistics,
LightningDataModule), ``losses`` (label-masked, normalised, DDP-exact), ``metrics`` (MAE/RMSE),
``schedules`` (Hessian weight decay), ``ema`` (EMA callback), ``module`` (LightningModule),
``runner`` (``train``, export, metrics CSV), ``provenance`` (teacher info, data fingerprint).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "train": "runner",
    "TrainResult": "runner",
    "export_student": "runner",
    "TrainConfig": "config",
    "LossWeights": "config",
    "LossScales": "losses",
    "StudentModule": "module",
    "StudentDataModule": "data",
    "TrainingData": "data",
    "HessianWeightSchedule": "schedules",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
