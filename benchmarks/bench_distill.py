"""Distillation end to end against the issue's target, one ``mlff-distiller distill`` command per case.

Target (issue 16): with SevenNet-0 as the teacher, on aspirin and on a 64-atom metal (cu64) or a
216-atom silicon cell, a student **≥ 20× faster per single point** (unbatched, same threads) with
**force MAE vs the teacher ≤ 40 meV/Å** on held-out structures of the sampled distribution,
**stable in 10 ps of NVE**, from one ``distill`` command in **≤ 1 hour** on a 2-core machine —
with and without Hessian terms.

Each case runs ``mlff-distiller distill --teacher T --structures S --hvp K --budget-minutes B
--md-steps N --out OUT/<case>`` in a subprocess (exactly what a user types), then reads its
``report.json``. The NVE length is 10 ps unless ``--md-ps`` says otherwise (time step 0.5 fs with
hydrogen, 2 fs without). A finished case is not rerun (delete its directory or pass --overwrite).

    python benchmarks/bench_distill.py                                   # the full target: 4 runs of 60 min
    python benchmarks/bench_distill.py --budget-minutes 15 --systems aspirin --hvp 0,2
    python benchmarks/bench_distill.py --teacher emt --budget-minutes 2 --md-ps 0.5   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TARGET_SPEEDUP = 20.0
TARGET_FORCE_MAE = 0.040  # eV/Å
TARGET_MD_PS = 10.0


def _timestep_fs(system: str) -> float:
    from mlff_distiller.structures import builtin

    try:
        atoms = builtin(system)
    except Exception:
        return 0.5
    return 0.5 if 1 in set(atoms.numbers.tolist()) else 2.0


def run_case(args, system: str, hvp: int, out: Path) -> dict:
    run_dir = out / f"{system}_hvp{hvp}"
    report_path = run_dir / "report.json"
    md_steps = int(round(args.md_ps * 1000 / _timestep_fs(system)))
    cmd = [sys.executable, "-m", "mlff_distiller.cli", "distill", "--teacher", args.teacher, "--structures", system,
           "--hvp", str(hvp), "--budget-minutes", str(args.budget_minutes), "--md-steps", str(md_steps),
           "--out", str(run_dir), "--model", args.model, "--no-progress"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    for option in args.distill_option or []:
        cmd += option.split(maxsplit=1)
    if args.overwrite:
        cmd.append("--overwrite")
    seconds = None
    if not report_path.exists() or args.overwrite:
        print("$ " + " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"system": system, "hvp": hvp, "error": f"exit code {proc.returncode}", "command": " ".join(cmd)}
    report = json.loads(report_path.read_text())
    if seconds is None:  # an earlier run: sum its stage times
        markers = run_dir / ".stages"
        seconds = sum(json.loads(p.read_text()).get("seconds", 0) for p in markers.glob("*.done") if "." not in p.stem)
    speed, acc, md = report["speed"], report["accuracy"], report.get("md") or {}
    row = {
        "system": system,
        "hvp": hvp,
        "atoms": report["data"]["atoms"] // max(report["data"]["structures"], 1),
        "student": report["student"]["name"],
        "params": report["student"].get("parameters"),
        "teacher_ms": speed["teacher"]["ms_per_call"],
        "student_ms": speed["student"]["ms_per_call"],
        "speedup": speed["speedup"],
        "force_mae_meV": 1e3 * acc["forces"]["mae"],
        "energy_mae_meV_atom": 1e3 * acc["energy_per_atom"]["mae"],
        "nve_ps": md.get("time_ps"),
        "nve_drift_meV_atom_ps": None if md.get("drift_ev_per_atom_per_ps") is None else 1e3 * md["drift_ev_per_atom_per_ps"],
        "stable": md.get("stable"),
        "minutes": seconds / 60.0,
        "threads": speed.get("threads"),
        "report": str(run_dir / "report.md"),
        "command": " ".join(cmd),
    }
    row["targets"] = {
        "speedup>=20": row["speedup"] >= TARGET_SPEEDUP,
        "force_mae<=40": row["force_mae_meV"] <= 1e3 * TARGET_FORCE_MAE,
        "stable_10ps": bool(row["stable"]) and (row["nve_ps"] or 0) >= TARGET_MD_PS - 1e-9,
        "<=60min": row["minutes"] <= 60.0,
    }
    return row


def print_table(rows: list[dict]) -> None:
    header = ("system", "HVP K", "teacher ms", "student ms", "speed-up", "force MAE meV/Å", "E MAE meV/at",
              "NVE ps", "drift meV/at/ps", "stable", "minutes", "targets met")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        if "error" in r:
            print(f"| {r['system']} | {r['hvp']} | {r['error']} |" + " |" * (len(header) - 3))
            continue
        met = sum(r["targets"].values())
        print(f"| {r['system']} ({r['atoms']} at.) | {r['hvp']} | {r['teacher_ms']:.1f} | {r['student_ms']:.2f} | "
              f"{r['speedup']:.1f}× | {r['force_mae_meV']:.1f} | {r['energy_mae_meV_atom']:.2f} | {r['nve_ps']:.3g} | "
              f"{r['nve_drift_meV_atom_ps']:.3g} | {'yes' if r['stable'] else 'NO'} | {r['minutes']:.1f} | "
              f"{met}/4 ({', '.join(k for k, v in r['targets'].items() if not v) or 'all'}{' missed' if met < 4 else ''}) |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="sevennet-0")
    parser.add_argument("--systems", default="aspirin,cu64", help="comma-separated seed structures")
    parser.add_argument("--hvp", default="0,2", help="comma-separated HVP counts (0 = no Hessian terms)")
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--md-ps", type=float, default=TARGET_MD_PS, help="NVE length of the stability check")
    parser.add_argument("--model", default="painn")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="bench_distill_runs")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--distill-option", action="append", help="extra distill option, e.g. '--cutoff 4.5'")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
        for hvp in [int(k) for k in args.hvp.split(",")]:
            rows.append(run_case(args, system, hvp, out))
            print_table(rows[-1:])
    print(f"\nteacher {args.teacher}, budget {args.budget_minutes:g} min per run, {os.cpu_count()} cores; targets: "
          f"≥{TARGET_SPEEDUP:g}× per single point, force MAE ≤{1e3 * TARGET_FORCE_MAE:g} meV/Å, stable {TARGET_MD_PS:g} ps NVE, "
          "≤60 min\n")
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
