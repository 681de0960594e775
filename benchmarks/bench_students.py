"""Student single-point speed beside the teachers: ms per call, one structure per call, unbatched.

Every call goes through the path an ASE calculator takes without caching: ``atoms ->
models.atoms_to_batch`` (vesin neighbor list) ``-> models.predict`` (energy + forces, + stress for
periodic cells) ``-> numpy``. Before each call the atoms move by ±1e-3 Å (as in MD), so no
calculator can reuse a cached result; teachers are ASE calculators called with the same atoms
(``get_potential_energy`` + ``get_forces`` [+ ``get_stress``]). All entries of a structure run
interleaved, round after round, at 1 thread and at all threads (torch intra-op threads; xTB
uses OpenMP threads through threadpoolctl); the median over rounds is reported. ``NL %`` is the
share of a student call spent building the batch (neighbor list + tensors).

Students are built with random weights (speed does not depend on the values) for the species of
each structure, at their default size and one smaller and one larger.

    python benchmarks/bench_students.py                   # full run (a few minutes)
    python benchmarks/bench_students.py --quick           # smoke run: default sizes, EMT only
    python benchmarks/bench_students.py --json out.json --teachers emt,gfn2-xtb,sevennet-0

``--train`` measures instead the **training time to a given validation force MAE**: a deterministic
EMT-labeled set (``generate.iter_dataset``: rattled bulk cells, clusters and molecules, MD snapshots;
``--train-structures``, default 1000) is written once to a temporary ASE db, and every student
(``--models`` at ``--sizes``, default sizes only) is trained on it with ``training.train`` at
``--threads`` threads (default 1), for ``--train-minutes`` of training each, with the same seed, split
(group split, 10 % validation) and options as ``mlff-distiller distill`` (batch 4, lr 5e-3, cosine decay
over the time budget, no early stopping). Times come from the ``elapsed_s`` column of the run's
metrics.csv (training wall clock since the fit started, validation included, data preparation not);
the table gives, per ``--targets`` threshold (meV/Å), the time at which the validation force MAE
first fell below it. With the cosine schedule the learning rate depends on the budget, so compare
students at the same ``--train-minutes``.

    python benchmarks/bench_students.py --train                        # 1000 structures, 10 min per student
    python benchmarks/bench_students.py --train --quick                # smoke run: 60 structures, 0.3 min each
    python benchmarks/bench_students.py --train --models painn --sizes small,default --train-minutes 5 --json t.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from mlff_distiller.models import atoms_to_batch, available_models, build_model, predict
from mlff_distiller.structures import builtin

STRUCTURES = ["aspirin", "cu64", "si216"]
TEACHERS = ["emt", "gfn2-xtb", "sevennet-0"]
#: EMT's elements (Al Ni Cu Pd Ag Pt Au; H C N O are ASE's toy parameters)
EMT_ELEMENTS = {1, 6, 7, 8, 13, 28, 29, 46, 47, 78, 79}
#: sizes benchmarked per student: (label, hyperparameters); "default" is build_model's default
SIZES = {
    "schnet": [("small", {"hidden": 32}), ("default", {}), ("large", {"hidden": 128})],
    "painn": [("small", {"hidden": 16}), ("default", {}), ("large", {"layers": 3})],
}
CUTOFF = 5.0


@dataclass
class Entry:
    label: str
    kind: str  # "student" | "teacher" | "batch"
    call: Callable[[object], None]
    params: Optional[int] = None
    times: dict = field(default_factory=dict)  # threads -> list of ms per call (one per round)


def student_entry(name: str, size: str, hyper: dict, atoms, cutoff: float) -> Entry:
    model = build_model(name, species=sorted(set(atoms.numbers.tolist())), cutoff=cutoff, **hyper).eval()
    periodic = bool(atoms.pbc.any())

    def call(a):
        out = predict(model, atoms_to_batch(a, cutoff), stress=periodic)
        out["energy"].numpy(), out["forces"].numpy()

    label = f"{name} {size}" + "".join(f" {k}={v}" for k, v in model.config.items() if k in ("hidden", "layers"))
    return Entry(label, "student", call, model.num_parameters())


def batch_entry(atoms, cutoff: float) -> Entry:
    return Entry("(atoms_to_batch alone)", "batch", lambda a: atoms_to_batch(a, cutoff))


def teacher_calculator(name: str):
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if name == "gfn2-xtb":
        from tblite.ase import TBLite

        return TBLite(method="GFN2-xTB", verbosity=0)
    if name == "sevennet-0":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sevenn.calculator import SevenNetCalculator

            return SevenNetCalculator("7net-0", device="cpu")
    raise ValueError(f"unknown teacher {name!r}; choose from {TEACHERS}")


def teacher_applies(name: str, atoms) -> bool:
    if name == "emt":
        return set(atoms.numbers.tolist()) <= EMT_ELEMENTS
    if name == "gfn2-xtb":
        return not atoms.pbc.any()  # molecules only (does not converge on metal cells here)
    return True


def teacher_entry(name: str, calc, atoms) -> Entry:
    periodic = bool(atoms.pbc.any())

    def call(a):
        a.calc = calc
        a.get_potential_energy()
        a.get_forces()
        if periodic:
            a.get_stress()

    return Entry(name, "teacher", call)


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass


def time_structure(atoms, entries: list[Entry], threads: list[int], rounds: int, calls: int, budget: float) -> None:
    """Interleaved timing: per round, per thread count, every entry runs up to ``calls`` calls
    (fewer for slow entries: about ``budget`` seconds per entry and round, at least one call)."""
    moved = atoms.copy()
    sign = 1.0
    count = {}
    for n in threads:  # warm-up (first calls compile kernels, load models, start SCF)
        set_threads(n)
        for e in entries:
            e.call(moved)
            start = time.perf_counter()
            e.call(moved)
            per_call = time.perf_counter() - start
            count[e.label, n] = max(1, min(calls, int(budget / max(per_call, 1e-9))))
    for _ in range(rounds):
        for n in threads:
            set_threads(n)
            for e in entries:
                k = count[e.label, n]
                start = time.perf_counter()
                for _ in range(k):
                    sign = -sign
                    moved.positions += sign * 1e-3
                    e.call(moved)
                e.times.setdefault(n, []).append((time.perf_counter() - start) / k * 1e3)


def run(structures, teachers, models, sizes, threads, rounds, calls, cutoff, budget=0.3) -> list[dict]:
    calculators = {}
    for t in teachers:
        try:
            calculators[t] = teacher_calculator(t)
        except ImportError as exc:
            print(f"teacher {t} not available: {exc}", file=sys.stderr)
    rows = []
    for sname in structures:
        atoms = builtin(sname)
        entries = [teacher_entry(t, c, atoms) for t, c in calculators.items() if teacher_applies(t, atoms)]
        entries.append(batch_entry(atoms, cutoff))
        for m in models:
            for size, hyper in SIZES.get(m, [("default", {})]):
                if size in sizes:
                    entries.append(student_entry(m, size, hyper, atoms, cutoff))
        start = time.perf_counter()
        time_structure(atoms, entries, threads, rounds, calls, budget)
        print(f"{sname}: {len(entries)} entries timed in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        ms = {e.label: {n: statistics.median(e.times[n]) for n in threads} for e in entries}
        batch_ms = ms["(atoms_to_batch alone)"]
        for e in entries:
            if e.kind == "batch":
                continue
            row = {"structure": sname, "natoms": len(atoms), "model": e.label, "kind": e.kind, "params": e.params}
            for n in threads:
                row[f"ms_{n}t"] = ms[e.label][n]
                for t in calculators:
                    if t in ms and e.kind == "student":
                        row[f"x_{t}_{n}t"] = ms[t][n] / ms[e.label][n]
                if e.kind == "student":
                    row[f"nl_share_{n}t"] = batch_ms[n] / ms[e.label][n]
            rows.append(row)
    return rows


def print_table(rows: list[dict], threads: list[int], teachers: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"single point, ms per call (median), threads {threads}; ×T = teacher ms / student ms")
    for col in ["structure", "model", "params"]:
        table.add_column(col)
    for n in threads:
        table.add_column(f"ms {n}t", justify="right")
    for n in threads:
        for t in teachers:
            table.add_column(f"×{t} {n}t", justify="right")
    table.add_column(f"NL % {threads[0]}t", justify="right")
    for r in rows:
        cells = [f"{r['structure']} ({r['natoms']})", r["model"], "" if r["params"] is None else f"{r['params']:,}"]
        cells += [f"{r[f'ms_{n}t']:.2f}" for n in threads]
        cells += [f"{r[f'x_{t}_{n}t']:.1f}" if f"x_{t}_{n}t" in r else "" for n in threads for t in teachers]
        cells.append(f"{100 * r[f'nl_share_{threads[0]}t']:.0f}" if f"nl_share_{threads[0]}t" in r else "")
        table.add_row(*cells)
    Console(width=250).print(table)


# -- training time to a validation force MAE (--train) ---------------------------------------------
#: validation force MAE thresholds, meV/Å
TRAIN_TARGETS = [100.0, 50.0, 25.0, 20.0]
#: the options ``mlff-distiller distill`` trains with (distill.config / distill.stages._train), without
#: early stopping (every student gets the whole budget); the group split keeps MD runs whole
TRAIN_OPTIONS = dict(batch_size=4, lr=5e-3, lr_schedule="cosine", early_stopping_patience=0, val=0.1, split="group")


def make_training_data(folder, n: int, seed: int, max_atoms: int):
    """``n`` EMT-labeled structures of ``generate.iter_dataset`` (bulk cells, clusters, molecules) in an
    ASE db under ``folder``; an existing file of the same parameters is reused (the data are deterministic)."""
    from pathlib import Path

    from mlff_distiller.data.writers import write_structures
    from mlff_distiller.generate import iter_dataset
    from mlff_distiller.teachers import get_teacher

    path = Path(folder) / f"emt-n{n}-seed{seed}-max{max_atoms}.db"
    if path.exists():
        return path
    teacher = get_teacher("emt")
    start = time.perf_counter()
    partial = path.with_name(path.stem + ".partial.db")
    partial.unlink(missing_ok=True)
    write_structures(partial, iter_dataset(n, seed, teacher=teacher.calculator(), max_atoms=max_atoms),
                     metadata={"teacher": teacher.info()})
    partial.rename(path)
    print(f"training data: {n} EMT structures in {time.perf_counter() - start:.0f} s -> {path}", file=sys.stderr, flush=True)
    return path


def read_curve(metrics_csv) -> list[dict]:
    """Per epoch of a run's metrics.csv: epoch, elapsed_s (training wall clock) and val_forces_mae (meV/Å)."""
    import csv

    curve = []
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("elapsed_s") and row.get("val_forces_mae"):
                curve.append({"epoch": int(row["epoch"]), "elapsed_s": float(row["elapsed_s"]),
                              "val_forces_mae": float(row["val_forces_mae"])})
    return curve


