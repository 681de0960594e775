"""label_file / `mlff-distiller label`: labels equal direct teacher calls, output i = input i, identical files
for any number of workers and for Ray, failures recorded not silent, and resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.writers import write_structures
from mlff_distiller.structures import builtin
from mlff_distiller.teachers import get_teacher, label_file, label_structure, sample_structures, structure_rng
from mlff_distiller.teachers.label import sample_to_structure

FAST = dict(progress=False)


def _inputs(n: int = 3, with_si: bool = False):
    seeds = ["cu32", "ethanol"] + (["si64"] if with_si else [])
    return [sample_to_structure(a) for a in sample_structures(seeds, None, methods=("rattle",), n=n, seed=1)]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    path = tmp_path_factory.mktemp("label") / "in.db"
    write_structures(path, _inputs(3))
    return path


def _read(path, fmt=None):
    reader = open_reader(path, fmt)
    try:
        return reader.read_many(range(len(reader))), dict(getattr(reader, "metadata", {}) or {})
    finally:
        reader.close()


def _assert_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name in ("numbers", "positions", "cell", "pbc", "energy", "forces", "stress"):
            u, v = getattr(x, name), getattr(y, name)
            assert (u is None) == (v is None) and (u is None or np.array_equal(u, v)), name
        assert sorted(x.extras) == sorted(y.extras)
        for key, value in x.extras.items():
            assert np.array_equal(np.asarray(value), np.asarray(y.extras[key])), key


def test_labels_equal_direct_calls_in_input_order(src, tmp_path):
    out = tmp_path / "out.db"
    summary = label_file(src, out, "emt", hvp=2, seed=3, **FAST)
    assert (summary.total, summary.labeled, summary.failed, summary.resumed) == (6, 6, 0, 0)
    inputs, _ = _read(src)
    labeled, metadata = _read(out)
    assert metadata["teacher"] == get_teacher("emt").info()
    assert metadata["labeling"]["hvp"] == 2 and metadata["labeling"]["seed"] == 3
    for i, (x, s) in enumerate(zip(inputs, labeled)):
        assert np.array_equal(x.positions, s.positions) and np.array_equal(x.numbers, s.numbers)
        atoms = builtin("cu32") if len(s.numbers) == 32 else builtin("ethanol")
        atoms.positions = s.positions
        atoms.calc = EMT()
        assert float(s.energy) == atoms.get_potential_energy()
        assert np.array_equal(s.forces, atoms.get_forces())
        assert (s.stress is None) == (not s.pbc.all())
        ref = label_structure("emt", atoms, hvp=2, rng=structure_rng(3, i))
        assert np.array_equal(s.extras["hvp"], ref.extras["hvp"])
        assert np.array_equal(s.extras["hvp_directions"], ref.extras["hvp_directions"])
        assert s.extras["sample_method"] == "rattle" and s.extras["sample_seed"] == i // 3
    assert not (tmp_path / ".out.db.labeling").exists()  # the journal is gone


def test_workers_and_ray_write_identical_files(src, tmp_path):
    ray = pytest.importorskip("ray")
    one = tmp_path / "one.h5"
    label_file(src, one, "emt", hvp=1, format="packed", chunk_size=2, **FAST)
    two = tmp_path / "two.h5"
    label_file(src, two, "emt", hvp=1, format="packed", workers=2, task_size=1, **FAST)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        via_ray = tmp_path / "ray.h5"
        label_file(src, via_ray, "emt", hvp=1, format="packed", workers=2, engine="ray", task_size=1, **FAST)
    finally:
        ray.shutdown()
    reference, meta = _read(one, "packed")
    for other in (two, via_ray):
        structures, other_meta = _read(other, "packed")
        _assert_identical(reference, structures)
        assert other_meta == meta


def test_failures_are_recorded_and_the_run_goes_on(tmp_path):
    src = tmp_path / "mixed.db"
    inputs = _inputs(2, with_si=True)  # EMT has no Si: structures 4 and 5 fail
    write_structures(src, inputs)
    out = tmp_path / "out.db"
    summary = label_file(src, out, "emt", **FAST)
    assert (summary.total, summary.labeled, summary.failed) == (6, 4, 2)
    report = json.loads(Path(summary.failures_path).read_text())
    assert [f["index"] for f in report["failed"]] == [4, 5]
    assert all("No EMT-potential for Si" in f["error"] for f in report["failed"])
    labeled, _ = _read(out)
    assert [len(s.numbers) for s in labeled] == [32, 32, 9, 9]
    for s, x in zip(labeled, inputs[:4]):
        assert np.array_equal(s.positions, x.positions)


def test_resume_needs_the_same_settings(src, tmp_path):
    from mlff_distiller.teachers.journal import Journal

    out = tmp_path / "out.db"
    journal = Journal(out)
    journal.create({"input": "something else"})  # an interrupted run with other settings
    journal.unlock()
    with pytest.raises(ValueError, match="other settings.*restart"):
        label_file(src, out, "emt", **FAST)
    summary = label_file(src, out, "emt", restart=True, **FAST)
    assert summary.labeled == 6 and summary.resumed == 0
    with pytest.raises(FileExistsError):
        label_file(src, out, "emt", **FAST)


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "mlff_distiller.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_resume_after_kill_9_gives_the_same_file(tmp_path):
    src = tmp_path / "in.db"
    write_structures(src, _inputs(6))  # 12 structures
    args = ("--teacher", "mlff_distiller.teachers.toy:SlowEMT", "-o", "delay=0.05", "--hvp", "1", "--chunk-size", "2",
            "-f", "packed", "--json")
    reference = tmp_path / "reference.h5"
    done = _cli("label", src, reference, *args)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out.h5"
    journal = tmp_path / ".out.h5.labeling"
    for kill_after_chunks in (1, 3):
        proc = subprocess.Popen([sys.executable, "-m", "mlff_distiller.cli", "label", str(src), str(out), *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and len(list(journal.glob("chunk-*.h5"))) < kill_after_chunks:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not out.exists() and len(list(journal.glob("chunk-*.h5"))) >= kill_after_chunks
    resumed = _cli("label", src, out, *args)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert 0 < summary["resumed"] < 12 and summary["labeled"] == 12
    _assert_identical(_read(reference, "packed")[0], _read(out, "packed")[0])
    assert _read(reference, "packed")[1] == _read(out, "packed")[1]
    assert not journal.exists()


def test_cli_options_exit_codes_and_missing_extras(tmp_path):
    src = tmp_path / "in.db"
    write_structures(src, _inputs(1, with_si=True))
    out = tmp_path / "out.db"
    result = _cli("label", src, out, "--teacher", "lj", "-o", "sigma=2.2", "-o", "rc=6", "-o", "smooth=true")
    assert result.returncode == 0, result.stderr
    _, metadata = _read(out)
    assert metadata["teacher"]["options"] == {"sigma": 2.2, "rc": 6, "smooth": True}
    failed = _cli("label", src, tmp_path / "emt.db", "--teacher", "emt")
    assert failed.returncode == 1 and "1 structure(s) failed" in failed.stderr and "emt.db.failures.json" in failed.stderr
    import importlib.util

    missing = _cli("label", src, tmp_path / "x.db", "--teacher", "chgnet")
    if importlib.util.find_spec("chgnet") is None:
        assert missing.returncode == 2 and "pip install 'mlff_distiller[chgnet]'" in missing.stderr
        assert len(missing.stderr.strip().splitlines()) == 1
    bad = _cli("label", src, tmp_path / "y.db", "-o", "novalue")
    assert bad.returncode == 2 and "key=value" in bad.stderr


def test_cli_sample_then_label(tmp_path):
    samples = tmp_path / "samples.db"
    result = _cli("sample", "cu32", "water", samples, "-m", "md,rattle", "-T", "300", "-n", "2", "--md-equilibration",
                  "2", "--md-interval", "2")
    assert result.returncode == 0, result.stderr
    structures, metadata = _read(samples)
    assert [s.extras["sample_method"] for s in structures] == ["md", "md", "rattle", "rattle"] * 2
    assert structures[0].energy is not None and structures[2].energy is None  # MD frames keep the teacher's labels
    assert metadata["teacher"]["name"] == "emt"
    out = tmp_path / "labeled.db"
    assert _cli("label", samples, out).returncode == 0
    labeled, _ = _read(out)
    for s, x in zip(labeled, structures):
        assert s.extras["sample_group"] == x.extras["sample_group"]
        if x.energy is not None:
            np.testing.assert_allclose(s.forces, x.forces, rtol=0, atol=1e-12)
