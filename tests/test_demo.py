"""``mlff-distiller demo``: the main job prints teacher vs student and the report path (EMT, tiny plan)."""

from __future__ import annotations

import importlib
import json

from click.testing import CliRunner

from mlff_distiller.cli import cli

demo_module = importlib.import_module("mlff_distiller.cli.demo")  # the package re-exports the command as `demo`


def test_demo_prints_side_by_side_table(tmp_path, monkeypatch):
    tiny = {**demo_module.QUICK_PLAN, "structures": ["water"], "train_samples": 10, "test_samples": 4,
            "md_interval": 2, "test_interval": 2, "val_block": 2, "md_equilibration": 4, "epochs": 2, "train_minutes": 0.2, "md_steps": 20}
    monkeypatch.setattr(demo_module, "QUICK_PLAN", tiny)
    out = tmp_path / "demo"
    args = ["demo", "--teacher", "emt", "--structure", "water", "--out", str(out), "--threads", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    text = result.stdout
    for row in ("ms per single point", "speed-up vs teacher", "force MAE vs teacher", "NVE drift"):
        assert row in text, row
    assert f"report: {out / 'report.md'}" in text.replace("\n", "")
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["name"] == "emt" and report["data"]["structures"] == 4
    # the same command again shows the finished run instead of redoing it
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "finished demo" in again.stdout and "--overwrite" in again.stdout
    assert json.loads((out / "report.json").read_text()) == report
