"""Filling the "auto" fields of a ``DistillConfig`` from its time budget and measured speeds.

The planner times the teacher on the seed structures (one warm-up call, then a few) and an
untrained student of the configured size (speed does not depend on the weights), then shares
``budget_minutes`` out:

- ``SAMPLE_SHARE`` for teacher calls: Langevin MD frames (``md_interval`` calls each; the MD
  call's own labels are kept, so a frame costs no extra labeling call), equilibration steps, and
  ``2 * hvp`` calls per training frame for Hessian-vector products;
- ``TRAIN_SHARE`` for training (``train_minutes``, Lightning's ``max_time``; ``epochs`` is a
  ceiling that early stopping and the clock usually hit first). When the stages before training
  took longer than planned (a busy machine), ``training_seconds`` shortens planned training so the
  whole run keeps its budget;
- the rest for evaluation (like-for-like timing, NVE steps with the student) and fixed costs.

Every number chosen, and the speeds it was chosen from, go into ``config.plan`` so the report can
say why.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np

from .config import DistillConfig

__all__ = ["plan", "training_seconds", "SAMPLE_SHARE", "TRAIN_SHARE", "EVAL_SHARE"]

SAMPLE_SHARE = 0.40
TRAIN_SHARE = 0.45
EVAL_SHARE = 0.10  # the remaining 5 %: startup, export, plots, slack
#: held-out frames per seed structure and test temperature (beyond it they go to training instead)
MAX_TEST_PER_RUN = 100


def time_teacher(teacher, seeds: Sequence, calls: int = 3, warmup: int = 2) -> float:
    """Median seconds per energy+forces call of ``teacher`` over the seed structures (the first
    ``warmup`` calls per structure dropped: TorchScript teachers optimise during their first calls)."""
    from ase import Atoms

    calc = teacher.calculator()
    times = []
    for atoms in seeds:
        work = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        rng = np.random.default_rng(0)
        for k in range(calls + warmup):
            work.positions = atoms.positions + rng.normal(0, 0.01, atoms.positions.shape)
            work.calc = calc
            t0 = time.perf_counter()
            work.get_forces()
            if k >= warmup:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_student(config: DistillConfig, seeds: Sequence, calls: int = 20) -> float:
    """Median seconds per energy+forces call of an untrained student of the configured size."""
    import torch

    from ..calculator import StudentCalculator
    from ..models import build_model

    species = sorted({int(z) for a in seeds for z in a.numbers})
    model = build_model(config.model, species=species, cutoff=config.cutoff, dtype=getattr(torch, config.dtype),
                        **config.model_options)
    calc = StudentCalculator(model, num_threads=config.threads)
    times = []
    rng = np.random.default_rng(0)
    for atoms in seeds:
        work = atoms.copy()
        work.calc = calc
        for k in range(calls + 2):
            work.positions = atoms.positions + rng.normal(0, 0.01, atoms.positions.shape)
            t0 = time.perf_counter()
            work.get_forces()
            if k >= 2:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _has_hydrogen(seeds) -> bool:
    return any(1 in set(a.numbers.tolist()) for a in seeds)


def plan(config: DistillConfig, teacher, seeds: Sequence, log: Callable[[str], None] = print,
         teacher_seconds: Optional[float] = None, student_seconds: Optional[float] = None) -> DistillConfig:
    """A copy of ``config`` with every auto (None) field filled; ``config.plan`` says how."""
    values = config.to_dict()
    if not config.unresolved():
        return config
    budget = 60.0 * config.budget_minutes
    t_teacher = time_teacher(teacher, seeds) if teacher_seconds is None else teacher_seconds
    t_student = time_student(config, seeds) if student_seconds is None else student_seconds
    n_seeds = len(seeds)
    n_train_t, n_test_t = len(config.train_temperatures), len(config.test_temperatures)
    runs = n_seeds * (n_train_t + n_test_t)
    # Langevin sampling covers more configurations per teacher call with a longer step (1 fs with H
    # was stable at 600 K for aspirin and cut the held-out force MAE of the demo from 63 to 55 meV/Å);
    # the NVE check of the student keeps the conservative step (0.5 fs with H)
    hydrogen = _has_hydrogen(seeds)
    timestep = config.timestep_fs or (1.0 if hydrogen else 2.0)
    calls = SAMPLE_SHARE * budget / t_teacher  # teacher calls the sampling share affords

    eq = config.md_equilibration
    if eq is None:  # at most 10 % of the calls, at most 100 steps (50 fs with H)
        eq = int(max(0, min(100, 0.10 * calls / runs)))
    left = max(calls - runs * eq, 0.0)
    hvp_calls = 2 * config.hvp
    # every MD step is a teacher call whose labels are kept: without HVPs every step is a free frame
    # (denser frames, same trajectory); with HVPs a frame costs 2K calls more, so frames are thinned
    # until MD and HVPs take about the same share
    interval = config.md_interval or int(min(20, max(1, hvp_calls)))
    test_interval = config.test_interval or max(interval, int(round(2.0 / timestep)))  # held-out: ~2 fs apart
    test_ratio = 0.25 * n_train_t / n_test_t  # held-out frames per run relative to training frames per run
    n_test = config.test_samples
    n_train = config.train_samples
    if n_train is None:
        per = n_seeds * (n_train_t * (interval + hvp_calls) + n_test_t * test_ratio * test_interval)
        n_train = int(max(10, left / per))
        if n_test is None and test_ratio * n_train > MAX_TEST_PER_RUN:  # enough to evaluate: the rest trains
            n_test = MAX_TEST_PER_RUN
            left_train = left - n_seeds * n_test_t * n_test * test_interval
            n_train = int(max(10, left_train / (n_seeds * n_train_t * (interval + hvp_calls))))
    if n_test is None:
        n_test = int(max(5, min(MAX_TEST_PER_RUN, round(test_ratio * n_train))))
    sample_calls = runs * eq + n_seeds * (n_train_t * n_train * (interval + hvp_calls) + n_test_t * n_test * test_interval)
    val_block = config.val_block or int(max(2, round(25.0 / (interval * timestep))))  # ~25 fs of trajectory

    train_minutes = config.train_minutes
    if train_minutes is None:
        spare = max(0.0, SAMPLE_SHARE * budget - sample_calls * t_teacher)  # time sampling did not need
        train_minutes = max(0.5, (TRAIN_SHARE * budget + 0.5 * spare) / 60.0)
    epochs = config.epochs if config.epochs is not None else 10_000  # the clock (train_minutes) decides
    md_dt = config.md_timestep_fs or (0.5 if hydrogen else 2.0)
    md_steps = config.md_steps
    if md_steps is None:  # half the evaluation share, ~1.3× the bare call for the integrator and checks
        steps = 0.5 * EVAL_SHARE * budget / (1.3 * t_student)
        md_steps = int(min(20_000, max(200, round(steps, -2))))
    values.update(
        md_equilibration=eq, md_interval=interval, test_interval=test_interval, val_block=val_block,
        train_samples=n_train, test_samples=n_test,
        train_minutes=round(train_minutes, 2), epochs=epochs, md_steps=md_steps, md_timestep_fs=md_dt,
        timestep_fs=timestep,
    )
    values["plan"] = {
        "budget_minutes": config.budget_minutes,
        "train_minutes_auto": config.train_minutes is None,  # stage_train may then shorten it to keep the budget
        "teacher_ms_per_call": round(1e3 * t_teacher, 3),
        "student_ms_per_call_untrained": round(1e3 * t_student, 3),
        "teacher_calls_planned": int(sample_calls),
        "sampling_minutes_planned": round(sample_calls * t_teacher / 60.0, 2),
        "shares": {"sampling": SAMPLE_SHARE, "training": TRAIN_SHARE, "evaluation": EVAL_SHARE},
    }
    resolved = DistillConfig.from_dict(values)
    log(f"plan for {config.budget_minutes:g} min: teacher {1e3 * t_teacher:.1f} ms/call, untrained student "
        f"{1e3 * t_student:.2f} ms/call -> {n_train} train + {n_test} test frames per seed and temperature "
        f"(every {interval} / {test_interval} MD steps, {eq} equilibration steps), ~{sample_calls * t_teacher / 60:.1f} min of teacher "
        f"calls, {train_minutes:.1f} min training, {md_steps} NVE steps")
    return resolved


def training_seconds(config: DistillConfig, seconds_spent: float) -> tuple[float, str]:
    """Seconds of training for a run that has already spent ``seconds_spent`` (the stages before
    training), and why. The planned ``train_minutes`` — unless the planner chose them (``plan``
    ``train_minutes_auto``) and the stages before overran: then training gets what is left of the
    budget after the evaluation share, but never less than a quarter of the plan (a student too
    short-trained to evaluate helps no one; the report shows the overrun)."""
    planned = 60.0 * config.train_minutes
    if not config.plan.get("train_minutes_auto"):
        return planned, "as configured"
    budget = 60.0 * config.budget_minutes
    left = budget * (1.0 - EVAL_SHARE - 0.05) - seconds_spent
    if left >= planned:
        return planned, "as planned"
    seconds = max(0.25 * planned, left)
    return seconds, (f"shortened from {planned / 60:.1f} min: the stages before took {seconds_spent / 60:.1f} min "
                     f"of the {config.budget_minutes:g}-min budget")


def estimate_calls(config: DistillConfig, n_seeds: int) -> int:
    """Teacher calls the sampling and labeling stages of a resolved config make (for progress bars)."""
    eq = config.md_equilibration or 0
    runs = n_seeds * (len(config.train_temperatures) + len(config.test_temperatures))
    frames = n_seeds * (len(config.train_temperatures) * config.train_samples * (config.md_interval + 2 * config.hvp)
                        + len(config.test_temperatures) * config.test_samples * config.test_interval)
    return int(runs * eq + frames)
