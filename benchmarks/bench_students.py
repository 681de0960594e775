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


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--structures", default=",".join(STRUCTURES), help="comma list of builtin structures")
    p.add_argument("--teachers", default=None, help=f"comma list of {TEACHERS} ('' for none); default all (EMT only with --quick)")
    p.add_argument("--models", default=",".join(available_models()))
    p.add_argument("--sizes", default=None, help="comma list of small,default,large (default all; default only with --quick)")
    p.add_argument("--threads", default=None, help="comma list of thread counts (default: 1 and all cores)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median reported); default 3, 1 with --quick")
    p.add_argument("--calls", type=int, default=None, help="most calls per entry per round; default 20, 2 with --quick")
    p.add_argument("--budget", type=float, default=0.3, help="seconds per entry and round (slow entries make fewer calls)")
    p.add_argument("--cutoff", type=float, default=CUTOFF, help="student cutoff, Å")
    p.add_argument("--quick", action="store_true", help="smoke run: default sizes, EMT only, 1 round of 2 calls")
    p.add_argument("--json", default=None, help="write the rows as JSON to this path")
    a = p.parse_args(argv)
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
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
