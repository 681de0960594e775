"""What one labeling process (the main one, a local worker or a Ray actor) does: hold one teacher and
one calculator, and label tasks — lists of ``(index, arrays)`` — into ``(index, Structure or error)``.
Every labeled Structure carries its input index as ``extras["source_index"]`` (a provenance key).

A task carries plain arrays (numbers, positions, cell, pbc) and the provenance of each structure; the
per-structure RNG for HVP directions is ``structure_rng(seed, index)``, so results do not depend on which
process labels which structure.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class LabelSettings:
    """What ``label_structure`` is asked for every structure of a run (JSON-able)."""

    hvp: int = 0
    hvp_step: Optional[float] = None
    hessian: bool = False
    hvp_method: str = "auto"
    seed: int = 0
    reuse_labels: bool = False

    def as_dict(self) -> dict:
        return {"hvp": self.hvp, "hvp_step": self.hvp_step, "hessian": self.hessian, "hvp_method": self.hvp_method,
                "seed": self.seed, "reuse_labels": self.reuse_labels}


def task_item(index: int, structure, reuse_labels: bool = False) -> tuple:
    """The payload of one input structure (a data-layer ``Structure``); with ``reuse_labels`` its energy,
    forces (, stress, per-atom energies) travel along to be kept instead of recomputed."""
    from .label import provenance

    results = None
    if reuse_labels and structure.energy is not None and structure.forces is not None:
        results = {"energy": np.asarray(structure.energy, dtype=np.float64),
                   "forces": np.asarray(structure.forces, dtype=np.float64)}
        if structure.stress is not None:
            results["stress"] = np.asarray(structure.stress, dtype=np.float64)
        if (structure.extras or {}).get("energies") is not None:
            results["energies"] = np.asarray(structure.extras["energies"], dtype=np.float64)
    return (int(index), np.asarray(structure.numbers), np.asarray(structure.positions, dtype=np.float64),
            np.asarray(structure.cell, dtype=np.float64), np.asarray(structure.pbc, dtype=bool),
            provenance(structure.extras or {}), results)


def limit_threads(threads: Optional[int]) -> None:
    """Limit torch (when imported) to ``threads`` threads; None leaves it alone."""
    if threads is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))


class ThreadLimits:
    """Within ``with limits:``, torch and every OpenMP/BLAS runtime loaded when it was made use ``threads``
    threads (restored after). Scanning the loaded libraries costs milliseconds, so it is done once.

    Besides speed, this makes labels reproducible: tblite's OpenMP reductions differ in the last bits
    between runs with more than one thread."""

    def __init__(self, threads: Optional[int]) -> None:
        self.threads = threads
        self.controller = None
        if threads is not None:
            try:
                from threadpoolctl import ThreadpoolController

                self.controller = ThreadpoolController()
            except ImportError:  # pragma: no cover - threadpoolctl is a dependency
                pass

    @contextmanager
    def __call__(self):
        if self.threads is None:
            yield
            return
        torch = sys.modules.get("torch")
        before = torch.get_num_threads() if torch is not None else None
        limit_threads(self.threads)
        try:
            if self.controller is None:
                yield
            else:
                with self.controller.limit(limits=int(self.threads)):
                    yield
        finally:
            if before is not None and torch.get_num_threads() != before:
                torch.set_num_threads(before)


class Labeler:
    """One teacher + one calculator, labeling tasks. ``teacher_spec`` is a Teacher (used as is), a
    picklable Teacher, or ``(name, options)`` rebuilt with ``get_teacher``."""

    def __init__(self, teacher_spec, settings: LabelSettings, threads: Optional[int] = 1) -> None:
        from .base import Teacher
        from .registry import get_teacher

        limit_threads(threads)
        if isinstance(teacher_spec, Teacher):
            self.teacher = teacher_spec
        else:
            name, options = teacher_spec
            self.teacher = get_teacher(name, **options)
        self.calc = self.teacher.calculator()
        limit_threads(threads)  # the calculator may have imported torch just now
        self.settings = settings
        self.threads = threads
        self.limits = ThreadLimits(threads)  # after the teacher loaded its libraries

    def label_one(self, item: tuple):
        from ase import Atoms

        from .hvp import structure_rng
        from .label import label_structure

        index, numbers, positions, cell, pbc, info, results = item
        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
        atoms.info.update(info)
        s = self.settings
        rng = structure_rng(s.seed, index) if s.hvp else None
        try:
            structure = label_structure(self.teacher, atoms, hvp=s.hvp, hvp_step=s.hvp_step, rng=rng,
                                        hessian=s.hessian, hvp_method=s.hvp_method, calc=self.calc,
                                        results=results)
        except Exception as exc:  # a teacher may raise anything: record it, go on
            self.calc = self._fresh_calc()
            return index, {"index": index, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                           "where": _where(exc)}
        structure.extras["source_index"] = int(index)  # this run's input index (replaces one the input carried)
        return index, structure

    def _fresh_calc(self):
        try:
            return self.teacher.calculator()
        except Exception:  # pragma: no cover - keep the old one if a rebuild fails
            return self.calc

    def label(self, task: list) -> tuple[list, float]:
        """``([(index, Structure | failure dict)], seconds spent)`` for the items of ``task``."""
        t0 = time.perf_counter()
        with self.limits():
            out = [self.label_one(item) for item in task]
        return out, time.perf_counter() - t0


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"


# -- local worker processes (spawn / forkserver) ---------------------------------------------------
_LABELER: Optional[Labeler] = None


def init_process(teacher_spec, settings: LabelSettings, threads: Optional[int]) -> None:
    global _LABELER
    _LABELER = Labeler(teacher_spec, settings, threads)


def run_task(task: list) -> tuple[list, float]:
    assert _LABELER is not None, "worker not initialised"
    return _LABELER.label(task)
