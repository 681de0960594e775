"""``TrainConfig``: every option of a training run in one dataclass that round-trips through YAML/JSON.

A run writes its config to ``OUT/config.yaml``; ``TrainConfig.load(path)`` reads it back and
``train(config=...)`` repeats the run. ``--resume`` refuses a config that differs from the saved one
in anything but the options that may change between segments of one run (``RESUMABLE_CHANGES``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

#: learning-rate schedules: decay on a validation plateau, or a half cosine over the run
LR_SCHEDULES = ("plateau", "cosine")

__all__ = ["LossWeights", "TrainConfig", "RESUMABLE_CHANGES", "SPLITS", "LR_SCHEDULES"]

#: how the validation/test structures are chosen (see ``data.make_splits``)
SPLITS = ("auto", "random", "group", "composition")
#: options that may differ between the run and its ``--resume`` (the rest must be equal)
RESUMABLE_CHANGES = frozenset(
    {"epochs", "resume", "max_time", "progress_bar", "num_workers", "num_threads", "cache", "devices", "accelerator",
     "strategy", "num_nodes", "out_dir", "early_stopping_patience"}
)


@dataclass
class LossWeights:
    """Weights of the loss terms. Each term is a mean squared error divided by the squared RMS of its
    label in the training split (so every term is dimensionless and O(1) for an untrained model):

    - ``energy``: energy per atom (eV/atom), scale = std of the per-atom energy after E0s;
    - ``forces``: force components (eV/Å), scale = force RMS;
    - ``stress``: stress components (eV/Å³), scale = stress RMS (structures without stress: no term);
    - ``hvp``: Hessian-vector products H·v (eV/Å²) along the stored directions, scale = their RMS;
    - ``energies``: teacher per-atom energies (eV), scale = the per-atom energy std.

    Energy/atom 5 and forces 100 as Amin et al. (ICLR 2025). They weight Hessian rows 200-400; our
    term is one H·v per stored direction, normalised by the H·v RMS (eV/Å², ~10-30x the force RMS in
    eV/Å on EMT metals), and a sweep on 300 EMT structures with 2 directions each (SchNet 32x2, 30
    epochs, no decay) gave validation force MAE 52 / 34 / 38 / 37 meV/Å for hvp = 0 / 30 / 100 / 300
    and energy MAE 114 / 89 / 106 / 144 meV/atom: 30 is the default. The hvp weight is decayed
    when the force error plateaus (``TrainConfig.hvp_decay``).
    """

    energy: float = 5.0
    forces: float = 100.0
    stress: float = 10.0
    hvp: float = 30.0
    energies: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"loss weight {f.name!r} must be a finite number >= 0, got {value!r}")
            setattr(self, f.name, float(value))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class TrainConfig:
    """Options of ``train`` (units: Å, eV, seconds). See ``train`` for the meaning of each field."""

    data: Union[str, list[str]] = ""
    out_dir: str = "run"
    format: Optional[str] = None
    # student
    model: str = "painn"
    model_options: dict = field(default_factory=dict)
    cutoff: float = 5.0
    dtype: str = "float32"
    # data
    val: Union[float, str] = 0.1
    test_fraction: float = 0.0
    split: str = "auto"
    batch_size: int = 16
    max_atoms_per_batch: Optional[int] = None
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    cache: bool = True
    # optimisation
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    gradient_clip: Optional[float] = 10.0
    # "plateau": multiply lr by lr_factor when val_loss has not improved for lr_patience epochs;
    # "cosine": half-cosine decay to min_lr over the epochs (or over max_time when that ends first)
    lr_schedule: str = "plateau"
    lr_factor: float = 0.5
    lr_patience: int = 5
    min_lr: float = 1e-6
    early_stopping_patience: int = 20
    ema_decay: Optional[float] = 0.99
    weights: LossWeights = field(default_factory=LossWeights)
    # Hessian weight decay (Amin et al.): multiply the hvp weight by ``hvp_decay`` when the validation
    # force MAE has not improved for ``hvp_decay_patience`` epochs, or (with ``hvp_force_target`` in
    # eV/Å) once it is within ``hvp_target_tolerance`` of the target
    hvp_decay: float = 0.5
    hvp_decay_patience: int = 3
    hvp_force_target: Optional[float] = None
    hvp_target_tolerance: float = 0.05
    # run
    seed: int = 0
    resume: bool = False
    max_time: Optional[float] = None
    accelerator: str = "auto"
    devices: Union[int, str] = 1
    num_nodes: int = 1
    strategy: str = "auto"
    deterministic: Optional[bool] = None
    num_threads: Optional[int] = None
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        if isinstance(self.data, (list, tuple)):
            self.data = [os.fspath(p) for p in self.data]
        else:
            self.data = os.fspath(self.data)
        self.out_dir = os.fspath(self.out_dir)
        if isinstance(self.val, os.PathLike):
            self.val = os.fspath(self.val)
        self.validate()

    # -- checks -----------------------------------------------------------------------------
    def validate(self) -> None:
        """ValueError naming the first bad option."""

        def positive_int(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        def number(name: str, low: float = 0.0, open_low: bool = False, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (open_low and value == low):
                bound = ">" if open_low else ">="
                raise ValueError(f"{name} must be a finite number {bound} {low}, got {value!r}")

        if not self.data:
            raise ValueError("data: no training data given")
        positive_int("epochs")
        positive_int("batch_size")
        positive_int("max_atoms_per_batch", allow_none=True)
        positive_int("eval_batch_size", allow_none=True)
        positive_int("num_nodes")
        positive_int("num_threads", allow_none=True)
        number("cutoff", open_low=True)
        number("lr", open_low=True)
        number("weight_decay")
        number("gradient_clip", open_low=True, allow_none=True)
        number("min_lr")
        number("max_time", open_low=True, allow_none=True)
        number("test_fraction")
        number("hvp_force_target", open_low=True, allow_none=True)
        number("hvp_target_tolerance")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be {' or '.join(map(repr, LR_SCHEDULES))}, got {self.lr_schedule!r}")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must lie in (0, 1), got {self.lr_factor!r}")
        if not 0 < self.hvp_decay <= 1:
            raise ValueError(f"hvp_decay must lie in (0, 1] (1: no decay), got {self.hvp_decay!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in (0, 1) or be None (no EMA), got {self.ema_decay!r}")
        for name in ("lr_patience", "early_stopping_patience", "hvp_decay_patience", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if isinstance(self.val, str):
            if not self.val:
                raise ValueError("val: an empty path")
        else:
            ok = isinstance(self.val, (int, float)) and not isinstance(self.val, bool) and math.isfinite(self.val)
            if not ok or not 0 < self.val < 1:
                raise ValueError(f"val must be a fraction in (0, 1) or a validation data file, got {self.val!r}")
            if self.val + self.test_fraction >= 1:
                raise ValueError(
                    f"val ({self.val}) + test_fraction ({self.test_fraction}) leave no training structures"
                )
        if isinstance(self.val, str) and self.test_fraction >= 1:
            raise ValueError(f"test_fraction must be below 1, got {self.test_fraction!r}")
        if not isinstance(self.model_options, dict):
            raise ValueError(f"model_options must be a dict of hyperparameters, got {self.model_options!r}")

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-able dict (``TrainConfig(**d)`` rebuilds it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        return cls(**values)

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        from ..data.publish import write_atomic

        path = Path(path)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        else:
            text = json.dumps(data, indent=1)
        return write_atomic(path, text)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "TrainConfig":
        """Read a config written by ``save`` (YAML or JSON; never unpickles)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config must be a mapping of options")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def differences(self, other: "TrainConfig", ignore: frozenset = RESUMABLE_CHANGES) -> list[str]:
        """``'name: a != b'`` for every option (outside ``ignore``) that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {theirs[k]!r} != {mine[k]!r}" for k in mine if k not in ignore and mine[k] != theirs[k]]
