"""Speed measured like for like: milliseconds per single point, one structure per call.

The teacher and the student are timed on the *same* structures, through the same ASE call
(``atoms.get_forces()`` after a change of positions, so nothing is served from a cache), on the
same device with the same torch thread count. Calls alternate between the two models round by
round, so a busy machine slows both alike; the first ``warmup`` calls of each are discarded and
the median of the rest is reported (with the 10th/90th percentiles). Batched throughput of the
student is measured separately and never mixed into the per-call numbers.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from ase import Atoms

__all__ = ["time_calls", "compare_speed", "batched_throughput", "distinct_structures"]


def distinct_structures(structures: Sequence[Atoms], minimum: int = 2, seed: int = 0) -> list[Atoms]:
    """Copies of ``structures`` (no calculators), padded with slightly rattled copies (1e-3 Å) to at
    least ``minimum`` so consecutive calls never see the same positions."""
    if not structures:
        raise ValueError("no structures to time")
    out = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in structures]
    rng = np.random.default_rng(seed)
    k = 0
    while len(out) < minimum:
        a = out[k % len(structures)].copy()
        a.positions = a.positions + rng.normal(0.0, 1e-3, a.positions.shape)
        out.append(a)
        k += 1
    return out


def _one_round(calc, structures: Sequence[Atoms], stress: bool) -> list[float]:
    """Seconds per ``get_forces`` (and ``get_stress``) call, one per structure, in order."""
    times = []
    for atoms in structures:
        atoms.calc = calc
        t0 = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        if stress:
            atoms.get_stress()
        times.append(time.perf_counter() - t0)
        atoms.calc = None
    return times


def _summary(times: Sequence[float], natoms: float) -> dict:
    ms = np.asarray(times) * 1e3
    return {
        "ms_per_call": float(np.median(ms)),
        "ms_p10": float(np.percentile(ms, 10)),
        "ms_p90": float(np.percentile(ms, 90)),
        "calls": int(ms.size),
        "natoms_mean": float(natoms),
    }


def _with_threads(num_threads: Optional[int]) -> Callable[[], None]:
    """Set torch's thread count; return a function that restores it."""
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    return lambda: torch.set_num_threads(before)


def time_calls(
    calc, structures: Sequence[Atoms], *, rounds: int = 3, warmup: int = 2, stress: bool = False,
    num_threads: Optional[int] = None,
) -> dict:
    """ms per single point of ``calc`` over ``structures`` (``rounds`` passes, ``warmup`` calls dropped)."""
    structures = distinct_structures(structures)
    restore = _with_threads(num_threads)
    try:
        times: list[float] = []
        for _ in range(rounds):
            times += _one_round(calc, structures, stress)
    finally:
        restore()
    kept = times[warmup:] if len(times) > warmup else times
    out = _summary(kept, np.mean([len(a) for a in structures]))
    out["threads"] = int(num_threads if num_threads is not None else torch.get_num_threads())
    return out


def compare_speed(
    teacher_calc, student_calc, structures: Sequence[Atoms], *, rounds: int = 3, warmup: int = 2,
    stress: bool = False, num_threads: Optional[int] = None, max_seconds: Optional[float] = None,
) -> dict:
    """Teacher vs student, ms per single point on the same structures, rounds interleaved.

    ``max_seconds`` bounds the total time: the number of rounds is reduced (never below one after
    the first) when a round of the slower model takes long. Returns ``{"teacher": {...},
    "student": {...}, "speedup": teacher ms / student ms, "threads", "structures"}``.
    """
    structures = distinct_structures(structures)
    restore = _with_threads(num_threads)
    try:
        threads = torch.get_num_threads()
        t_times: list[float] = []
        s_times: list[float] = []
        start = time.perf_counter()
        for r in range(rounds):
            t_times += _one_round(teacher_calc, structures, stress)
            s_times += _one_round(student_calc, structures, stress)
            if max_seconds is not None and time.perf_counter() - start > max_seconds * (r + 1) / rounds:
                break  # this pace would overrun the budget
    finally:
        restore()
    natoms = float(np.mean([len(a) for a in structures]))
    drop = lambda t: t[warmup:] if len(t) > warmup else t  # noqa: E731
    teacher, student = _summary(drop(t_times), natoms), _summary(drop(s_times), natoms)
    return {
        "teacher": teacher,
        "student": student,
        "speedup": teacher["ms_per_call"] / student["ms_per_call"],
        "threads": threads,
        "structures": len(structures),
        "method": "one structure per call through ASE (energy + forces), same structures, same threads, "
        "rounds interleaved, warm-up calls dropped, median",
    }


def batched_throughput(
    student_calc, structures: Sequence[Atoms], *, batch_size: int = 16, rounds: int = 3,
    num_threads: Optional[int] = None,
) -> dict:
    """Student throughput with ``batch_size`` structures per model call (``StudentCalculator.predict``):
    structures/s and ms per structure (median over rounds, after one warm-up round)."""
    structures = distinct_structures(structures)
    batch_size = min(batch_size, len(structures))  # what is actually measured
    restore = _with_threads(num_threads)
    try:
        threads = torch.get_num_threads()
        max_atoms = batch_size * max(len(a) for a in structures)
        student_calc.predict(structures[:batch_size], max_atoms_per_batch=max_atoms)  # warm-up
        per_structure = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            student_calc.predict(structures, max_atoms_per_batch=max_atoms)
            per_structure.append((time.perf_counter() - t0) / len(structures))
    finally:
        restore()
    ms = float(np.median(per_structure) * 1e3)
    return {"ms_per_structure": ms, "structures_per_s": 1e3 / ms, "batch_size": batch_size, "threads": threads}
