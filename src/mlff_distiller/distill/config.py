"""``DistillConfig``: every choice of a distill run, saved as ``RUN/config.yaml`` so the run can be repeated.

Fields left ``None`` are "auto": ``plan`` (``distill/budget.py``) fills them from the time budget and
the teacher's measured speed before the first stage, and the *resolved* config is what
``config.yaml`` records — ``distill --config RUN/config.yaml`` repeats the same numbers, not the
same guesswork. Units: K, fs, Å, seconds, minutes where the name says so.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["DistillConfig", "RESUMABLE_CHANGES"]

#: fields that may differ between an interrupted run and the rerun that resumes it
RESUMABLE_CHANGES = frozenset({"out_dir", "threads", "progress", "label_workers"})


@dataclass
class DistillConfig:
    """Options of ``distill`` (see ``distill.run.distill`` for how each is used)."""

    # what
    teacher: str = "sevennet-0"
    teacher_options: dict = field(default_factory=dict)
    structures: list = field(default_factory=lambda: ["aspirin"])
    out_dir: str = "distill_run"
    seed: int = 0
    # time budget for the whole run (minutes); fills the "auto" (None) fields below
    budget_minutes: float = 60.0
    threads: Optional[int] = None  # torch threads for teacher, training and timing (None: all cores)
    device: str = "cpu"
    # sampling: teacher Langevin MD from every seed structure
    train_temperatures: list = field(default_factory=lambda: [300.0, 600.0])
    train_samples: Optional[int] = None  # frames per seed structure and temperature (train + val pool)
    test_temperatures: list = field(default_factory=lambda: [450.0])
    test_samples: Optional[int] = None  # held-out frames per seed structure and temperature
    md_interval: Optional[int] = None  # MD steps between training frames (auto: 1 without HVPs, labels are free)
    test_interval: Optional[int] = None  # MD steps between held-out frames (auto: ~2 fs)
    md_equilibration: Optional[int] = None  # MD steps before the first frame of each run
    timestep_fs: Optional[float] = None  # sampling MD step (auto: 1 fs with hydrogen, else 2 fs)
    extra_methods: list = field(default_factory=list)  # e.g. ["rattle"] (extra training samples per seed)
    rattle_sigma: float = 0.05
    # labels
    hvp: int = 0  # Hessian-vector products per training structure (0: none)
    hvp_step: Optional[float] = None  # Å, central-difference step (None: the teacher's default)
    label_workers: int = 1
    # validation: contiguous blocks of each MD run, so neighbours of a val frame are not in train
    val_fraction: float = 0.1
    val_block: Optional[int] = None  # frames per block (auto: ~25 fs of trajectory)
    # student
    model: str = "painn"  # SevenNet-0 aspirin labels: val force MAE 123 meV/Å after 3 epochs vs 262 for schnet
    model_options: dict = field(default_factory=dict)
    cutoff: float = 5.0
    dtype: str = "float32"
    # training
    epochs: Optional[int] = None
    train_minutes: Optional[float] = None
    batch_size: int = 4
    lr: float = 5e-3
    weights: dict = field(default_factory=dict)  # LossWeights fields to override
    hvp_weight: Optional[float] = None
    train_options: dict = field(default_factory=dict)  # any other training.TrainConfig field
    # evaluation
    md_steps: Optional[int] = None  # NVE steps with the student
    md_timestep_fs: Optional[float] = None
    speed_structures: int = 20
    speed_rounds: int = 3
    batch_size_eval: int = 16
    progress: bool = True
    #: how the auto fields were filled (written by the planner; informational)
    plan: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.structures, (str, os.PathLike)):
            self.structures = [self.structures]
        self.structures = [os.fspath(s) for s in self.structures]
        self.out_dir = os.fspath(self.out_dir)
        self.train_temperatures = [float(t) for t in self.train_temperatures]
        self.test_temperatures = [float(t) for t in self.test_temperatures]
        self.validate()

    def validate(self) -> None:
        """ValueError naming the first bad option."""

        def check(name: str, ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")

        def pos_int(name: str, allow_none: bool = True, low: int = 1) -> None:
            v = getattr(self, name)
            check(name, (v is None and allow_none) or (isinstance(v, int) and not isinstance(v, bool) and v >= low),
                  f"an integer >= {low}")

        def pos_num(name: str, allow_none: bool = True) -> None:
            v = getattr(self, name)
            check(name, (v is None and allow_none) or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       and math.isfinite(v) and v > 0), "a finite number > 0")

        check("teacher", isinstance(self.teacher, str) and bool(self.teacher), "a teacher name")
        check("structures", bool(self.structures), "a non-empty list of seed structures (files or built-in names)")
        for name in ("train_temperatures", "test_temperatures"):
            temps = getattr(self, name)
            check(name, bool(temps) and all(math.isfinite(t) and t > 0 for t in temps), "a list of temperatures > 0 K")
        for name in ("train_samples", "test_samples", "md_interval", "test_interval", "epochs", "md_steps", "val_block"):
            pos_int(name)
        pos_int("md_equilibration", low=0)
        pos_int("threads")
        pos_int("hvp", allow_none=False, low=0)
        pos_int("label_workers", allow_none=False)
        pos_int("batch_size", allow_none=False)
        pos_int("speed_structures", allow_none=False, low=2)
        pos_int("speed_rounds", allow_none=False)
        pos_int("batch_size_eval", allow_none=False)
        pos_int("seed", allow_none=False, low=0)
        for name in ("budget_minutes", "timestep_fs", "hvp_step", "train_minutes", "md_timestep_fs", "cutoff", "lr",
                     "rattle_sigma"):
            pos_num(name, allow_none=name not in ("budget_minutes", "cutoff", "lr", "rattle_sigma"))
        check("val_fraction", isinstance(self.val_fraction, float) and 0 < self.val_fraction < 0.5, "a fraction in (0, 0.5)")
        check("dtype", self.dtype in ("float32", "float64"), "'float32' or 'float64'")
        for name in ("teacher_options", "model_options", "weights", "train_options", "plan"):
            check(name, isinstance(getattr(self, name), dict), "a mapping")
        bad = [m for m in self.extra_methods if m not in ("rattle", "relax", "strain")]
        check("extra_methods", not bad, "a list of 'rattle', 'relax', 'strain'")

    # -- auto fields -----------------------------------------------------------------------------
    def unresolved(self) -> list[str]:
        """Names of the auto fields still None."""
        auto = ("train_samples", "test_samples", "md_interval", "test_interval", "md_equilibration", "epochs",
                "train_minutes", "md_steps", "md_timestep_fs", "timestep_fs", "val_block")
        return [n for n in auto if getattr(self, n) is None]

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> "DistillConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}: unknown distill option(s) {unknown}; known: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write as YAML (atomically)."""
        import yaml

        from ..data.publish import write_atomic

        return write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "DistillConfig":
        """Read a ``config.yaml`` (safe YAML: never constructs Python objects)."""
        import yaml

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(2, "no such file", str(path))
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a distill config must be a mapping of options")
        return cls.from_dict(data, where=str(path))

    def differences(self, other: "DistillConfig", ignore=RESUMABLE_CHANGES) -> list[str]:
        """``name: a -> b`` for each field that differs (other than ``ignore``)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {b[k]!r} -> {a[k]!r}" for k in a if k not in ignore and a[k] != b[k]]
