"""Behaviour of a training run that the result alone does not show: the plateau learning-rate
schedule, early stopping, determinism for a seed on CPU and the CLI's progress bar.

Every run here is a 1-layer, 8-wide SchNet on 30 small EMT structures: well under a second each.
"""

from __future__ import annotations

import csv
import json
import math
import warnings

import pytest
import torch

from mlff_distiller.training import train
from mlff_distiller.training.config import TrainConfig

TINY = dict(model="schnet", model_options={"hidden": 8, "layers": 1}, cutoff=4.0, progress_bar=False,
            num_threads=1, batch_size=8, val=0.2, split="random")


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    """30 EMT-labeled bulk cells (with stress) and clusters of at most 16 atoms."""
    from mlff_distiller.data.writers import write_structures
    from mlff_distiller.generate import iter_dataset

    path = tmp_path_factory.mktemp("behaviour_data") / "emt.db"
    write_structures(path, iter_dataset(30, 0, kinds=("bulk", "cluster"), max_atoms=16))
    return path


def _train(data, out, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(data, out_dir=out, **{**TINY, **options})


def _rows(result):
    with open(result.metrics_csv, newline="") as fh:
        return list(csv.DictReader(fh))


def _checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# -- 1. learning rate on a validation plateau ---------------------------------------------------


def test_documented_plateau_factor_is_a_halving():
    assert TrainConfig.__dataclass_fields__["lr_schedule"].default == "plateau"
    assert TrainConfig.__dataclass_fields__["lr_factor"].default == 0.5  # the CLI's help: "plateau: halve the LR when val_loss stalls"


@pytest.mark.parametrize("patience, factor, epochs", [(0, None, 6), (1, None, 6), (0, 0.25, 4)])
def test_plateau_multiplies_the_lr_by_the_factor_after_patience_stalled_epochs(small_db, tmp_path, patience, factor,
                                                                                 epochs):
    """lr = 1e-6 moves the weights so little that val_loss improves by far less than the plateau
    threshold (1e-4 relative): every epoch after the first is a stalled one. (The epochs keep every
    LR change above torch's ``eps`` = 1e-8, below which ReduceLROnPlateau skips a reduction.)"""
    lr = 1e-6
    options = dict(lr_patience=patience, min_lr=0.0, early_stopping_patience=0)
    if factor is not None:
        options["lr_factor"] = factor
    result = _train(small_db, tmp_path / "run", epochs=epochs, lr=lr, seed=0, **options)
    factor = TrainConfig.__dataclass_fields__["lr_factor"].default if factor is None else factor
    rows = _rows(result)
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    # the premise: no epoch improves on the best so far by 1e-5 relative (the scheduler's threshold: 1e-4)
    losses = [float(r["val_loss"]) for r in rows]
    assert all(losses[e] > min(losses[:e]) * (1 - 1e-5) for e in range(1, epochs)), losses

    # epoch 0 improves on +inf; then every stalled epoch counts, and after patience + 1 of them the
    # LR is multiplied by the factor at the end of that epoch: the next epoch trains with it
    def lr_of_epoch(e):
        return lr * factor ** max(0, (e - 1) // (patience + 1))

    expected = [lr_of_epoch(e) for e in range(epochs)]
    logged = [float(r["lr"]) for r in rows]
    assert logged == pytest.approx(expected, rel=1e-6), (logged, expected)
    # the optimizer in last.ckpt holds the LR of the epoch that would come next
    last = _checkpoint(result.last_checkpoint)
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(lr_of_epoch(epochs), rel=1e-12)
    plateau = last["mlff_distiller"]["plateau"]
    assert plateau["factor"] == factor and plateau["patience"] == patience


def test_plateau_never_goes_below_min_lr(small_db, tmp_path):
    lr = 1e-6
    result = _train(small_db, tmp_path / "run", epochs=4, lr=lr, seed=0, lr_patience=0, min_lr=0.6 * lr,
                    early_stopping_patience=0)
    logged = [float(r["lr"]) for r in _rows(result)]
    assert logged == pytest.approx([lr, lr, 0.6 * lr, 0.6 * lr], rel=1e-6)


# -- 2. early stopping -----------------------------------------------------------------------------


def test_early_stopping_when_val_loss_cannot_improve(small_db, tmp_path):
    """lr = 1e-300 leaves float32 weights bit for bit unchanged: val_loss is the same every epoch, so
    with patience 1 the run stops after epoch 1 instead of running 6 epochs."""
    result = _train(small_db, tmp_path / "run", epochs=6, lr=1e-300, seed=0, early_stopping_patience=1)
    rows = _rows(result)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert rows[0]["val_loss"] == rows[1]["val_loss"]  # the premise: no improvement at all
    assert result.epochs_run == 2 and result.stop_reason == "early_stopping"
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "early_stopping" and summary["epochs_run"] == 2
    # an equal loss is no improvement: the best epoch stays the first one
    assert result.best_epoch == 0 and _checkpoint(result.best_checkpoint)["epoch"] == 0
    assert _checkpoint(result.last_checkpoint)["epoch"] == 1
    assert result.best_metrics["val_loss"] == float(rows[0]["val_loss"])


def _stop_epoch(losses, patience):
    """The epoch at which Lightning's EarlyStopping (mode min, min_delta 0) stops, or None."""
    best, wait = math.inf, 0
    for epoch, value in enumerate(losses):
        if value < best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def test_early_stopping_follows_val_loss_and_best_checkpoint_is_its_minimum(small_db, tmp_path):
    """A learning run (lr 3e-2, whose val_loss goes up and down) with patience 1: it ends at the first
    epoch that does not improve on the best so far, and the exported student is the best epoch's."""
    from safetensors.torch import load_file

    epochs, patience = 12, 1
    result = _train(small_db, tmp_path / "run", epochs=epochs, lr=3e-2, seed=0, early_stopping_patience=patience)
    rows = _rows(result)
    losses = [float(r["val_loss"]) for r in rows]
    stop = _stop_epoch(losses, patience)
    assert stop is not None and stop < epochs - 1, losses  # the premise: this run stops early
    assert len(rows) == stop + 1 and result.epochs_run == stop + 1
    assert result.stop_reason == "early_stopping"
    best = min(range(len(losses)), key=losses.__getitem__)
    assert 0 < best < stop and result.best_epoch == best
    assert _checkpoint(result.best_checkpoint)["epoch"] == best
    assert result.best_metrics["val_loss"] == losses[best]
    state = _checkpoint(result.best_checkpoint)["state_dict"]
    for name, value in load_file(str(result.student)).items():
        assert torch.equal(value, state["model." + name]), name


def test_a_run_without_early_stopping_reports_max_epochs(small_db, tmp_path):
    result = _train(small_db, tmp_path / "run", epochs=3, lr=1e-300, seed=0, early_stopping_patience=0)
    assert len(_rows(result)) == 3 and result.epochs_run == 3 and result.stop_reason == "max_epochs"


# -- 3. determinism for a seed on CPU --------------------------------------------------------------

_TIME_COLUMNS = {"elapsed_s"}


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_same_seed_same_run_bit_for_bit_and_another_seed_differs(small_db, tmp_path):
    common = dict(epochs=3, lr=5e-3, max_atoms_per_batch=64)
    first = _train(small_db, tmp_path / "a", seed=3, **common)
    other = _train(small_db, tmp_path / "other", seed=4, **common)  # between the two: no state carried over
    again = _train(small_db, tmp_path / "b", seed=3, **common)

    a, b, c = _tensors(first.student), _tensors(again.student), _tensors(other.student)
    assert a.keys() == b.keys() == c.keys() and a
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert any(not torch.equal(a[name], c[name]) for name in a)

    rows_a, rows_b = _rows(first), _rows(again)
    assert rows_a[0].keys() == rows_b[0].keys() and len(rows_a) == len(rows_b) == 3
    assert _TIME_COLUMNS <= set(rows_a[0])
    for ra, rb in zip(rows_a, rows_b):
        for key in ra:
            if key not in _TIME_COLUMNS:
                assert ra[key] == rb[key], (key, ra[key], rb[key])
    assert [r["val_loss"] for r in _rows(other)] != [r["val_loss"] for r in rows_a]
    assert (first.out_dir / "split.json").read_text() == (again.out_dir / "split.json").read_text()
    assert first.best_epoch == again.best_epoch


# -- 4. progress bar -------------------------------------------------------------------------------


def test_cli_train_shows_a_progress_bar_unless_quiet(small_db, tmp_path):
    from click.testing import CliRunner

    from mlff_distiller.cli import cli

    args = ["train", str(small_db), "--model", "schnet", "--hidden", "8", "--layers", "1", "--cutoff", "4.0",
            "--epochs", "2", "--batch-size", "8", "--val-fraction", "0.2", "--split", "random", "--threads", "1",
            "--accelerator", "cpu"]
    outputs = {}
    for name, extra in (("bar", []), ("quiet", ["--quiet"])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / name), *extra], prog_name="mlff-distiller")
        assert res.exit_code == 0, res.output
        outputs[name] = res
    bar, quiet = outputs["bar"], outputs["quiet"]
    # the bar: tqdm's "Epoch N: 100%|...| k/k" on stderr, one per epoch; stdout keeps the summary only
    for epoch in (0, 1):
        assert f"Epoch {epoch}: 100%|" in bar.stderr, bar.stderr[-2000:]
    assert "Epoch 0" not in bar.stdout and "\r" not in bar.stdout
    assert "Best epoch" in bar.stdout and "student.safetensors" in bar.stdout
    # --quiet: no bar anywhere, the same summary
    assert "Epoch 0" not in quiet.output and "%|" not in quiet.output and "\r" not in quiet.output
    assert "Best epoch" in quiet.stdout
