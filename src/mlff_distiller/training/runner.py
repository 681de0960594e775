"""``train``: one training run of a student on Lightning, from data file to exported student.

OUT (``out_dir``) after a run::

    config.yaml            every option (TrainConfig), to repeat or resume the run
    split.json             the train/val/test indices (data.split.save_split)
    checkpoints/best.ckpt  best epoch by val_loss (state_dict = EMA weights)   \\ Lightning's
    checkpoints/last.ckpt  last epoch (EMA + current weights, optimizer, ...)  / ModelCheckpoint
    logs/version_N/        Lightning's CSVLogger output, one version per (resumed) segment
    metrics.csv            one row per epoch: train losses, val MAE/RMSE (meV units), the lr and hvp
                           weight the epoch trained with, elapsed_s
    student.safetensors    the best epoch's EMA weights (models.save), with provenance metadata
    summary.json           best epoch, its validation errors, test errors, paths, times

Checkpoints hold only tensors and plain containers; they are loaded with
``torch.load(weights_only=True)`` (torch's restricted unpickler), both by ``--resume`` and by the
export.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from ..data.publish import write_atomic
from .config import LossWeights, TrainConfig
from .data import StudentDataModule, TrainingData
from .metrics import METRIC_UNITS
from .schedules import HessianWeightSchedule

__all__ = ["train", "TrainResult", "export_student", "CONFIG_FILE", "STUDENT_FILE"]

from .rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_DIR,
    METRICS_FILE,
    STUDENT_FILE,
    SUMMARY_FILE,
    prepare_out_dir,
)


@dataclass
class TrainResult:
    """What a run produced (paths) and how well the exported student does (milli-units, see METRIC_UNITS)."""

    out_dir: Path
    student: Optional[Path]
    best_checkpoint: Optional[Path]
    last_checkpoint: Optional[Path]
    metrics_csv: Optional[Path]
    config: Path
    best_epoch: Optional[int]
    best_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    epochs_run: int = 0
    seconds: float = 0.0
    #: why training ended: "max_epochs", "early_stopping" (val_loss stopped improving), "max_time"
    stop_reason: str = "max_epochs"

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
        return out


def train(
    data: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], None] = None,
    *,
    out_dir: Union[str, os.PathLike, None] = None,
    model: Optional[str] = None,
    val: Union[float, str, os.PathLike, None] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    max_atoms_per_batch: Optional[int] = None,
    lr: Optional[float] = None,
    weights: Union[LossWeights, dict, None] = None,
    hvp_weight: Optional[float] = None,
    seed: Optional[int] = None,
    resume: bool = False,
    overwrite: bool = False,
    config: Optional[TrainConfig] = None,
    **options: Any,
) -> TrainResult:
    """Train a student on ``data`` and export it to ``out_dir/student.safetensors``.

    Args:
        data: labeled structures (ASE db, extxyz, HDF5, packed; a list or glob = one dataset).
        out_dir: run directory (see the module docstring for its contents).
        model: student name (``models.available_models()``); its hyperparameters in
            ``model_options={...}``, its cutoff (Å) in ``cutoff=``.
        val: validation fraction of ``data`` or a separate validation file.
        epochs, batch_size (structures) or max_atoms_per_batch (size-aware batches), lr.
        weights: ``LossWeights`` or a dict (energy, forces, stress, hvp, energies);
            hvp_weight: shortcut for ``weights.hvp``.
        seed: split, initial weights and batch order; identical results on CPU for a seed.
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (same options required, except
            ``epochs``, ``max_time``, devices and the like); overwrite: replace a previous run in
            ``out_dir``.
        config: a ``TrainConfig`` to start from (explicit arguments override its fields).
        **options: any other ``TrainConfig`` field (test_fraction, split, ema_decay, lr_patience,
            early_stopping_patience, hvp_decay, hvp_force_target, max_time (s), accelerator,
            devices, num_nodes, strategy, dtype, num_workers, num_threads, progress_bar, ...).

    Returns a ``TrainResult``. Raises ValueError / FileNotFoundError / FileExistsError for bad
    input, naming the option or file.
    """
    explicit = dict(
        data=data, out_dir=out_dir, model=model, val=val, epochs=epochs, batch_size=batch_size,
        max_atoms_per_batch=max_atoms_per_batch, lr=lr, seed=seed,
    )
    values = config.to_dict() if config is not None else {}
    values.update({k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in explicit.items()
                   if v is not None})
    if isinstance(values.get("data"), (list, tuple)):
        values["data"] = [os.fspath(p) for p in values["data"]]
    unknown = sorted(set(options) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(f"train() got unknown option(s) {unknown}")
    values.update(options)
    if weights is not None:
        values["weights"] = weights.as_dict() if isinstance(weights, LossWeights) else dict(weights)
    if hvp_weight is not None:
        w = dict(values.get("weights") or LossWeights().as_dict())
        w["hvp"] = hvp_weight
        values["weights"] = w
    values["resume"] = bool(resume)
    cfg = TrainConfig.from_dict(values)
    return run(cfg, overwrite=overwrite)


def run(cfg: TrainConfig, *, overwrite: bool = False) -> TrainResult:
    """Train as ``cfg`` says (``train`` builds ``cfg`` from keyword arguments)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from .ema import EMA
    from .module import MONITOR, StudentModule

    start = time.perf_counter()
    out = Path(cfg.out_dir)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    callbacks: list = []
    # best.ckpt: the epoch with the lowest val_loss. last.ckpt: every epoch, from a second callback
    # without a monitor (Lightning 2.6's save_last=True rewrites last.ckpt only when the monitored
    # checkpoint is saved, i.e. when val_loss improved). Order matters: "last" is written after "best"
    # has updated its state, so a resumed run takes the same best-checkpoint decisions.
    checkpoint = ModelCheckpoint(
        dirpath=out / CHECKPOINT_DIR, filename="best", monitor=MONITOR, mode="min", save_top_k=1,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=out / CHECKPOINT_DIR, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    callbacks += [checkpoint, last]
    if cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="min", patience=cfg.early_stopping_patience))
    if cfg.ema_decay is not None:
        callbacks.append(EMA(cfg.ema_decay))
    if cfg.progress_bar:
        callbacks.append(_ProgressBar())
    deterministic = cfg.deterministic
    if deterministic is None:  # on CPU by default (CUDA scatter-adds have no deterministic kernels)
        deterministic = cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not _accelerator_present())
    trainer = pl.Trainer(
        max_epochs=cfg.epochs,
        max_time=None if cfg.max_time is None else timedelta(seconds=cfg.max_time),
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=str(out), name=LOG_DIR, flush_logs_every_n_steps=1),
        gradient_clip_val=cfg.gradient_clip,
        inference_mode=False,  # forces/stress/HVPs need autograd in validation
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our DistributedBatchSampler shards the batches
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=deterministic,
        default_root_dir=str(out),
    )
    rank_zero = trainer.is_global_zero
    if rank_zero:
        prepare_out_dir(cfg, overwrite)
    if rank_zero:
        out.mkdir(parents=True, exist_ok=True)
    prepared = TrainingData.prepare(cfg, out, write=rank_zero)
    if rank_zero:  # on resume: the same options but possibly more epochs, another max_time...
        cfg.save(out / CONFIG_FILE)

    student = build_student(cfg, prepared)
    e0, scale, shift = prepared.normalisation()
    student.set_reference_energies(e0)
    student.set_scale_shift(scale, shift)
    weights = cfg.weights.as_dict()
    missing = [n for n in weights if weights[n] > 0 and n not in prepared.labels]
    if all(weights[n] == 0 or n in missing for n in weights):
        raise ValueError(
            f"{cfg.data}: nothing to train on: the training split has labels {sorted(prepared.labels) or 'none'} "
            f"but the loss weights {cfg.weights.as_dict()} give none of them a weight > 0"
        )
    module = StudentModule(
        student,
        weights={k: (0.0 if k in missing else v) for k, v in weights.items()},
        scales=prepared.scales,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_factor=cfg.lr_factor,
        lr_patience=cfg.lr_patience,
        min_lr=cfg.min_lr,
        lr_schedule=cfg.lr_schedule,
        max_epochs=cfg.epochs,
        max_time=cfg.max_time,
        hvp_schedule=HessianWeightSchedule(
            0.0 if "hvp" in missing else weights["hvp"],
            factor=cfg.hvp_decay,
            patience=cfg.hvp_decay_patience,
            target=cfg.hvp_force_target,
            tolerance=cfg.hvp_target_tolerance,
        ),
    )
    datamodule = StudentDataModule(prepared, cfg, cutoff=student.cutoff)
    ckpt_path = str(out / CHECKPOINT_DIR / "last.ckpt") if cfg.resume else None
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with warnings.catch_warnings():
            # notes that say nothing about this run: Lightning's use of a torch API deprecated in
            # 2.13, and (resuming) that the checkpoint directory is not empty
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
            if cfg.resume:
                warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:  # Lightning's deterministic=True switches torch's global flag on; restore the caller's
        torch.use_deterministic_algorithms(was_deterministic)

    result = TrainResult(
        out_dir=out,
        student=None,
        best_checkpoint=_existing(checkpoint.best_model_path),
        last_checkpoint=_existing(out / CHECKPOINT_DIR / "last.ckpt"),
        metrics_csv=None,
        config=out / CONFIG_FILE,
        best_epoch=None,
        epochs_run=int(trainer.current_epoch),
        stop_reason=_stop_reason(trainer, cfg),
    )
    if not rank_zero:
        return result
    result.metrics_csv = merge_metrics(out)
    source = result.best_checkpoint or result.last_checkpoint
    if source is not None:
        metadata = _metadata(cfg, prepared, module)
        result.student, result.best_epoch = export_student(source, student, out / STUDENT_FILE, metadata)
    result.best_metrics = _epoch_row(result.metrics_csv, result.best_epoch)
    if prepared.test is not None and result.student is not None:
        result.test_metrics = evaluate(result.student, datamodule.loader(prepared.test, train=False, world=(1, 0)))
    result.seconds = time.perf_counter() - start
    write_atomic(out / SUMMARY_FILE, json.dumps(result.as_dict(), indent=1, default=str))
    return result