def time_to_targets(curve: list[dict], targets: list[float]) -> dict[str, Optional[float]]:
    """Per target (meV/Å): elapsed_s of the first epoch whose validation force MAE is below it, else None."""
    out = {}
    for target in targets:
        hit = next((c for c in curve if c["val_forces_mae"] < target), None)
        out[f"{target:g}"] = None if hit is None else hit["elapsed_s"]
    return out


def train_student(data, name: str, size: str, hyper: dict, out, *, minutes: float, threads: int, seed: int,
                  cutoff: float, targets: list[float]) -> dict:
    from mlff_distiller.models import load, read_metadata
    from mlff_distiller.training import train

    start = time.perf_counter()
    result = train(str(data), out_dir=str(out), model=name, model_options=dict(hyper), cutoff=cutoff, epochs=10**6,
                   seed=seed, max_time=60.0 * minutes, num_threads=threads, progress_bar=False, overwrite=True,
                   **TRAIN_OPTIONS)
    wall = time.perf_counter() - start
    curve = read_curve(result.metrics_csv) if result.metrics_csv is not None else []
    model = load(result.student)
    meta = read_metadata(result.student).get("metadata", {}).get("training", {})
    label = f"{name} {size}" + "".join(f" {k}={v}" for k, v in model.config.items() if k in ("hidden", "layers"))
    best = min(curve, key=lambda c: c["val_forces_mae"]) if curve else None
    train_s = curve[-1]["elapsed_s"] if curve else None
    return {
        "model": label, "name": name, "size": size, "params": model.num_parameters(),
        "epochs": len(curve), "train_s": train_s, "wall_s": wall,
        "s_per_epoch": train_s / len(curve) if curve else None,
        "best_val_forces_mae": None if best is None else best["val_forces_mae"],
        "best_at_s": None if best is None else best["elapsed_s"],
        "final_val_forces_mae": curve[-1]["val_forces_mae"] if curve else None,
        "time_to_mae_s": time_to_targets(curve, targets),
        "stop_reason": result.stop_reason, "num_train": meta.get("num_train"), "num_val": meta.get("num_val"),
        "curve": curve,
    }


