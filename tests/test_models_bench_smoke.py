"""bench_students.py runs end to end at a tiny size (no timing checks): every student and EMT rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_students.py"


def test_bench_students_quick_run(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_students", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_students"] = bench  # dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.modules.pop("bench_students", None)
    out = tmp_path / "rows.json"
    import torch

    before = torch.get_num_threads()
    try:
        rows = bench.main(["--quick", "--structures", "aspirin,cu32", "--threads", "1", "--calls", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(before)
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["rows"] == json.loads(json.dumps(rows))
    from mlff_distiller.models import available_models

    models = {(r["structure"], r["model"].split()[0]) for r in rows if r["kind"] == "student"}
    assert models == {(s, m) for s in ("aspirin", "cu32") for m in available_models()}
    assert {(r["structure"], r["model"]) for r in rows if r["kind"] == "teacher"} == {("aspirin", "emt"), ("cu32", "emt")}
    for r in rows:
        assert r["ms_1t"] > 0
        if r["kind"] == "student":
            assert r["x_emt_1t"] > 0 and r["nl_share_1t"] > 0 and r["params"] > 0  # values, not timings
    assert "painn default" in printed and "×emt 1t" in printed