def build_student(cfg: TrainConfig, prepared: TrainingData):
    """The student of ``cfg`` for the elements of the data. A model with an ``avg_neighbors``
    hyperparameter (message normalisation) gets the training split's mean neighbour count within the
    cutoff unless ``model_options`` sets it. Initial weights depend on ``cfg.seed`` only."""
    import lightning.pytorch as pl

    from ..models import build_model

    options = dict(cfg.model_options)
    dtype = getattr(torch, cfg.dtype)
    probe = build_model(cfg.model, species=prepared.species, cutoff=cfg.cutoff, dtype=dtype, **options)
    if "avg_neighbors" in probe.config and "avg_neighbors" not in options:
        from .data import average_neighbors

        mean = average_neighbors(prepared.train, cfg.cutoff)
        if mean is not None and mean > 0:
            options["avg_neighbors"] = round(mean, 4)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return build_model(cfg.model, species=prepared.species, cutoff=cfg.cutoff, dtype=dtype, **options)


class _ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar without the logger's version number, on stderr as the CLI's other bars
    (Lightning writes its bars to stdout, which carries the run's summary)."""

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def init_sanity_tqdm(self):
        return _on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return _on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return _on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self):
        return _on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self):
        return _on_stderr(super().init_predict_tqdm)


def _on_stderr(make_bar):
    """A bar from Lightning's ``init_*_tqdm`` (which passes ``file=sys.stdout``) writing to stderr."""
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        return make_bar()


