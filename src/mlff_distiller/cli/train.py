"""``mlff-distiller train``: train a student on a labeled dataset (Lightning), export it to OUT."""

from __future__ import annotations

import os
import re

import click

from ..training.config import LR_SCHEDULES
from .errors import InputError, one_line
from .inputs import require_input, shown_path
from .options import CUTOFF, FORMAT_HELP, PATHS_HELP, FiniteFloatRange, json_object

WEIGHT = FiniteFloatRange(min=0)
FRACTION = FiniteFloatRange(min=0, max=1, min_open=True, max_open=True)
_DURATION = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+):(\d+)$")


def parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90s``, ``30m``, ``2h``, ``1d`` or ``[DD:]HH:MM:SS``/``MM:SS``."""
    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value and value[-1] in units:
            seconds = float(value[:-1]) * units[value[-1]]
        elif ":" in value:
            parts = [int(p) for p in value.split(":")]
            if not 2 <= len(parts) <= 4:
                raise ValueError
            seconds = 0.0
            for part, factor in zip(reversed(parts), (1, 60, 3600, 86400)):
                seconds += part * factor
        else:
            seconds = float(value)
    except ValueError:
        raise InputError(f"--max-time: expected seconds, 30m, 2h or DD:HH:MM:SS, got {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise InputError(f"--max-time must be a positive duration, got {text!r}")
    return seconds


#: Lightning's start-up notes that say nothing about this run (hardware not present, adverts)
_NOISE = ("GPU available", "TPU available", "HPU available", "IPU available", "\U0001f4a1 Tip")


class _QuietStartup:
    """A logging filter dropping Lightning's start-up notes (``_NOISE``) on the console."""

    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith(_NOISE)


def _quiet_lightning() -> None:
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietStartup) for f in logger.filters):
            logger.addFilter(_QuietStartup())


