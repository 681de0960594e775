"""The loader benchmark runs end to end at a tiny size and prints every path (no timing checks); the
students' training-time benchmark (``bench_students.py --train``) runs at a tiny size."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_loaders.py"

BASELINES = [
    "limit: numpy gather, concatenated",
    "limit: numpy gather, padded",
    "baseline: ASE db select+toatoms loop",
    "baseline: ase.io.iread extxyz loop",
    "baseline: plain h5py loop (guide)",
    "baseline: vesin alone, 5 A, 1 thread",
]


def expected_rows(workers: list[int]) -> list[str]:
    rows = list(BASELINES) + ["ours: packed, graph, no DataLoader", "ours: packed, padded, no DataLoader"]
    for w in workers:
        for source in ("ase", "xyz", "hdf5", "packed", "packed cache"):
            rows += [f"ours: {source}, graph, w{w}", f"ours: {source}, padded, w{w}"]
        rows += [f"ours: packed, graph + NL 5 A on the fly, w{w}", f"ours: packed, graph + stored NL 5 A, w{w}"]
    return rows


def test_benchmark_prints_every_path(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--n-structures", "40", "--batch-size", "8", "--workers", "0,2",
         "--min-time", "0.01", "--min-batches", "1", "--no-pyg", "--data-dir", str(tmp_path),
         "--json", str(tmp_path / "out.json")],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    lines = {line.split("  ")[0].strip(): line for line in table.splitlines() if line.startswith(("limit", "baseline", "ours"))}
    for row in expected_rows([0, 2]):
        assert row in lines, f"missing row {row!r} in\n{table}"
        assert "error" not in lines[row], lines[row]
        fields = lines[row][len(row):].split()
        assert float(fields[0].replace(",", "")) > 0, lines[row]  # samples/s
        assert float(fields[2]) >= 0, lines[row]  # ratio to the limit (tiny for slow paths)
    assert "targets" in table and "ASE db -> packed" in table
    assert (tmp_path / "out.json").exists()
    # the data set was written once in every format, deterministically
    folder = next(tmp_path.glob("emt-n40-*"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["structures.db", "structures.xyz", "structures.h5", "structures.packed.h5", "structures.nl5.packed.h5"]
    )


STUDENTS_BENCH = BENCH.parent / "bench_students.py"


def test_bench_students_training_time_to_force_mae(tmp_path):
    """``bench_students.py --train --quick`` at a tiny size: one row per student with a numeric best validation
    force MAE and a time (or "not reached") per threshold, in the table and the JSON (no accuracy checks)."""
    out = tmp_path / "train.json"
    result = subprocess.run(
        [sys.executable, str(STUDENTS_BENCH), "--train", "--quick", "--train-structures", "30", "--max-atoms", "16",
         "--train-minutes", "0.03", "--sizes", "small", "--models", "painn,schnet", "--targets", "100000,1",
         "--train-dir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    for header in ("student", "params", "s to < 100000", "s to < 1", "best MAE"):
        assert header in table, table
    data = json.loads(out.read_text())
    assert data["mode"] == "train" and data["targets"] == [100000.0, 1.0] and data["threads"] == 1
    rows = data["rows"]
    assert [r["name"] for r in rows] == ["painn", "schnet"] and all(r["size"] == "small" for r in rows)
    for r in rows:
        assert r["model"] in table, table
        assert r["params"] > 0 and r["epochs"] >= 1 and len(r["curve"]) == r["epochs"]
        best = r["best_val_forces_mae"]
        assert isinstance(best, float) and math.isfinite(best) and best > 0
        assert set(r["time_to_mae_s"]) == {"100000", "1"}
        assert r["time_to_mae_s"]["100000"] == r["curve"][0]["elapsed_s"] > 0  # reached at the first epoch
        assert r["time_to_mae_s"]["1"] is None  # 1 meV/Å: not in a few seconds
        assert f"not reached (best {best:.1f})" in table
        times = [c["elapsed_s"] for c in r["curve"]]
        assert times == sorted(times)
    # the data were generated once, both students trained on the same file and split
    assert len(list((tmp_path / "work").glob("emt-n30-*.db"))) == 1
    assert (tmp_path / "work" / "run-painn-small" / "split.json").read_text() == \
        (tmp_path / "work" / "run-schnet-small" / "split.json").read_text()