def _accelerator_present() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def _stop_reason(trainer, cfg: TrainConfig) -> str:
    from lightning.pytorch.callbacks import EarlyStopping

    if any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks):
        return "early_stopping"
    if trainer.current_epoch >= cfg.epochs:
        return "max_epochs"
    return "max_time" if cfg.max_time is not None else "interrupted"


def _existing(path) -> Optional[Path]:
    if not path:
        return None
    path = Path(path)
    return path if path.exists() else None


def _metadata(cfg: TrainConfig, prepared: TrainingData, module) -> dict:
    from .. import __version__
    from .provenance import data_fingerprint, teacher_info

    meta: dict[str, Any] = {
        "training": {
            "package_version": __version__,
            "seed": cfg.seed,
            "split": prepared.split_kind,
            "num_train": len(prepared.train),
            "num_val": len(prepared.val),
            "num_test": 0 if prepared.test is None else len(prepared.test),
            "loss_weights": module.initial_weights,
            "loss_scales": prepared.scales.as_dict(),
            "config": cfg.to_dict(),
        },
        "training_data": data_fingerprint(cfg.data, prepared.dataset),
    }
    if prepared.val_dataset is not None:
        meta["validation_data"] = data_fingerprint(cfg.val, prepared.val_dataset)
    teacher = teacher_info(prepared.dataset)
    if teacher is not None:
        meta["teacher"] = teacher
    return meta


