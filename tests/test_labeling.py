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
    # without failures structure i of OUT is structure i of IN, and says so
    assert [int(s.extras["source_index"]) for s in labeled] == list(range(6))
    assert all(np.asarray(s.extras["source_index"]).dtype == np.int64 for s in labeled)
    assert not (tmp_path / ".out.db.labeling").exists()  # the journal is gone


def test_full_hessian_round_trip(tmp_path):
    """--hessian: hvp holds all 3N columns of H (directions = identity), read back from the file."""
    from mlff_distiller.teachers import hessian_finite_difference

    src = tmp_path / "water.db"
    waters = sample_structures(["water"], None, methods=("rattle",), n=2, seed=4)
    write_structures(src, [sample_to_structure(a) for a in waters])
    out = tmp_path / "hessian.h5"
    label_file(src, out, "emt", hessian=True, hvp_step=1e-3, format="packed", **FAST)
    labeled, metadata = _read(out, "packed")
    assert metadata["labeling"]["hessian"] is True
    for s, atoms in zip(labeled, waters):
        assert s.extras["hvp"].shape == (3, 9, 3)
        assert np.array_equal(s.extras["hvp_directions"], np.eye(9).reshape(9, 3, 3).transpose(1, 0, 2))
        full = s.extras["hvp"].transpose(0, 2, 1).reshape(9, 9)
        np.testing.assert_allclose(full, hessian_finite_difference(EMT(), atoms, 1e-3), rtol=0, atol=1e-10)


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


