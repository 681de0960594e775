"""``distill``: teacher -> sampled structures -> labels -> split -> trained student -> evaluation -> report.

>>> from mlff_distiller.distill import distill                                      # doctest: +SKIP
>>> result = distill(teacher="sevennet-0", structures=["aspirin"], out_dir="run/",
...                  budget_minutes=30)                                              # doctest: +SKIP
>>> result.report["speed"]["speedup"], result.student                              # doctest: +SKIP

A rerun with the same options resumes from the first unfinished stage (see ``layout.RunDir``);
a finished run is refused unless ``overwrite=True``; a run directory holding a run with other options
is refused too (resume it with its own ``config.yaml``, or overwrite it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from .config import DistillConfig
from .layout import STAGES, RunDir
from .stages import STAGE_FUNCTIONS, Context

__all__ = ["distill", "DistillResult", "resolve_config"]


@dataclass
class DistillResult:
    """What a run produced."""

    out_dir: Path
    config: DistillConfig
    student: Path
    report_md: Path
    report_json: Path
    report: dict
    stages_run: list
    seconds: float


def resolve_config(config: DistillConfig, run: RunDir, overwrite: bool) -> tuple[DistillConfig, bool]:
    """(config to use, whether RUN/ holds an earlier run of it). Raises FileExistsError / ValueError
    when RUN/ holds a finished run or a run with other options and ``overwrite`` is False."""
    if overwrite:
        run.remove_run()
        return config, False
    if not run.has_run():
        return config, False
    if not run.config.exists():
        raise FileExistsError(17, "holds stage markers but no config.yaml; pass overwrite to start over", str(run.root))
    saved = DistillConfig.load(run.config)
    merged = config.to_dict()
    for name in config.unresolved() + ["plan"]:  # auto fields take the values the first run chose
        merged[name] = saved.to_dict()[name]
    candidate = DistillConfig.from_dict(merged)
    diff = candidate.differences(saved)
    if diff:
        raise ValueError(
            f"{run.root} holds a distill run with other options ({'; '.join(diff)}); rerun it with "
            f"--config {run.config}, choose another --out, or pass --overwrite"
        )
    if run.finished():
        raise FileExistsError(
            17, f"holds a finished distill run (report: {run.report_md}); pass --overwrite to replace it", str(run.root)
        )
    # resumable changes (threads, progress, label workers) apply to the rest of the run
    for name in ("threads", "progress", "label_workers"):
        merged[name] = getattr(config, name)
    return DistillConfig.from_dict(merged), True


def shared_calculator(teacher, label_workers: int = 1):
    """The teacher, handing out one calculator instance for the whole run (loading SevenNet-0 takes
    seconds; sampling, labeling and timing one after the other can share it). With several label
    workers the original teacher is kept (worker processes rebuild it by name)."""
    import copy

    if label_workers > 1:
        return teacher
    shared = copy.copy(teacher)
    instance: list = []

    def calculator():
        if not instance:
            instance.append(teacher.calculator())
        return instance[0]

    shared.calculator = calculator
    return shared


def distill(
    config: Optional[DistillConfig] = None,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    **options,
) -> DistillResult:
    """Run (or resume) a distillation. ``config`` or keyword ``options`` (DistillConfig fields:
    teacher, structures, out_dir, budget_minutes, hvp, model, ...); options override the config."""
    import torch

    from ..teachers import get_teacher
    from ..teachers.sampling import load_seeds
    from .budget import plan

    start = time.perf_counter()
    values = config.to_dict() if config is not None else {}
    values.update(options)
    cfg = DistillConfig.from_dict(values)
    run = RunDir(cfg.out_dir)
    cfg, resuming = resolve_config(cfg, run, overwrite)
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if cfg.threads is None:
        cfg = DistillConfig.from_dict({**cfg.to_dict(), "threads": threads})

    teacher = shared_calculator(get_teacher(cfg.teacher, **cfg.teacher_options), cfg.label_workers)
    seeds = load_seeds(cfg.structures)
    for i, atoms in enumerate(seeds):
        try:
            teacher.check(atoms)
        except ValueError as exc:
            raise ValueError(f"seed structure {i}: {exc}") from None
    if cfg.unresolved():
        log(f"planning the run from a {cfg.budget_minutes:g}-minute budget (timing the teacher and the student)")
        cfg = plan(cfg, teacher, seeds, log=log)
    run.root.mkdir(parents=True, exist_ok=True)
    cfg.save(run.config)
    if resuming:
        log(f"resuming {run.root} at stage '{run.first_unfinished()}'")
    ctx = Context(config=cfg, run=run, teacher=teacher, seeds=seeds, log=log)
    stages_run = []
    for stage in STAGES:
        if run.is_done(stage):
            continue
        run.clear_marker(stage)
        t0 = time.perf_counter()
        outputs = STAGE_FUNCTIONS[stage](ctx)
        run.mark_done(stage, outputs, time.perf_counter() - t0, info=ctx.info.pop(stage, {}))
        stages_run.append(stage)
    report = json.loads(run.report_json.read_text(encoding="utf-8"))
    return DistillResult(out_dir=run.root, config=cfg, student=run.student, report_md=run.report_md,
                         report_json=run.report_json, report=report, stages_run=stages_run,
                         seconds=time.perf_counter() - start)


def load_run_config(path: Union[str, os.PathLike]) -> DistillConfig:
    """``DistillConfig.load`` for a run directory or a config.yaml."""
    path = Path(path)
    return DistillConfig.load(path / "config.yaml" if path.is_dir() else path)
