"""``StudentModule``: the LightningModule that trains a student on graph batches.

training_step: ``predict(model, batch, forces, stress, hvp_directions, create_graph=True)`` and the
weighted, label-masked loss of ``losses``; validation: the same predictions (autograd on, no graph
kept) accumulated into per-label MAE/RMSE over the whole validation split (all ranks).

Validation loss (monitored by the LR schedule, early stopping and the best checkpoint): the
configured weights times the normalised mean squared errors of the *end targets* — energy per atom,
forces, stress and per-atom energies — over the validation split. The HVP term is a training
signal (its weight decays during training), so it is reported (``val_hvp_mae``) but not part of
the monitored loss: the best epoch is the one with the best energies/forces/stress.

The plateau LR scheduler and the Hessian-weight schedule are stepped here, at the end of each
validation epoch (before Lightning writes the epoch's checkpoints), and their state travels in the
checkpoint as plain numbers, so a resumed run continues exactly where the uninterrupted one would.

``lr_schedule="cosine"`` instead decays the learning rate from ``lr`` to ``min_lr`` along a half
cosine, set at the start of each epoch: over ``max_epochs`` epochs, or — when a time budget
``max_time`` (s) is given — over whichever of the two ends first (the progress of the epoch's middle,
estimated from the last epoch's duration). The time-based progress is decided on rank 0 and broadcast,
so DDP ranks share one learning rate; it depends on wall time, so a time-limited cosine run is not
bit-for-bit reproducible (an epoch-limited one is).
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Optional

import torch
from lightning.pytorch import LightningModule

from ..data.keys import STRUCTURE_LABELS
from ..models import predict
from .config import LR_SCHEDULES
from .losses import LABELS, LossScales, residuals, weighted_loss
from .metrics import ErrorAccumulator
from .schedules import HessianWeightSchedule

__all__ = ["StudentModule", "MONITOR", "LR_SCHEDULES", "cosine_lr"]

#: the metric the LR schedule, early stopping and the best checkpoint watch
MONITOR = "val_loss"
#: labels in the monitored validation loss
VAL_LOSS_LABELS = STRUCTURE_LABELS + ("energies",)
_STATE_KEY = "mlff_distiller"


class StudentModule(LightningModule):
    """Lightning wrapper of a student (``self.model``) with its losses, metrics and schedules."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        weights: Mapping[str, float],
        scales: LossScales,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_factor: float = 0.5,
        lr_patience: int = 5,
        min_lr: float = 1e-6,
        hvp_schedule: Optional[HessianWeightSchedule] = None,
        lr_schedule: str = "plateau",
        max_epochs: Optional[int] = None,
        max_time: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.initial_weights = {k: float(weights.get(k, 0.0)) for k in LABELS}
        self.scales = scales
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.lr_factor = float(lr_factor)
        self.lr_patience = int(lr_patience)
        self.min_lr = float(min_lr)
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
        self.lr_schedule = lr_schedule
        self.max_epochs = None if max_epochs is None else int(max_epochs)
        self.max_time = None if max_time is None else float(max_time)
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._epoch_started: Optional[float] = None  # elapsed() when the current epoch started
        self._last_epoch_s = 0.0
        self.hvp_schedule = hvp_schedule or HessianWeightSchedule(self.initial_weights["hvp"], factor=1.0)
        self.val_errors = ErrorAccumulator()
        self._train_sums = torch.zeros(len(LABELS) + 1, dtype=torch.float64)  # loss, then each term
        self._train_steps = 0
        self.plateau: Optional[torch.optim.lr_scheduler.ReduceLROnPlateau] = None
        self._pending_plateau: Optional[dict] = None
        #: validation results of the last epoch (errors in milli-units, and val_loss)
        self.last_validation: dict[str, float] = {}
        self._elapsed_before = 0.0  # training seconds of earlier segments of a resumed run
        self._fit_start: Optional[float] = None

    # -- loss weights ------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """Current loss weights (the hvp weight follows ``hvp_schedule``)."""
        w = dict(self.initial_weights)
        w["hvp"] = self.hvp_schedule.weight
        return w

    # -- predictions -------------------------------------------------------------------------
    def _predict(self, batch: Mapping[str, Any], training: bool) -> dict[str, torch.Tensor]:
        w = self.weights
        use = {name: key in batch and (not training or w[name] > 0) for name, (key, _) in LABELS.items()}
        hvp_directions = batch.get("hvp_directions") if use["hvp"] else None
        if use["hvp"] and hvp_directions is None:
            raise ValueError("the batch has 'hvp' labels but no 'hvp_directions'")
        pred = predict(
            self.model,
            batch,
            forces=True,
            stress=use["stress"],
            hvp_directions=hvp_directions,
            create_graph=training,
        )
        if use["energies"]:
            energies = self.model.atomic_energies(batch)
            pred["energies"] = energies if training else energies.detach()
        return pred

    def _sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return tensor
        return trainer.strategy.reduce(tensor.to(self.device), reduce_op="sum").to(tensor.device)

    def _world_size(self) -> int:
        return 1 if self._trainer is None else int(self.trainer.world_size)

    def _progress(self, now: float) -> float:
        """Fraction of the run done at the middle of the epoch starting now (rank 0's clock in DDP)."""
        fractions = []
        if self.max_epochs:
            fractions.append((self.current_epoch + 0.5) / self.max_epochs)
        if self.max_time:
            fractions.append((now + 0.5 * self._last_epoch_s) / self.max_time)
        progress = max(fractions) if fractions else 0.0
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            progress = float(trainer.strategy.broadcast(progress, src=0))
        return progress

    def elapsed(self) -> float:
        """Wall-clock seconds of training so far, earlier segments of a resumed run included."""
        now = 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start
        return self._elapsed_before + now

    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()

    # -- steps ---------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.model(batch)

    def on_train_epoch_start(self) -> None:
        now = self.elapsed()
        if self._epoch_started is not None:
            self._last_epoch_s = now - self._epoch_started
        self._epoch_started = now
        if self.lr_schedule == "cosine" and self._optimizer is not None:
            lr = cosine_lr(self.lr, self.min_lr, self._progress(now))
            for group in self._optimizer.param_groups:
                group["lr"] = lr
        # Lightning calls set_epoch on a loader's sampler, not on a batch sampler: the batch plan of
        # an epoch must depend on the epoch number alone (a resumed run sees the same batches)
        for loader in _loaders(self.trainer.train_dataloader):
            sampler = getattr(loader, "batch_sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.current_epoch)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        w = self.weights
        pred = self._predict(batch, training=True)
        res = residuals(pred, batch, names=[n for n, v in w.items() if v > 0])
        loss, terms = weighted_loss(
            res, w, self.scales, count_reduce=self._sum_over_ranks, world_size=self._world_size()
        )
        n = int(batch["natoms"].shape[0])
        # this rank's share of the global loss and of each term: summed over ranks at the epoch end
        shares = torch.tensor([float(terms.get(k, 0.0)) for k in LABELS], dtype=torch.float64)
        self._train_sums += torch.cat([shares.sum().reshape(1), shares])
        self._train_steps += 1
        self.log("loss", loss.detach() / self._world_size(), prog_bar=True, on_step=True, on_epoch=False,
                 logger=False, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        """``train_loss`` and ``train_<label>_loss``: the global loss averaged over the epoch's steps."""
        if self._train_steps == 0:
            return
        sums = self._sum_over_ranks(self._train_sums.clone()) / self._train_steps
        self.log("train_loss", float(sums[0]), on_epoch=True, sync_dist=True)
        for k, name in enumerate(LABELS, start=1):
            if self.initial_weights[name] > 0 and float(sums[k]) != 0.0:
                self.log(f"train_{name}_loss", float(sums[k]), on_epoch=True, sync_dist=True)
        self._train_sums.zero_()
        self._train_steps = 0

    def on_validation_epoch_start(self) -> None:
        self.val_errors.reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        with torch.enable_grad():
            pred = self._predict(batch, training=False)
        self.val_errors.update(residuals(pred, batch))

    def validation_loss(self, squares: Mapping[str, float]) -> float:
        """Monitored loss from the mean squared residuals of the validation split."""
        scale = self.scales.as_dict()
        return float(
            sum(self.initial_weights[n] * squares[n] / scale[n] ** 2 for n in VAL_LOSS_LABELS if n in squares)
        )

    def on_validation_epoch_end(self) -> None:
        errors, squares = self.val_errors.results(self._sum_over_ranks)
        val_loss = self.validation_loss(squares)
        self.last_validation = {"val_loss": val_loss, **{f"val_{k}": v for k, v in errors.items()}}
        shown = {"val_loss", "val_energy_mae", "val_forces_mae"}
        for key, value in self.last_validation.items():
            self.log(key, value, prog_bar=key in shown, on_epoch=True, sync_dist=True)
        trainer = self._trainer
        if trainer is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        # the epoch's row holds the LR and hvp weight this epoch trained with (as for the cosine
        # schedule), logged before the schedules decide the next epoch's values
        self.log("elapsed_s", self.elapsed(), on_epoch=True, sync_dist=True)
        optimizer = self._optimizer
        if optimizer is not None:
            self.log("lr", optimizer.param_groups[0]["lr"], on_epoch=True, sync_dist=True)
        if self.initial_weights["hvp"] > 0:
            self.log("hvp_weight", self.hvp_schedule.weight, on_epoch=True, sync_dist=True)
        if self.plateau is not None:
            self.plateau.step(val_loss)
        if "forces_mae" in errors:
            self.hvp_schedule.step(errors["forces_mae"] / 1000.0)  # eV/Å

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay, amsgrad=True
        )
        self._optimizer = optimizer
        if self.lr_schedule != "plateau":
            return optimizer  # the cosine schedule is set in on_train_epoch_start
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.lr_factor, patience=self.lr_patience, min_lr=self.min_lr
        )
        if self._pending_plateau is not None:
            self.plateau.load_state_dict(self._pending_plateau)
            self._pending_plateau = None
        # stepped in on_validation_epoch_end (see module docstring), so not returned to Lightning
        return optimizer

    # -- checkpoints: plain numbers only --------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[_STATE_KEY] = {
            "plateau": None if self.plateau is None else _plain(self.plateau.state_dict()),
            "hvp_schedule": self.hvp_schedule.state_dict(),
            "model_config": _plain(getattr(self.model, "config", {})),
        }
        checkpoint[_STATE_KEY + "_elapsed_s"] = self.elapsed()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._elapsed_before = float(checkpoint.get(_STATE_KEY + "_elapsed_s", 0.0))
        state = checkpoint.get(_STATE_KEY)
        if not state:
            return
        self.hvp_schedule.load_state_dict(state["hvp_schedule"])
        if state.get("plateau") is not None:
            if self.plateau is not None:
                self.plateau.load_state_dict(state["plateau"])
            else:
                self._pending_plateau = state["plateau"]


def cosine_lr(lr: float, min_lr: float, progress: float) -> float:
    """Half-cosine decay from ``lr`` (progress 0) to ``min_lr`` (progress >= 1)."""
    p = min(max(float(progress), 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * p))


def _plain(value: Any) -> Any:
    """``value`` as plain containers of numbers/strings (loadable with ``torch.load(weights_only=True)``)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _loaders(loaders: Any) -> list:
    """The DataLoaders in whatever Lightning holds (one loader, a list or a dict of them)."""
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]