@pytest.mark.parametrize("fmt,suffix", [("ase", "db"), ("xyz", "xyz"), ("hdf5", "h5"), ("packed", "h5")])
def test_failures_are_recorded_and_the_run_goes_on(tmp_path, fmt, suffix):
    """A failed structure is left out of OUT; every output structure's source_index names its input
    structure (failures in the middle shift the positions, source_index says where each came from)."""
    import warnings

    src = tmp_path / "mixed.db"
    cu, eth, si = (_inputs(2, with_si=True)[k:k + 2] for k in (0, 2, 4))
    inputs = [cu[0], si[0], eth[0], cu[1], si[1], eth[1]]  # EMT has no Si: structures 1 and 4 fail
    write_structures(src, inputs)
    out = tmp_path / f"out.{suffix}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "extended XYZ files have no file metadata", UserWarning)
        summary = label_file(src, out, "emt", format=fmt, **FAST)
    assert (summary.total, summary.labeled, summary.failed) == (6, 4, 2)
    report = json.loads(Path(summary.failures_path).read_text())
    assert [f["index"] for f in report["failed"]] == [1, 4]
    assert all("No EMT-potential for Si" in f["error"] for f in report["failed"])
    labeled, _ = _read(out, fmt)
    source = [int(s.extras["source_index"]) for s in labeled]
    assert source == [0, 2, 3, 5]
    assert sorted(source + [f["index"] for f in report["failed"]]) == list(range(6))
    for s in labeled:
        x = inputs[int(s.extras["source_index"])]
        assert np.array_equal(s.positions, x.positions) and np.array_equal(s.numbers, x.numbers)
        assert s.energy is not None and s.forces is not None  # no unlabeled rows


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
    """kill -9 twice (after the first checkpoint, then in the resumed run), rerun: the same file as a run
    without interruption, and the journal says how many structures were already done."""
    src = tmp_path / "in.db"
    write_structures(src, _inputs(5))  # 10 structures
    teacher, options = "mlff_distiller.teachers.toy:SlowEMT", {"delay": 0.03}
    reference = tmp_path / "reference.h5"
    label_file(src, reference, teacher, teacher_options=options, hvp=1, format="packed", **FAST)
    args = ("--teacher", teacher, "-o", "delay=0.03", "--hvp", "1", "--chunk-size", "2", "-f", "packed", "--json")
    out = tmp_path / "out.h5"
    journal = tmp_path / ".out.h5.labeling"
    for chunks_before_kill in (1, 3):
        proc = subprocess.Popen([sys.executable, "-m", "mlff_distiller.cli", "label", str(src), str(out), *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and len(list(journal.glob("chunk-*.h5"))) < chunks_before_kill:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not out.exists()
    done_before = sum(1 for _ in journal.glob("chunk-*.h5")) * 2
    assert 0 < done_before < 10
    resumed = _cli("label", src, out, *args)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] == done_before and summary["labeled"] == 10
    _assert_identical(_read(reference, "packed")[0], _read(out, "packed")[0])
    assert _read(reference, "packed")[1] == _read(out, "packed")[1]
    assert not journal.exists()


def test_cli_engine_ray_equals_the_local_engine(src, tmp_path):
    """`label --engine ray --workers 2` (a local Ray instance started by the command) writes the same
    structures, labels bit for bit and metadata as the local engine."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (extra 'ray')")
    local = tmp_path / "local.h5"
    label_file(src, local, "emt", hvp=1, format="packed", **FAST)
    via_ray = tmp_path / "ray.h5"
    result = subprocess.run([sys.executable, "-m", "mlff_distiller.cli", "label", str(src), str(via_ray),
                             "--teacher", "emt", "--engine", "ray", "--workers", "2", "--hvp", "1", "-f", "packed"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Labeled 6 of 6 structures with emt" in result.stdout
    reference, meta = _read(local, "packed")
    structures, ray_meta = _read(via_ray, "packed")
    _assert_identical(reference, structures)
    assert [int(s.extras["source_index"]) for s in structures] == list(range(6))
    assert ray_meta == meta


def test_cli_options_exit_codes_and_missing_extras(tmp_path):
    import importlib.util

    src = tmp_path / "in.db"
    cu, eth, si = _inputs(1, with_si=True)
    write_structures(src, [cu, si, eth])  # EMT has no Si: structure 1 fails
    out = tmp_path / "out.db"
    result = _cli("label", src, out, "--teacher", "emt", "-o", "asap_cutoff=true")
    assert result.returncode == 1 and "1 structure(s) failed" in result.stderr and "out.db.failures.json" in result.stderr
    assert "first: structure 1:" in result.stderr
    assert [f["index"] for f in json.loads((tmp_path / "out.db.failures.json").read_text())["failed"]] == [1]
    labeled, metadata = _read(out)
    assert len(labeled) == 2 and metadata["teacher"]["options"] == {"asap_cutoff": True}  # JSON-parsed value
    assert [int(s.extras["source_index"]) for s in labeled] == [0, 2]  # OUT 1 is IN 2
    assert np.array_equal(labeled[1].positions, eth.positions)
    assert "Labeled 2 of 3 structures with emt" in result.stdout
    missing = _cli("label", src, tmp_path / "x.db", "--teacher", "chgnet")
    if importlib.util.find_spec("chgnet") is None:
        errors = [line for line in missing.stderr.splitlines() if line.startswith("Error:")]
        assert missing.returncode == 2 and "Traceback" not in missing.stderr
        assert len(errors) == 1 and "pip install 'mlff_distiller[chgnet]'" in errors[0]
    bad = _cli("label", src, tmp_path / "y.db", "-o", "novalue")
    assert bad.returncode == 2 and "key=value" in bad.stderr


def test_cli_sample_then_label(tmp_path):
    samples = tmp_path / "samples.db"
    result = _cli("sample", "cu32", "water", samples, "-m", "md,rattle", "-T", "300", "-n", "2", "--md-equilibration",
                  "2", "--md-interval", "2")
    assert result.returncode == 0, result.stderr
    structures, metadata = _read(samples)
    assert [s.extras["sample_method"] for s in structures] == ["md", "md", "rattle", "rattle"] * 2
    assert [s.extras["sample_seed"] for s in structures] == [0] * 4 + [1] * 4
    assert structures[0].energy is not None and structures[2].energy is None  # MD frames keep the teacher's labels
    assert metadata["teacher"]["name"] == "emt" and metadata["sampling"]["methods"] == ["md", "rattle"]
    fresh, reused = tmp_path / "fresh.db", tmp_path / "reused.db"
    label_file(samples, fresh, "emt", **FAST)
    label_file(samples, reused, "emt", reuse_labels=True, **FAST)
    for a, b, x in zip(_read(fresh)[0], _read(reused)[0], structures):
        assert a.extras["sample_group"] == x.extras["sample_group"]
        if x.energy is not None:  # kept MD labels: the same numbers as a fresh call, up to summation order
            assert np.array_equal(b.forces, x.forces)
            np.testing.assert_allclose(a.forces, x.forces, rtol=0, atol=1e-12)
        else:
            assert np.array_equal(a.forces, b.forces)
    assert _read(reused)[1]["labeling"]["reuse_labels"] is True
    with pytest.raises(ValueError, match="reuse_labels: its labels come from teacher 'emt'"):
        label_file(samples, tmp_path / "lj.db", "lj", reuse_labels=True, **FAST)


def test_thread_limits_cover_openmp_and_torch():
    """Workers label with one thread: tblite's OpenMP sums differ in the last bits between threaded runs."""
    import tblite.ase  # noqa: F401  (loads tblite's OpenMP runtime)
    import torch
    from threadpoolctl import threadpool_info

    from mlff_distiller.teachers.worker import ThreadLimits

    before_torch = torch.get_num_threads()
    before = {(i["internal_api"], i["filepath"]): i["num_threads"] for i in threadpool_info()}
    assert any(api == "openmp" for api, _ in before)
    with ThreadLimits(1)():
        assert all(i["num_threads"] == 1 for i in threadpool_info()) and torch.get_num_threads() == 1
    assert {(i["internal_api"], i["filepath"]): i["num_threads"] for i in threadpool_info()} == before
    assert torch.get_num_threads() == before_torch
