"""The loader benchmark runs end to end at a tiny size and prints every path (no timing checks)."""

from __future__ import annotations

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
