"""Small files are written atomically through one helper, never through a planted symlink (issue 12,
item 2), and leftovers of dead writers' side files (``.lock``, SQLite's) are cleaned up (item 11).

Each writer used to write ``<name>.tmp`` (or the destination itself) by name, so a symlink planted
there made it overwrite the symlink's target; now every one goes through ``publish.write_atomic``
(an ``mkstemp`` file written through its descriptor, then ``os.replace``/``os.link``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlff_distiller.data import publish
from mlff_distiller.data.publish import write_atomic

PRECIOUS = "precious"


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text(PRECIOUS)
    return victim


def _plant(victim: Path, *paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(victim)


def _no_partials(directory: Path) -> None:
    assert not [p.name for p in directory.iterdir() if ".partial-" in p.name]


# -- the helper ---------------------------------------------------------------------------------


def test_write_atomic_writes_text_bytes_and_callbacks(tmp_path):
    out = tmp_path / "a.txt"
    assert write_atomic(out, "hé") == out and out.read_text(encoding="utf-8") == "hé"
    write_atomic(out, b"\x00\x01")
    assert out.read_bytes() == b"\x00\x01"
    write_atomic(out, lambda fh: fh.write(b"from a callback"))
    assert out.read_text() == "from a callback"
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # what open() would give, not mkstemp's 0600
    _no_partials(tmp_path)


def test_write_atomic_without_overwrite_never_replaces(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("first")
    with pytest.raises(FileExistsError):
        write_atomic(out, "second", overwrite=False)
    assert out.read_text() == "first"
    write_atomic(tmp_path / "b.txt", "new", overwrite=False)
    assert (tmp_path / "b.txt").read_text() == "new"
    _no_partials(tmp_path)


def test_write_atomic_failure_leaves_the_old_file_and_nothing_else(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_atomic(out, fail)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_write_atomic_replaces_a_symlink_at_the_destination_and_refuses_a_directory(tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "out" / "a.txt"
    _plant(victim, out)
    write_atomic(out, "mine")
    assert victim.read_text() == PRECIOUS
    assert not out.is_symlink() and out.read_text() == "mine"
    (tmp_path / "out" / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "out" / "d", "x")
    assert (tmp_path / "out" / "d").is_dir()


# -- the writers --------------------------------------------------------------------------------


def test_save_split_does_not_write_through_a_planted_symlink(tmp_path, data_files):
    from mlff_distiller.data import MolecularDataset, train_test_split
    from mlff_distiller.data.split import load_split, save_split

    dataset = MolecularDataset(data_files["ase"], format="ase")
    splits = train_test_split(dataset, random_seed=7)
    victim = _victim(tmp_path)
    out = tmp_path / "run" / "split.json"
    _plant(victim, out.with_name("split.json.tmp"))  # the name save_split used to write by name
    save_split(out, splits)
    assert victim.read_text() == PRECIOUS
    assert [s.indices for s in load_split(out, dataset)] == [s.indices for s in splits]
    with pytest.raises(FileExistsError):
        save_split(out, splits)
    save_split(out, splits, overwrite=True)
    assert victim.read_text() == PRECIOUS
    _no_partials(out.parent)


def test_write_report_does_not_write_through_planted_symlinks(tmp_path):
    from mlff_distiller.evaluation.report import load_report, write_report

    victim = _victim(tmp_path)
    out = tmp_path / "eval"
    _plant(victim, out / ".report.json.tmp", out / ".report.md.tmp", out / "report.md")
    report = {"summary": {"energy_per_atom": {"mae": 0.5}}, "n": np.int64(3)}
    json_path, md_path = write_report(report, out)
    assert victim.read_text() == PRECIOUS
    assert load_report(json_path) == {"summary": {"energy_per_atom": {"mae": 0.5}}, "n": 3}
    assert not md_path.is_symlink() and md_path.read_text(encoding="utf-8").strip()
    _no_partials(out)


def test_models_save_does_not_write_through_planted_symlinks(tmp_path):
    import torch

    from mlff_distiller import models

    model = models.build_model("schnet", species=[1, 8], cutoff=4.0, dtype=torch.float64, hidden=8, layers=1, rbf=4)
    victim = _victim(tmp_path)
    out = tmp_path / "run" / "student.safetensors"
    # save_file wrote the destination by name; the distill export stage wrote this temporary name
    _plant(victim, out, out.with_name(".student.safetensors.tmp"))
    models.save(model, out, metadata={"note": "x"})
    assert victim.read_text() == PRECIOUS
    assert not out.is_symlink()
    loaded = models.load(out)
    assert models.read_metadata(out)["metadata"] == {"note": "x"}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    _no_partials(out.parent)


def test_journal_does_not_write_through_a_planted_symlink(tmp_path):
    from mlff_distiller.teachers.journal import Journal

    victim = _victim(tmp_path)
    journal = Journal(tmp_path / "labels.h5")
    _plant(victim, journal.path / f".run.json.tmp-{os.getpid()}")
    journal.create({"teacher": "emt", "n": 3})
    assert victim.read_text() == PRECIOUS
    assert journal.settings() == {"teacher": "emt", "n": 3}
    _no_partials(journal.path)


def test_configs_and_markers_do_not_write_through_planted_symlinks(tmp_path):
    from mlff_distiller.distill.config import DistillConfig
    from mlff_distiller.distill.layout import RunDir
    from mlff_distiller.training.config import TrainConfig

    victim = _victim(tmp_path)
    run = RunDir(tmp_path / "run")
    train_json = tmp_path / "run" / "train.json"
    train_yaml = tmp_path / "run" / "train.yaml"
    _plant(victim, run.config.with_name(".config.yaml.tmp"), train_json.with_name("train.json.tmp"),
           train_yaml.with_name("train.yaml.tmp"), run.markers / ".sample.done.tmp")
    cfg = DistillConfig(structures=["water.xyz"], out_dir=str(run.root))
    cfg.save(run.config)
    assert DistillConfig.load(run.config).to_dict() == cfg.to_dict()
    tcfg = TrainConfig(data="x.db", out_dir="out")
    for path in (train_json, train_yaml):
        tcfg.save(path)
        assert TrainConfig.load(path) == tcfg
    run.mark_done("sample", [run.config], seconds=1.0)
    assert run.read_marker("sample")["outputs"] == ["config.yaml"]
    assert victim.read_text() == PRECIOUS
    _no_partials(run.root)
    _no_partials(run.markers)


# -- leftovers: ASE's .lock and SQLite's side files of dead writers ---------------------------------


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_lock_and_side_files_of_dead_writers_are_removed_and_of_live_ones_kept(tmp_path):
    host = publish._HOST
    dead, live = _dead_pid(), os.getpid()
    stale = [f".out.db.partial-{host}-{dead}-abc123{side}" for side in ("", ".lock", "-journal", "-wal", "-shm")]
    stale += [f".out.partial-{dead}.db.lock", f".out.db.partial-{dead}.lock"]  # the names before publish.py
    kept = [f".out.db.partial-{host}-{live}-live12.lock", f".out.db.partial-{host}-{live}-live12-wal",
            f".out.db.partial-otherhost-{dead}-xyz789.lock", f".other.db.partial-{host}-{dead}-abc123.lock",
            "out.db.lock", "notes.lock"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    removed = publish.remove_stale(tmp_path / "out.db")
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_next_write_removes_a_dead_writers_lock_file(tmp_path):
    from mlff_distiller.data.structure import Structure
    from mlff_distiller.data.writers import write_structures

    host = publish._HOST
    dead, live = _dead_pid(), os.getpid()
    leftover = tmp_path / f".out.db.partial-{host}-{dead}-k9k9k9.lock"
    alive = tmp_path / f".out.db.partial-{host}-{live}-a1a1a1.lock"
    leftover.write_text("")
    alive.write_text("")
    s = Structure(positions=np.zeros((1, 3)), numbers=np.array([1]), cell=np.eye(3) * 5.0, pbc=np.array([True] * 3),
                  energy=np.float64(-1.0), forces=np.zeros((1, 3)))
    write_structures(tmp_path / "out.db", [s], "ase")
    assert not leftover.exists() and alive.exists()


def test_a_failed_write_removes_the_lock_file_of_its_partial_file(tmp_path):
    out = tmp_path / "out.db"
    with pytest.raises(RuntimeError):
        with publish.publish(out) as tmp:
            Path(str(tmp) + ".lock").write_text("")
            Path(str(tmp) + "-journal").write_text("")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


# -- item 3 of the audit: the packed writer reads the builder's keys through a public property -------


def test_packed_builder_declares_its_stored_keys():
    from mlff_distiller.data.packed.builder import PackedBuilder
    from mlff_distiller.data.structure import Structure

    builder = PackedBuilder()
    assert builder.declared_keys == ()
    s = Structure(positions=np.zeros((2, 3)), numbers=np.array([1, 1]), cell=np.eye(3) * 5.0,
                  pbc=np.array([True] * 3), energy=np.float64(-1.0), forces=np.zeros((2, 3)))
    builder.add([s, s])
    names = [k.name for k in builder.declared_keys]
    assert "energy" in names and "forces" in names
    with pytest.raises(AttributeError):
        builder.declared_keys = ()
