"""Training runs on Lightning: learning on EMT labels, the exported student, resume == uninterrupted,
2-rank gloo DDP == one process with the doubled batch, and the CLI as a subprocess."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mlff_distiller.data.dataset import MolecularDataset
from mlff_distiller.data.loader import MolecularDataLoader
from mlff_distiller.data.split import load_split
from mlff_distiller.models import load, predict, read_metadata
from mlff_distiller.training import train

TEACHER = {"name": "emt", "version": "test", "options": {}, "units": {"energy": "eV", "length": "Å"}}
TINY = dict(model="schnet", model_options={"hidden": 16, "layers": 2}, cutoff=4.0, progress_bar=False, num_threads=1)


@pytest.fixture(scope="module")
def emt_db(tmp_path_factory):
    """120 EMT-labeled bulk cells (stress) and clusters (no stress) of 7 metals from 24 MD runs
    (``sample_group`` run<k>), teacher in the file metadata."""
    from mlff_distiller.data.writers import write_structures
    from mlff_distiller.generate import iter_dataset

    path = tmp_path_factory.mktemp("train_data") / "emt.db"
    write_structures(path, iter_dataset(120, 0, kinds=("bulk", "cluster"), max_atoms=16), metadata={"teacher": TEACHER})
    return path


@pytest.fixture(scope="module")
def hvp_db(tmp_path_factory):
    """24 EMT structures with 2 Hessian-vector products each (teachers.label_structure)."""
    from mlff_distiller.data.structure import structure_to_atoms
    from mlff_distiller.data.writers import write_structures
    from mlff_distiller.generate import iter_dataset
    from mlff_distiller.teachers import get_teacher
    from mlff_distiller.teachers.label import label_structure

    teacher = get_teacher("emt")
    calc, rng = teacher.calculator(), np.random.default_rng(0)
    path = tmp_path_factory.mktemp("hvp_data") / "hvp.db"
    structures = (label_structure(calc, structure_to_atoms(s), hvp=2, rng=rng)
                  for s in iter_dataset(24, 1, kinds=("bulk", "cluster"), max_atoms=16))
    write_structures(path, structures, metadata={"teacher": teacher.info()})
    return path


def _val_errors(student_path, dataset, indices):
    """Force MAE (eV/Å) and the force RMS of the labels over ``indices``, recomputed from scratch."""
    from mlff_distiller.data.dataset import MolecularSubset

    model = load(student_path)
    loader = MolecularDataLoader(MolecularSubset(dataset, indices), batch_size=8, use_padding=False,
                                 cutoff=model.cutoff)
    errors, labels = [], []
    for batch in loader:
        errors.append((predict(model, batch)["forces"] - batch["forces"]).reshape(-1))
        labels.append(batch["forces"].reshape(-1))
    err, lab = torch.cat(errors), torch.cat(labels)
    return float(err.abs().mean()), float(lab.pow(2).mean().sqrt())


def test_training_learns_and_exports_the_best_ema_student(emt_db, tmp_path):
    out = tmp_path / "run"
    result = train(emt_db, out_dir=out, epochs=10, batch_size=4, lr=5e-3, val=0.2, seed=0,
                   **{**TINY, "model_options": {"hidden": 32, "layers": 2}})
    for name in ("config.yaml", "split.json", "metrics.csv", "student.safetensors", "summary.json",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (out / name).exists(), name
    dataset = MolecularDataset(emt_db, return_atoms=False)
    train_part, val_part, _ = load_split(out / "split.json", dataset)
    assert not set(train_part.indices) & set(val_part.indices)
    # split='auto' with provenance: whole MD runs (sample_group) go to one side
    group = {i: s.extras["sample_group"] for i, s in enumerate(dataset.get_structures(range(len(dataset))))}
    assert not {group[i] for i in train_part.indices} & {group[i] for i in val_part.indices}

    mae, rms = _val_errors(result.student, dataset, val_part.indices)
    assert mae < 0.3 * rms, (mae, rms)  # learned, not just "the loss decreased"
    # the exported file is the best epoch's EMA student: its validation error is the logged one
    assert result.best_metrics["val_forces_mae"] == pytest.approx(1000 * mae, rel=1e-4)
    rows = list(csv.DictReader(open(result.metrics_csv)))
    assert [int(r["epoch"]) for r in rows] == list(range(10))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert int(best["epoch"]) == result.best_epoch
    for key in ("val_energy_mae", "val_energy_rmse", "val_forces_rmse", "val_stress_mae", "val_stress_rmse",
                "train_loss", "lr"):
        assert key in rows[0], key

    # save -> load: the exported weights are best.ckpt's EMA weights, bit for bit
    best_state = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for name, value in load(result.student).state_dict().items():
        assert torch.equal(value, best_state["model." + name]), name
    meta = read_metadata(result.student)["metadata"]
    assert meta["teacher"] == TEACHER
    assert meta["training"]["seed"] == 0 and meta["training"]["ema"] is True
    assert meta["training"]["loss_weights"]["forces"] == 100.0
    assert meta["training"]["package_version"]
    digest = hashlib.sha256(Path(emt_db).read_bytes()).hexdigest()
    assert meta["training_data"]["files"][0]["sha256"] == digest
    # normalisation from the training split only: E0s are its least-squares fit
    e0 = train_part.get_statistics()["reference_energies"]
    model = load(result.student)
    for z, value in model.reference_energy_dict().items():
        assert value == pytest.approx(e0[z], rel=1e-6)


def test_training_on_teacher_hessian_vector_products(hvp_db, tmp_path):
    from mlff_distiller.training.data import TrainingData
    from mlff_distiller.training.config import TrainConfig

    common = dict(epochs=2, batch_size=4, lr=5e-3, val=0.25, seed=0, split="random", **TINY)
    with_hvp = train(hvp_db, out_dir=tmp_path / "hvp", weights={"hvp": 100.0, "energies": 1.0}, **common)
    without = train(hvp_db, out_dir=tmp_path / "plain", hvp_weight=0.0, **common)
    rows = list(csv.DictReader(open(with_hvp.metrics_csv)))
    assert float(rows[-1]["val_hvp_mae"]) > 0 and float(rows[-1]["train_hvp_loss"]) > 0
    assert float(rows[-1]["train_energies_loss"]) > 0  # teacher per-atom energies as a target
    assert float(rows[-1]["hvp_weight"]) == 100.0
    plain = list(csv.DictReader(open(without.metrics_csv)))[-1]
    assert "train_hvp_loss" not in plain and "train_energies_loss" not in plain
    a, b = _weights(with_hvp.student), _weights(without.student)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the HVP term changed the training
    # its loss scale is the RMS of the training split's hvp labels (read here with ASE directly)
    import ase.db

    prepared = TrainingData.prepare(TrainConfig(data=str(hvp_db), val=0.25, split="random", seed=0))
    db = ase.db.connect(hvp_db)
    values = np.concatenate([db.get(id=i + 1).data["hvp"].ravel() for i in prepared.train.indices])
    assert prepared.scales.hvp == pytest.approx(float(np.sqrt(np.mean(values**2))), rel=1e-12)
    assert "hvp" in prepared.labels
    assert read_metadata(with_hvp.student)["metadata"]["teacher"]["name"] == "emt"


def _state(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and containers only
    return ckpt


def test_resume_equals_uninterrupted(emt_db, tmp_path):
    common = dict(epochs=3, max_atoms_per_batch=96, lr=5e-3, val=0.2, seed=1, lr_patience=0, **TINY)
    full = train(emt_db, out_dir=tmp_path / "full", **common)
    train(emt_db, out_dir=tmp_path / "part", **{**common, "epochs": 2})
    resumed = train(emt_db, out_dir=tmp_path / "part", resume=True, **common)
    a, b = _state(full.last_checkpoint), _state(resumed.last_checkpoint)
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    for key in ("state_dict", "current_model_state"):  # EMA and current weights, bit for bit
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for name in sa:
            assert torch.equal(torch.as_tensor(sa[name]), torch.as_tensor(sb[name]))
    assert a["mlff_distiller"] == b["mlff_distiller"]  # plateau LR and Hessian-weight schedules
    rows_a = list(csv.DictReader(open(full.metrics_csv)))
    rows_b = list(csv.DictReader(open(resumed.metrics_csv)))
    assert len(rows_b) == 3
    for ra, rb in zip(rows_a, rows_b):
        assert ra["val_forces_mae"] == rb["val_forces_mae"] and ra["lr"] == rb["lr"]
    # changing a non-resumable option on resume is refused
    with pytest.raises(ValueError, match="lr"):
        train(emt_db, out_dir=tmp_path / "part", resume=True, **{**common, "lr": 1e-3})
    with pytest.raises(FileExistsError):
        train(emt_db, out_dir=tmp_path / "part", **common)


def test_cosine_schedule_decays_over_the_epochs(emt_db, tmp_path):
    from mlff_distiller.training.module import cosine_lr

    assert cosine_lr(1e-2, 1e-5, 0.0) == 1e-2 and cosine_lr(1e-2, 1e-5, 1.0) == 1e-5
    assert cosine_lr(1e-2, 0.0, 0.5) == pytest.approx(5e-3) and cosine_lr(1e-2, 0.0, 7.0) == 0.0
    result = train(emt_db, out_dir=tmp_path / "cos", epochs=3, batch_size=8, lr=4e-3, min_lr=1e-5, val=0.2,
                   seed=0, lr_schedule="cosine", **TINY)
    lrs = [float(row["lr"]) for row in csv.DictReader(open(result.metrics_csv))]
    expected = [1e-5 + 0.5 * (4e-3 - 1e-5) * (1 + np.cos(np.pi * (e + 0.5) / 3)) for e in range(3)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)  # set at each epoch start, middle-of-epoch progress
    with pytest.raises(ValueError, match="lr_schedule"):
        train(emt_db, out_dir=tmp_path / "bad", epochs=1, lr_schedule="linear", **TINY)


def _cli(*args, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "-m", "mlff_distiller.cli", *map(str, args)], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


DDP_ARGS = ["--model", "schnet", "--hidden", "8", "--layers", "1", "--cutoff", "4.0", "--val-fraction", "0.2",
            "--dtype", "float64", "--lr", "3e-3", "--seed", "2", "--quiet", "--threads", "1", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def ddp_run(emt_db, tmp_path_factory):
    """``mlff-distiller train`` on 2 CPU ranks (gloo), batch 2 per rank, 2 epochs."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    res = _cli("train", emt_db, "--out", out, "--batch-size", "2", "--devices", "2", "--strategy", "ddp",
               "--epochs", "2", *DDP_ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_two_rank_gloo_ddp_equals_one_process_with_double_batch(emt_db, ddp_run, tmp_path):
    """2 ranks x batch 2 == 1 process x batch 4 (95 training structures: 48 batches of 2, a multiple of 2)."""
    out, res = ddp_run
    n_train = json.loads((out / "split.json").read_text())["counts"]["train"]
    assert -(-n_train // 2) % 2 == 0  # the documented condition: ceil(n / b) batches, a multiple of W
    assert "Best epoch" in res.stdout and str(out / "student.safetensors") in res.stdout
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "split.json", "metrics.csv", "student.safetensors",
                                                "summary.json", "checkpoints"}
    one = dict(model="schnet", model_options={"hidden": 8, "layers": 1}, cutoff=4.0, epochs=2, val=0.2,
               dtype="float64", lr=3e-3, seed=2, progress_bar=False, num_threads=1, accelerator="cpu")
    single = train(emt_db, out_dir=tmp_path / "one", batch_size=4, **one)
    a, b = _weights(out / "student.safetensors"), _weights(single.student)
    assert a.keys() == b.keys()
    for name in a:  # equal up to the summation order of the gradient all-reduce (float64)
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)
    # control: the undoubled batch in one process is a different run
    other = _weights(train(emt_db, out_dir=tmp_path / "other", batch_size=2, **one).student)
    assert max(float((other[k] - b[k]).abs().max()) for k in b) > 1e-4
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    ref = list(csv.DictReader(open(single.metrics_csv)))
    for ra, rb in zip(rows, ref):  # validation over the whole split on both (sums over ranks)
        assert float(ra["val_forces_mae"]) == pytest.approx(float(rb["val_forces_mae"]), rel=1e-6)


def test_cli_resume_and_errors(emt_db, ddp_run):
    out, _ = ddp_run
    args = ["train", emt_db, "--out", out, "--batch-size", "2", *DDP_ARGS]
    # one-line errors, exit 2, before any training starts
    for bad in (["--lr", "-1"], ["--epochs", "0"], ["--split", "nope"], ["--max-time", "soon"]):
        res = _cli(*args, *bad)
        assert res.returncode == 2, (bad, res.stderr)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("Error:"), res.stderr
    exists = _cli(*args, "--epochs", "3")  # a run is already there
    assert exists.returncode == 2 and exists.stderr.startswith("Error:") and "--resume" in exists.stderr
    changed = _cli(*args, "--epochs", "3", "--resume", "--lr", "0.01")
    assert changed.returncode == 2 and "lr" in changed.stderr and changed.stderr.count("\n") == 1
    missing = _cli("train", Path(emt_db).parent / "nope.db", "--out", out)
    assert missing.returncode == 2 and "nope.db" in missing.stderr

    # resume the 2-rank run in one process (devices may change on resume) for one more epoch
    again = _cli(*args, "--epochs", "3", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 3
