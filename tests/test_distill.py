"""distill end to end on EMT with a tiny budget: every artifact, resume after a failure in every stage and
after kill -9 during training, refusal to overwrite, --overwrite (a fresh run), --config RUN/config.yaml into a
new --out (same options, same teacher data), provenance split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mlff_distiller.distill import STAGES, DistillConfig, RunDir, distill
from mlff_distiller.distill import stages as stages_module
from mlff_distiller.distill.stages import choose_val_groups, provenance_blocks

#: every auto field set: no planning (no timing runs), a few seconds per stage
TINY = dict(
    teacher="emt", structures=["ethanol"], train_temperatures=[300.0, 500.0], test_temperatures=[400.0],
    train_samples=10, test_samples=6, md_interval=2, test_interval=2, md_equilibration=4, epochs=3, train_minutes=1.0,
    md_steps=30, md_timestep_fs=0.5, batch_size=4, speed_structures=3, speed_rounds=1, val_block=2,
    val_fraction=0.2, threads=1, progress=False, model_options={"hidden": 16, "layers": 2}, cutoff=4.0,
)


def _quiet(_text: str) -> None:
    pass


class Boom(RuntimeError):
    pass


def test_resume_after_a_failure_in_every_stage(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = DistillConfig.from_dict({**TINY, "out_dir": str(out)})
    real = dict(stages_module.STAGE_FUNCTIONS)
    calls = {s: 0 for s in STAGES}

    def counting(stage):
        def fn(ctx):
            calls[stage] += 1
            return real[stage](ctx)
        return fn

    for failing in STAGES:
        funcs = {s: counting(s) for s in STAGES}

        def boom(ctx, stage=failing):
            calls[stage] += 1
            if stage == "sample":  # fail halfway: after the first sampling run was written
                original = stages_module.sample_parts
                monkeypatch.setattr(stages_module, "sample_parts", lambda c: original(c)[:1])
                real["sample"](ctx)
                monkeypatch.setattr(stages_module, "sample_parts", original)
            raise Boom(f"killed in {stage}")

        funcs[failing] = boom
        monkeypatch.setattr(stages_module, "STAGE_FUNCTIONS", funcs)
        import mlff_distiller.distill.run as run_module

        monkeypatch.setattr(run_module, "STAGE_FUNCTIONS", funcs)
        with pytest.raises(Boom):
            distill(cfg, log=_quiet)
        run = RunDir(out)
        assert run.first_unfinished() == failing
        assert not run.is_done(failing)
    monkeypatch.setattr(run_module, "STAGE_FUNCTIONS", {s: counting(s) for s in STAGES})
    before = dict(calls)
    result = distill(cfg, log=_quiet)
    assert result.stages_run == ["report"]  # every earlier stage was finished by an earlier rerun
    assert {s: calls[s] - before[s] for s in STAGES} == {**{s: 0 for s in STAGES}, "report": 1}
    # each stage ran exactly twice in total: once failing, once finishing (none repeated after it was done)
    assert all(calls[s] == 2 for s in STAGES), calls
    # the first sampling run, written before the failure, was not sampled again
    marker = RunDir(out).read_marker("sample.train_md_300K")
    assert marker is not None
    _check_artifacts(out, result)


def _check_artifacts(out: Path, result) -> None:
    run = RunDir(out)
    for path in (run.config, run.train_pool, run.test, run.train_db, run.val_db, run.split_json, run.student,
                 run.report_md, run.report_json, run.eval / "parity_forces.png", run.eval / "parity_energy.png",
                 run.eval / "error_vs_size.png", run.eval / "nve.png", run.train / "metrics.csv"):
        assert path.exists() and path.stat().st_size > 0, path
    report = json.loads(run.report_json.read_text())
    assert report == result.report
    assert report["teacher"]["name"] == "emt"
    assert report["data"]["structures"] == 6  # test_samples × 1 seed × 1 temperature
    assert "400 K" in report["data"]["held_out"]
    assert report["md"]["steps_done"] <= 30 and report["speed"]["speedup"] > 0
    for stage in STAGES:
        assert run.is_done(stage)
    split = json.loads(run.split_json.read_text())
    assert split["train"] + split["val"] == 20 and split["val"] >= 4
    text = run.report_md.read_text()
    assert "| ms per single point" in text and "eval/parity_forces.png" in text
    from mlff_distiller.calculator import load_calculator
    from mlff_distiller.models import read_metadata
    from mlff_distiller.structures import builtin

    atoms = builtin("ethanol")
    atoms.calc = load_calculator(run.student)
    assert np.isfinite(atoms.get_forces()).all()
    meta = read_metadata(run.student)["metadata"]
    assert meta["distill"]["config"]["teacher"] == "emt"
    saved = DistillConfig.load(run.config)
    assert saved.to_dict() == result.config.to_dict()


def test_provenance_blocks_and_val_groups():
    rows = [{"sample_group": "seed0", "sample_method": "md", "sample_temperature": t} for t in (300.0,) * 6 + (500.0,) * 4]
    groups = provenance_blocks(rows, 3)
    assert groups[:6] == ["seed0/md/300K/block0"] * 3 + ["seed0/md/300K/block1"] * 3
    assert groups[6:] == ["seed0/md/500K/block0"] * 3 + ["seed0/md/500K/block1"]
    val = choose_val_groups(groups, 0.2, seed=0)
    assert 1 <= len(val) < len(set(groups))
    assert sum(g in val for g in groups) >= 2
    with pytest.raises(ValueError, match="block"):
        choose_val_groups(["a"] * 5, 0.2, seed=0)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def test_kill_during_training_then_resume_refuse_and_overwrite(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "mlff_distiller.cli", "distill", "--teacher", "emt", "--structures", "ethanol",
            "--out", str(out), "--train-temperatures", "300,500", "--test-temperatures", "400",
            "--train-samples", "10", "--test-samples", "6", "--md-interval", "2", "--test-interval", "2", "--epochs", "400",
            "--train-minutes", "0.25", "--md-steps", "30", "--threads", "1", "--batch-size", "4",
            "--model-option", "hidden=16", "--model-option", "layers=2", "--cutoff", "4", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        assert _wait_for(out / "train" / "checkpoints" / "last.ckpt", proc, 240), proc.stdout.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = RunDir(out)
    assert run.first_unfinished() == "train" and not run.student.exists()
    # the same command resumes at the training stage, from its last checkpoint
    args_short = list(args)
    args_short[args.index("--epochs") + 1] = "4"  # another option: not the interrupted run
    from click.testing import CliRunner

    from mlff_distiller.cli import cli

    changed = CliRunner().invoke(cli, args_short[3:])
    assert changed.exit_code == 2 and "other options" in changed.output and "epochs" in changed.output
    done = CliRunner().invoke(cli, args[3:] + ["--json"])
    assert done.exit_code == 0, done.output
    assert "resuming" in done.output
    assert json.loads(done.stdout[done.stdout.index("{"):])["teacher"]["name"] == "emt"
    logs = sorted((out / "train" / "logs").glob("version_*"))
    assert len(logs) == 2  # a second training segment, resumed
    # a finished run is refused, and repeated with --overwrite
    again = CliRunner().invoke(cli, args[3:])
    assert again.exit_code == 2 and "finished" in again.output and "--overwrite" in again.output
    before = {stage: (run.read_marker(stage)["finished"], run.marker(stage).stat().st_mtime_ns) for stage in STAGES}
    student_before = run.student.stat().st_mtime_ns
    (out / "notes.txt").write_text("not the run's")  # overwrite removes only what a run writes
    stale = run.samples / "stale.db"
    stale.write_text("left by the old run")
    # --overwrite with another option (--epochs 4, also keeps this test short): a fresh run, not a resume
    fresh = CliRunner().invoke(cli, args_short[3:] + ["--overwrite", "--json"])
    assert fresh.exit_code == 0, fresh.output
    assert f"resuming {out}" not in fresh.output and "training the" in fresh.output and "resuming the" not in fresh.output
    assert not stale.exists() and (out / "notes.txt").read_text() == "not the run's"
    assert [p.name for p in (out / "train" / "logs").glob("version_*")] == ["version_0"]  # one training segment
    for stage in STAGES:
        marker = run.read_marker(stage)
        assert marker is not None and run.is_done(stage), stage
        assert marker["finished"] >= before[stage][0], stage
        assert run.marker(stage).stat().st_mtime_ns > before[stage][1], stage  # every stage ran again
    assert run.student.stat().st_mtime_ns > student_before
    assert DistillConfig.load(run.config).epochs == 4
    fresh_report = json.loads(fresh.stdout[fresh.stdout.index("{"):])
    metrics = (out / "train" / "metrics.csv").read_text().splitlines()
    assert 1 < len(metrics) <= 1 + 4  # header + at most 4 epochs: the new option, not the old 400
    _check_artifacts(out, SimpleNamespace(report=fresh_report, config=DistillConfig.load(run.config)))
    # --config repeats the run: the same resolved options
    from mlff_distiller.cli.distill import build_config
    from mlff_distiller.distill.run import load_run_config

    saved = load_run_config(out)
    repeated = build_config({**saved.to_dict(), "plan": {}}, {"out": str(tmp_path / "again")})
    assert saved.differences(repeated, ignore={"out_dir", "plan"}) == []
    # ... and as a command: the run's config.yaml into a new --out
    copy = tmp_path / "again"
    rerun = CliRunner().invoke(cli, ["distill", "--config", str(out / "config.yaml"), "--out", str(copy), "--json"])
    assert rerun.exit_code == 0, rerun.output
    assert f"resuming {copy}" not in rerun.output and "training the" in rerun.output and "resuming the" not in rerun.output
    assert "planning the run" not in rerun.output  # every option was given: no timing runs
    first, second = saved.to_dict(), DistillConfig.load(copy / "config.yaml").to_dict()
    assert second.pop("out_dir") == str(copy) and first.pop("out_dir") == str(out)
    # plan (informational: the planner's timings) is the one field not carried over: the first run left
    # some sizes on auto and was planned; the repeat gets every size from config.yaml and times nothing
    assert first.pop("plan")["budget_minutes"] == 60.0 and second.pop("plan") == {}
    assert second == first
    rerun_report = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert "no budget planning" in rerun_report["pipeline"]["plan"]
    _check_artifacts(copy, SimpleNamespace(report=rerun_report, config=DistillConfig.load(copy / "config.yaml")))
    # the same options and seed: the same teacher data and split
    from ase.db import connect

    for name in ("labels/test.db", "labels/train_pool.db"):
        rows = [list(connect(root / name).select(sort="id")) for root in (out, copy)]
        assert len(rows[0]) == len(rows[1]) > 0
        for a, b in zip(*rows):
            np.testing.assert_array_equal(a.positions, b.positions)
            assert a.energy == b.energy
    assert json.loads((copy / "split" / "split.json").read_text()) == json.loads(run.split_json.read_text())


def test_hvp_labels_reach_training(tmp_path):
    """--hvp K: label_file adds K Hessian-vector products to the kept MD labels (which it reuses), and
    the training run sees them (an hvp loss term)."""
    from ase.calculators.emt import EMT
    from ase.db import connect

    out = tmp_path / "hvp"
    cfg = {**TINY, "structures": ["water"], "train_samples": 8, "test_samples": 4, "hvp": 1, "epochs": 2,
           "train_minutes": 0.2, "md_steps": 10, "out_dir": str(out)}
    result = distill(DistillConfig.from_dict(cfg), log=_quiet)
    db = connect(RunDir(out).train_db)
    assert db.metadata["labeling"]["hvp"] == 1 and db.metadata["labeling"]["reuse_labels"] is True
    row = next(db.select(limit=1))
    hvp, v = row.data["hvp"], row.data["hvp_directions"]
    assert hvp.shape == v.shape == (3, 1, 3)
    # H·v from EMT by central differences of its forces, independently of the labeling code
    atoms, h = row.toatoms(), 1e-4
    forces = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions += sign * h * v[:, 0]
        moved.calc = EMT()
        forces.append(moved.get_forces())
    np.testing.assert_allclose(hvp[:, 0], -(forces[0] - forces[1]) / (2 * h), atol=2e-3)
    header = (RunDir(out).train / "metrics.csv").read_text().splitlines()[0]
    assert "hvp" in header
    assert "Hessian-vector" in result.report["pipeline"]["labels"]


def test_planned_training_shrinks_to_keep_the_budget_after_an_overrun():
    from mlff_distiller.distill.budget import EVAL_SHARE, training_seconds

    planned = DistillConfig(budget_minutes=60.0, train_minutes=27.0, plan={"train_minutes_auto": True})
    left_after = 60.0 * 60.0 * (1.0 - EVAL_SHARE - 0.05)  # what sampling+labeling+split may use with training
    seconds, why = training_seconds(planned, seconds_spent=20 * 60.0)  # on time: the plan stands
    assert (seconds, why) == (27 * 60.0, "as planned")
    seconds, why = training_seconds(planned, seconds_spent=35 * 60.0)  # 15 min late
    assert seconds == pytest.approx(left_after - 35 * 60.0) and seconds < 27 * 60.0
    assert "shortened from 27.0 min" in why and "35.0 min of the 60-min budget" in why
    seconds, _ = training_seconds(planned, seconds_spent=59 * 60.0)  # never less than a quarter of the plan
    assert seconds == pytest.approx(0.25 * 27 * 60.0)
    # minutes the user chose, or a repeated config (no plan), are kept whatever the clock says
    chosen = DistillConfig(budget_minutes=60.0, train_minutes=27.0, plan={"train_minutes_auto": False})
    assert training_seconds(chosen, seconds_spent=59 * 60.0) == (27 * 60.0, "as configured")
    assert training_seconds(DistillConfig(budget_minutes=60.0, train_minutes=5.0), 1e9) == (300.0, "as configured")
