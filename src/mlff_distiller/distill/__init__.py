"""Distillation end to end: ``distill(teacher=..., structures=..., out_dir=...)`` samples structures
with the teacher, labels them, splits them by provenance, trains a student, exports it, evaluates it
against the teacher (accuracy, like-for-like speed, NVE stability) and writes a report.

Modules: ``config`` (DistillConfig), ``budget`` (auto fields from a time budget), ``layout`` (the
run directory and its done-markers), ``stages`` (one function per stage), ``run`` (``distill``).
"""

from __future__ import annotations

from .config import DistillConfig
from .layout import STAGES, RunDir
from .run import DistillResult, distill, load_run_config

__all__ = ["DistillConfig", "DistillResult", "RunDir", "STAGES", "distill", "load_run_config"]
