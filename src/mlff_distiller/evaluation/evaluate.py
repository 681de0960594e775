"""``evaluate``: a student against a teacher's labels on held-out structures, timed like for like, run in NVE.

>>> report = evaluate("student.safetensors", "test.db", teacher="sevennet-0", out_dir="eval/")  # doctest: +SKIP
>>> report["accuracy"]["forces"]["mae"], report["speed"]["speedup"]                           # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from .md import nve_stability
from .metrics import compute_errors
from .plots import write_plots
from .report import environment, write_report
from .speed import batched_throughput, compare_speed, time_calls

__all__ = ["evaluate", "read_labeled", "describe_provenance", "student_info"]

PathLike = Union[str, os.PathLike]

#: provenance keys (``data.keys.PROVENANCE_KEYS``) summarised in the report
PROVENANCE_KEYS = ("sample_method", "sample_temperature", "sample_group")


def read_labeled(data: Union[PathLike, Sequence[Atoms]], fmt: Optional[str] = None) -> tuple[list[Atoms], list[dict], list[dict]]:
    """Structures and their labels: (atoms without calculators, reference dicts with ``energy`` eV,
    ``forces`` [N, 3] eV/Å, ``stress`` [3, 3] eV/Å³ or None, provenance dicts).

    ``data`` is a labeled file any reader opens, or ``ase.Atoms`` whose calculator holds the labels.
    """
    atoms_list, refs, prov = [], [], []
    if isinstance(data, (str, os.PathLike)):
        from ..data.readers import guess_format, normalize_format, open_reader

        path = os.fspath(data)
        if not os.path.exists(path):
            raise FileNotFoundError(2, "no such file or directory", path)
        reader = open_reader(path, normalize_format(fmt) if fmt else guess_format(path))
        try:
            structures = reader.read_many(range(len(reader)))
        finally:
            reader.close()
        for k, s in enumerate(structures):
            if s.energy is None or s.forces is None:
                missing = "energy" if s.energy is None else "forces"
                raise ValueError(f"{path}: structure {k} has no {missing!r} label; evaluate needs teacher labels")
            pbc = np.asarray(s.pbc, dtype=bool)
            atoms_list.append(Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=pbc))
            refs.append({"energy": float(s.energy), "forces": np.asarray(s.forces, np.float64),
                         "stress": None if s.stress is None else np.asarray(s.stress, np.float64)})
            prov.append({k2: _plain(v) for k2, v in (s.extras or {}).items() if k2 in PROVENANCE_KEYS})
    else:
        for k, a in enumerate(data):
            if a.calc is None:
                raise ValueError(f"structure {k} has no calculator holding labels")
            try:
                energy, forces = a.get_potential_energy(), a.get_forces()
            except Exception as exc:
                raise ValueError(f"structure {k}: no energy/forces labels ({exc})") from exc
            stress = None
            if "stress" in (a.calc.results or {}):
                from ase.stress import voigt_6_to_full_3x3_stress

                stress = voigt_6_to_full_3x3_stress(np.asarray(a.calc.results["stress"]))
            atoms_list.append(Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc))
            refs.append({"energy": float(energy), "forces": np.asarray(forces, np.float64), "stress": stress})
            prov.append({k2: _plain(v) for k2, v in a.info.items() if k2 in PROVENANCE_KEYS})
    if not atoms_list:
        raise ValueError("no structures to evaluate")
    return atoms_list, refs, prov


def _plain(value):
    if isinstance(value, np.ndarray) and value.shape == ():
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def describe_provenance(prov: Sequence[dict]) -> Optional[str]:
    """One sentence on how the structures were sampled (method, temperature, group counts)."""
    if not any(prov):
        return None
    parts = []
    for key, label in (("sample_method", "method"), ("sample_temperature", "temperature (K)"), ("sample_group", "group")):
        counts = Counter(p.get(key) for p in prov if p.get(key) is not None)
        if counts:
            parts.append(f"{label}: " + ", ".join(f"{v} ×{n}" for v, n in sorted(counts.items(), key=lambda kv: str(kv[0]))))
    return "; ".join(parts) or None


def student_info(calc) -> dict:
    model = calc.model
    info = {"name": model.config.get("name", type(model).__name__), "parameters": int(sum(p.numel() for p in model.parameters())),
            "cutoff": model.cutoff, "species": list(model.species), "config": model.config}
    if calc.path:
        info["path"] = calc.path
    return info


def evaluate(
    student,
    data: Union[PathLike, Sequence[Atoms]],
    *,
    teacher=None,
    out_dir: Optional[PathLike] = None,
    device: str = "cpu",
    num_threads: Optional[int] = None,
    speed_structures: int = 20,
    speed_rounds: int = 3,
    speed_max_seconds: Optional[float] = 120.0,
    batch_size: int = 16,
    md_steps: int = 2000,
    md_timestep_fs: float = 0.5,
    md_temperature: Optional[float] = None,
    md_interval: int = 10,
    held_out: Optional[str] = None,
    data_format: Optional[str] = None,
    plots: bool = True,
    log: Callable[[str], None] = lambda text: None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict:
    """Evaluate ``student`` (path, model or StudentCalculator) on labeled ``data``.

    ``teacher`` (a name for ``get_teacher``, a Teacher or an ASE calculator) is timed against the
    student on the same ``speed_structures`` held-out structures; without it only the student is
    timed. ``md_steps`` = 0 skips the NVE run (its temperature defaults to the held-out sampling
    temperature, else 300 K). With ``out_dir`` the plots, ``report.json`` and ``report.md`` are
    written there. Returns the report dict (see ``evaluation.report``).
    """
    from ..calculator import StudentCalculator

    calc = student if isinstance(student, StudentCalculator) else StudentCalculator(student, device=device, num_threads=num_threads)
    atoms_list, refs, prov = read_labeled(data, data_format)
    report: dict = {"student": student_info(calc)}
    teacher_calc = None
    if teacher is not None:
        teacher_calc, report["teacher"] = _teacher(teacher)

    log(f"predicting {len(atoms_list)} held-out structures with the student")
    want_stress = any(r["stress"] is not None for r in refs)
    preds = calc.predict(atoms_list, stress=want_stress)
    errors = compute_errors(preds, refs)
    report["data"] = {
        "path": os.fspath(data) if isinstance(data, (str, os.PathLike)) else None,
        "structures": len(atoms_list),
        "atoms": int(errors.natoms.sum()),
        "held_out": held_out or describe_provenance(prov),
    }
    report["accuracy"] = errors.summary

    timed = atoms_list[: max(2, speed_structures)]
    if teacher_calc is not None:
        log(f"timing teacher and student, one structure per call, {len(timed)} structures × {speed_rounds} rounds")
        report["speed"] = compare_speed(teacher_calc, calc, timed, rounds=speed_rounds, num_threads=num_threads,
                                        max_seconds=speed_max_seconds)
    else:
        log("timing the student, one structure per call")
        report["speed"] = {"student": time_calls(calc, timed, rounds=speed_rounds, num_threads=num_threads),
                           "threads": num_threads, "structures": len(timed),
                           "method": "one structure per call through ASE (energy + forces), warm-up dropped, median"}
    report["batched"] = batched_throughput(calc, atoms_list[:batch_size], batch_size=batch_size, num_threads=num_threads)

    if md_steps > 0:
        temps = [p.get("sample_temperature") for p in prov if p.get("sample_temperature") is not None]
        temperature = float(md_temperature if md_temperature is not None else (np.median(temps) if temps else 300.0))
        log(f"NVE with the student: {md_steps} steps × {md_timestep_fs} fs from {temperature:.0f} K")
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(done[0], md_steps)

        md_calc = StudentCalculator(calc.model, device=device, num_threads=num_threads)
        report["md"] = nve_stability(md_calc, atoms_list[0], temperature=temperature, timestep_fs=md_timestep_fs,
                                     steps=md_steps, interval=md_interval, progress=tick)
        report["md"]["start"] = "first held-out structure"
    report["environment"] = environment(device)
    if out_dir is not None:
        out_dir = Path(out_dir)
        if plots:
            report["plots"] = write_plots(errors, out_dir, report.get("md"))
        write_report(report, out_dir, title="Evaluation report")
    return report


def _teacher(teacher) -> tuple:
    """(ASE calculator, info dict) for a teacher name, Teacher object or calculator."""
    if isinstance(teacher, str):
        from ..teachers import get_teacher

        teacher = get_teacher(teacher)
    if hasattr(teacher, "calculator") and callable(teacher.calculator):
        return teacher.calculator(), teacher.info()
    cls = type(teacher)
    return teacher, {"name": f"{cls.__module__}:{cls.__qualname__}", "version": "unknown"}