def _launcher_rank_zero() -> bool:
    """False in the processes a multi-process launcher (Lightning, torchrun, SLURM) started for
    ranks other than 0: they must not check or clear OUT."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _devices(text: str):
    return int(text) if text.isdigit() else text


@click.command(epilog=PATHS_HELP)
@click.argument("paths", metavar="DATA...", nargs=-1, required=True)
@click.option("-o", "--out", "out", required=True, help="Run directory (checkpoints, metrics.csv, student.safetensors).")
@click.option("-m", "--model", default="painn", show_default=True, help="Student architecture (schnet, painn, ...).")
@click.option("--hidden", type=click.IntRange(min=1), default=None, help="Feature width of the student.")
@click.option("--layers", type=click.IntRange(min=1), default=None, help="Interaction layers of the student.")
@click.option("--model-options", default=None, help="Further hyperparameters as a JSON object.")
@click.option("--cutoff", type=CUTOFF, default=5.0, show_default=True, help="Cutoff radius (Å).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Structures per batch.")
@click.option(
    "--max-atoms-per-batch", type=click.IntRange(min=1), default=None,
    help="Size-aware batches of at most this many atoms (instead of --batch-size).",
)
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option(
    "--lr-schedule", type=click.Choice(LR_SCHEDULES), default="plateau", show_default=True,
    help="plateau: halve the LR when val_loss stalls; cosine: decay to the minimum over --epochs (or --max-time).",
)
@click.option("--energy-weight", type=WEIGHT, default=5.0, show_default=True, help="Energy-per-atom loss weight.")
@click.option("--forces-weight", type=WEIGHT, default=100.0, show_default=True)
@click.option("--stress-weight", type=WEIGHT, default=10.0, show_default=True)
@click.option("--hvp-weight", type=WEIGHT, default=30.0, show_default=True, help="Hessian-vector product weight.")
@click.option("--energies-weight", type=WEIGHT, default=0.0, show_default=True, help="Teacher per-atom energies weight.")
@click.option("--hvp-force-target", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Halve the HVP weight once the validation force MAE (eV/Å) is within 5%% of this.")
@click.option("--val-fraction", type=FRACTION, default=0.1, show_default=True)
@click.option("--val-data", default=None, help="A separate validation file (instead of --val-fraction).")
@click.option("--test-fraction", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True)
@click.option("--split", type=click.Choice(["auto", "random", "group", "composition"]), default="auto",
              show_default=True, help="auto: grouped by sample_group when every structure has one, else random.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--ema-decay", type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True), default=0.99,
              show_default=True)
@click.option("--no-ema", is_flag=True, help="Train without an EMA of the weights.")
@click.option("--patience", type=click.IntRange(min=0), default=20, show_default=True,
              help="Early-stopping patience in epochs (0: off).")
@click.option("--max-time", default=None, help="Stop after this long: seconds, 30m, 2h or DD:HH:MM:SS.")
@click.option("--resume", is_flag=True, help="Continue the run in OUT from checkpoints/last.ckpt.")
@click.option("--overwrite", is_flag=True, help="Replace a previous run in OUT.")
@click.option("--accelerator", default="auto", show_default=True, help="cpu, gpu, auto, ...")
@click.option("--devices", default="1", show_default=True, help="Devices per node (a number, or 'auto').")
@click.option("--num-nodes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--strategy", default="auto", show_default=True, help="Lightning strategy (ddp, ddp_spawn, ...).")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads per process.")
@click.option("-f", "--format", "fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option("--config", "config_path", default=None, help="Start from a saved config.yaml (options override it).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(paths, out, model, hidden, layers, model_options, cutoff, dtype, epochs, batch_size, max_atoms_per_batch,
          lr, lr_schedule, energy_weight, forces_weight, stress_weight, hvp_weight, energies_weight, hvp_force_target,
          val_fraction, val_data, test_fraction, split, seed, ema_decay, no_ema, patience, max_time, resume,
          overwrite, accelerator, devices, num_nodes, strategy, num_workers, threads, fmt, config_path,
          quiet) -> None:
    """Train a student force field on the labeled structures in DATA and export it to
    OUT/student.safetensors (the best epoch's EMA weights).

    Losses: energy per atom, forces, stress, teacher Hessian-vector products (when DATA has them)
    and per-atom energies, each normalised by its RMS in the training split. Validation MAE/RMSE per
    epoch go to OUT/metrics.csv (meV/atom, meV/Å, meV/Å³, meV/Å²). Several GPUs or nodes: --devices,
    --num-nodes and --strategy ddp.
    """
    from ..training.config import LossWeights, TrainConfig
    from ..training.rundir import check_out_dir

    require_input(paths)
    if val_data is not None:
        require_input([val_data])
    options = json_object(model_options, "--model-options", '{"hidden": 64}')
    if hidden is not None:
        options["hidden"] = hidden
    if layers is not None:
        options["layers"] = layers
    data = paths[0] if len(paths) == 1 else list(paths)
    ctx = click.get_current_context()
    given = {
        name for name in ctx.params
        if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
    }
    values = dict(
        data=data,
        out_dir=out,
        format=fmt,
        model=model,
        model_options=options,
        cutoff=cutoff,
        dtype=dtype,
        val=val_data if val_data is not None else val_fraction,
        test_fraction=test_fraction,
        split=split,
        batch_size=batch_size,
        max_atoms_per_batch=max_atoms_per_batch,
        num_workers=num_workers,
        epochs=epochs,
        lr=lr,
        lr_schedule=lr_schedule,
        early_stopping_patience=patience,
        ema_decay=None if no_ema else ema_decay,
        weights=LossWeights(
            energy=energy_weight, forces=forces_weight, stress=stress_weight, hvp=hvp_weight,
            energies=energies_weight,
        ).as_dict(),
        hvp_force_target=hvp_force_target,
        seed=seed,
        resume=resume,
        max_time=None if max_time is None else parse_duration(max_time),
        accelerator=accelerator,
        devices=_devices(devices),
        num_nodes=num_nodes,
        strategy=strategy,
        num_threads=threads,
        progress_bar=not quiet,
    )
    if config_path is not None or resume:
        # start from the saved options; what was given on this command line overrides them
        path = config_path or os.path.join(out, "config.yaml")
        if os.path.exists(path) or config_path is not None:
            base = TrainConfig.load(path).to_dict()
            cli_to_field = {
                "fmt": "format", "out": "out_dir", "val_fraction": "val", "val_data": "val", "patience":
                "early_stopping_patience", "threads": "num_threads", "quiet": "progress_bar", "no_ema": "ema_decay",
                "hidden": "model_options", "layers": "model_options", "model_options": "model_options",
                "paths": "data", "max_time": "max_time",
            }
            weight_fields = {"energy_weight": "energy", "forces_weight": "forces", "stress_weight": "stress",
                             "hvp_weight": "hvp", "energies_weight": "energies"}
            merged = dict(base)
            for name in given:
                if name in weight_fields:
                    merged["weights"] = {**merged["weights"], weight_fields[name]: values["weights"][weight_fields[name]]}
                    continue
                key = cli_to_field.get(name, name)
                if key == "model_options":
                    merged[key] = {**merged.get(key, {}), **options}
                elif key in values:
                    merged[key] = values[key]
            merged["resume"] = resume
            values = merged
    try:
        config = TrainConfig.from_dict(values)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if _launcher_rank_zero():  # fail fast, before Lightning starts (its child ranks skip this)
        try:
            check_out_dir(config, overwrite)
        except (OSError, ValueError) as exc:
            raise InputError(one_line(exc)) from None
    from ..training.runner import run  # imports torch and Lightning

    _quiet_lightning()
    result = run(config, overwrite=overwrite)
    if result.student is None and result.metrics_csv is None:
        return  # a non-zero rank of a multi-process run: rank 0 reports
    _summary(result, shown_path(paths))


def _summary(result, shown: str) -> None:
    echo = click.echo  # plain lines: paths are never wrapped
    best = result.best_metrics
    reason = {"early_stopping": " (early stopping)", "max_time": " (time limit)"}.get(result.stop_reason, "")
    echo(f"Trained on {shown}: {result.epochs_run} epoch(s) in {result.seconds:.1f} s{reason}")
    if result.best_epoch is not None:
        parts = []
        for key, label, unit in (("val_energy_mae", "energy", "meV/atom"), ("val_forces_mae", "forces", "meV/Å"),
                                 ("val_stress_mae", "stress", "meV/Å³"), ("val_hvp_mae", "hvp", "meV/Å²")):
            if key in best:
                parts.append(f"{label} {best[key]:.4g} {unit}")
        echo(f"Best epoch {result.best_epoch}: validation MAE " + ", ".join(parts))
    if result.test_metrics:
        parts = [f"{k.removesuffix('_mae')} {v:.4g}" for k, v in result.test_metrics.items() if k.endswith("_mae")]
        echo("Test MAE: " + ", ".join(parts))
    echo(f"Student:  {result.student}")
    echo(f"Metrics:  {result.metrics_csv}")
    echo(f"Resume:   mlff-distiller train ... --out {result.out_dir} --resume")
