"""Evaluating a student against its teacher: errors, like-for-like speed, MD stability, plots, reports.

- ``metrics.compute_errors``: energy-per-atom / force / stress MAE and RMSE;
- ``speed.compare_speed``: ms per single point, teacher vs student, same structures and threads;
  ``speed.batched_throughput`` separately;
- ``md.nve_stability``: NVE drift per atom per ps and physical checks;
- ``plots.write_plots``: parity and error-vs-size PNGs;
- ``report.write_report``: ``report.json`` + ``report.md``;
- ``evaluate``: all of it on a labeled held-out file.
"""

from __future__ import annotations

from .evaluate import evaluate, read_labeled
from .md import nve_stability
from .metrics import compute_errors
from .report import render_table, side_by_side, write_report
from .speed import batched_throughput, compare_speed, time_calls

__all__ = [
    "batched_throughput",
    "compare_speed",
    "compute_errors",
    "evaluate",
    "nve_stability",
    "read_labeled",
    "render_table",
    "side_by_side",
    "time_calls",
    "write_report",
]