def run_training(models, sizes, *, n_structures: int, max_atoms: int, minutes: float, threads: int, seed: int,
                 cutoff: float, targets: list[float], folder) -> list[dict]:
    import logging
    from pathlib import Path

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # "GPU available", tips
    set_threads(threads)
    data = make_training_data(folder, n_structures, seed, max_atoms)
    rows = []
    for m in models:
        for size, hyper in SIZES.get(m, [("default", {})]):
            if size not in sizes:
                continue
            row = train_student(data, m, size, hyper, Path(folder) / f"run-{m}-{size}", minutes=minutes,
                                threads=threads, seed=seed, cutoff=cutoff, targets=targets)
            print(f"{row['model']}: {row['epochs']} epochs in {row['train_s'] or 0:.0f} s, best val force MAE "
                  f"{row['best_val_forces_mae'] if row['best_val_forces_mae'] is not None else float('nan'):.1f} meV/Å",
                  file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def print_training_table(rows: list[dict], targets: list[float], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ["student", "params", "epochs", "s/epoch"]:
        table.add_column(col, justify="left" if col == "student" else "right")
    for t in targets:
        table.add_column(f"s to < {t:g}", justify="right")
    table.add_column("best MAE", justify="right")
    table.add_column("best at s", justify="right")
    for r in rows:
        best = r["best_val_forces_mae"]
        best_text = "-" if best is None else f"{best:.1f}"
        cells = [r["model"], f"{r['params']:,}", str(r["epochs"]),
                 "-" if r["s_per_epoch"] is None else f"{r['s_per_epoch']:.1f}"]
        for t in targets:
            s = r["time_to_mae_s"][f"{t:g}"]
            cells.append(f"{s:.0f}" if s is not None else f"not reached (best {best_text})")
        cells += [best_text, "-" if r["best_at_s"] is None else f"{r['best_at_s']:.0f}"]
        table.add_row(*cells)
    Console(width=250).print(table)


def main_train(a, split) -> list[dict]:
    import tempfile

    if a.threads and len(split(a.threads)) > 1:
        raise SystemExit("--train: --threads takes one thread count")
    threads = int(a.threads) if a.threads else 1
    n = a.train_structures or (60 if a.quick else 1000)
    minutes = a.train_minutes if a.train_minutes is not None else (0.3 if a.quick else 10.0)
    sizes = split(a.sizes) if a.sizes is not None else ["default"]
    targets = [float(x) for x in split(a.targets)]
    models = split(a.models)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores: other processes share the CPU; "
              "training times are longer than on an idle machine", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_students_train_") as tmp:
        folder = a.train_dir or tmp
        os.makedirs(folder, exist_ok=True)
        rows = run_training(models, sizes, n_structures=n, max_atoms=a.max_atoms, minutes=minutes, threads=threads,
                            seed=a.seed, cutoff=a.cutoff, targets=targets, folder=folder)
    split_text = f"{rows[0]['num_train']}/{rows[0]['num_val']} train/val" if rows else ""
    print_training_table(rows, targets, f"training time (s) to validation force MAE < target (meV/Å): {n} EMT structures "
                         f"({split_text}), {threads} thread(s), {minutes:g} min per student, seed {a.seed}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"mode": "train", "structures": n, "max_atoms": a.max_atoms, "threads": threads,
                       "train_minutes": minutes, "seed": a.seed, "cutoff": a.cutoff, "targets": targets,
                       "options": TRAIN_OPTIONS, "load_average": load, "torch": torch.__version__, "rows": rows},
                      f, indent=1)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--structures", default=",".join(STRUCTURES), help="comma list of builtin structures")
    p.add_argument("--teachers", default=None, help=f"comma list of {TEACHERS} ('' for none); default all (EMT only with --quick)")
    p.add_argument("--models", default=",".join(available_models()))
    p.add_argument("--sizes", default=None, help="comma list of small,default,large (default all; default only with --quick or --train)")
    p.add_argument("--threads", default=None, help="comma list of thread counts (default: 1 and all cores; --train: one count, default 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median reported); default 3, 1 with --quick")
    p.add_argument("--calls", type=int, default=None, help="most calls per entry per round; default 20, 2 with --quick")
    p.add_argument("--budget", type=float, default=0.3, help="seconds per entry and round (slow entries make fewer calls)")
    p.add_argument("--cutoff", type=float, default=CUTOFF, help="student cutoff, Å")
    p.add_argument("--quick", action="store_true", help="smoke run: default sizes, EMT only, 1 round of 2 calls (--train: 60 structures, 0.3 min per student)")
    p.add_argument("--json", default=None, help="write the rows as JSON to this path")
    t = p.add_argument_group("training time to a validation force MAE (--train)")
    t.add_argument("--train", action="store_true", help="train each student instead of timing single points")
    t.add_argument("--train-structures", type=int, default=None, help="EMT structures generated (default 1000, 60 with --quick)")
    t.add_argument("--max-atoms", type=int, default=64, help="largest generated structure (generate.iter_dataset)")
    t.add_argument("--train-minutes", type=float, default=None, help="training time per student (default 10, 0.3 with --quick)")
    t.add_argument("--targets", default=",".join(f"{x:g}" for x in TRAIN_TARGETS), help="validation force MAE thresholds, meV/Å")
    t.add_argument("--seed", type=int, default=0, help="data, split and initial weights")
    t.add_argument("--train-dir", default=None, help="keep the data and runs here (default: a temporary directory)")
    a = p.parse_args(argv)
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    if a.train:
        return main_train(a, split)
    teachers = split(a.teachers) if a.teachers is not None else (["emt"] if a.quick else list(TEACHERS))
    sizes = split(a.sizes) if a.sizes is not None else (["default"] if a.quick else ["small", "default", "large"])
    all_threads = os.cpu_count() or 1
    threads = [int(x) for x in split(a.threads)] if a.threads else sorted({1, all_threads})
    rounds = a.rounds or (1 if a.quick else 3)
    calls = a.calls or (2 if a.quick else 20)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5 * all_threads:
        print(f"warning: load average {load:.1f} on {all_threads} cores: other processes share the CPU; "
              "multi-thread timings (OpenMP) suffer most, ratios within this run stay comparable", file=sys.stderr)
    rows = run(split(a.structures), teachers, split(a.models), sizes, threads, rounds, calls, a.cutoff, a.budget)
    print_table(rows, threads, teachers)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"threads": threads, "load_average": load, "cutoff": a.cutoff, "rounds": rounds, "calls": calls, "budget": a.budget,
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