def load_checkpoint(path: Union[str, os.PathLike]) -> dict:
    """A Lightning checkpoint of a run, loaded with torch's restricted unpickler (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def export_student(checkpoint: Union[str, os.PathLike], model, path: Union[str, os.PathLike], metadata: dict):
    """Write the checkpoint's (EMA) weights into ``model`` and save it with ``models.save``.

    Returns (path, epoch of the checkpoint).
    """
    from ..models import save

    ckpt = load_checkpoint(checkpoint)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=True)
    epoch = int(ckpt.get("epoch", -1))
    meta = dict(metadata)
    meta.setdefault("training", {})
    meta["training"] = {**meta["training"], "epoch": epoch, "checkpoint": Path(checkpoint).name,
                        "ema": "current_model_state" in ckpt}
    saved = save(model, path, metadata=meta)
    return Path(saved) if saved is not None else Path(path), epoch


@torch.no_grad()
def evaluate(student_path: Union[str, os.PathLike], loader) -> dict[str, float]:
    """MAE/RMSE (milli-units) of a saved student on every batch of ``loader``."""
    from ..models import load, predict
    from .losses import residuals
    from .metrics import ErrorAccumulator

    model = load(student_path)
    acc = ErrorAccumulator()
    for batch in loader:
        with torch.enable_grad():
            pred = predict(model, batch, forces=True, stress="stress" in batch,
                           hvp_directions=batch.get("hvp_directions") if "hvp" in batch else None)
        if "energies" in batch:
            pred["energies"] = model.atomic_energies(batch).detach()
        acc.update(residuals(pred, batch))
    errors, _ = acc.results()
    return errors


def merge_metrics(out: Path) -> Optional[Path]:
    """``out/metrics.csv``: one row per epoch from every logs/version_N/metrics.csv (a later,
    resumed segment replaces the rows of the epochs it repeats)."""
    logs = out / LOG_DIR
    versions = sorted(
        (p for p in logs.glob("version_*") if p.name.split("_")[-1].isdigit()),
        key=lambda p: int(p.name.split("_")[-1]),
    )
    rows: dict[int, dict[str, str]] = {}
    for version in versions:
        path = version / "metrics.csv"
        if not path.exists():
            continue
        segment: dict[int, dict[str, str]] = {}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                merged = segment.setdefault(epoch, {})
                merged.update({k: v for k, v in row.items() if v not in ("", None) and k != "step"})
        rows.update(segment)
    if not rows:
        return None
    keys = ["epoch"] + sorted({k for r in rows.values() for k in r} - {"epoch"})
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    for epoch in sorted(rows):
        writer.writerow({**rows[epoch], "epoch": epoch})
    return write_atomic(out / METRICS_FILE, text.getvalue())


def _epoch_row(metrics_csv: Optional[Path], epoch: Optional[int]) -> dict[str, float]:
    if metrics_csv is None or epoch is None:
        return {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if int(row["epoch"]) == epoch:
                return {k: float(v) for k, v in row.items() if k.startswith("val_") and v not in ("", None)}
    return {}


def metric_units() -> dict[str, str]:
    """Unit of every ``val_<label>_mae/rmse`` column of metrics.csv."""
    return {f"val_{k}_{m}": u for k, u in METRIC_UNITS.items() for m in ("mae", "rmse")}
