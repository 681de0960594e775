"""``mlff-distiller distill``: teacher + seed structures -> a fast student, evaluated, in one command."""

from __future__ import annotations

import json
from typing import Optional

import click

from .errors import InputError
from .options import FiniteFloatRange, parse_list

#: command-line option -> DistillConfig field (options not given keep the config file's or default value)
_FIELDS = {
    "teacher": "teacher", "structures": "structures", "out": "out_dir", "budget_minutes": "budget_minutes",
    "hvp": "hvp", "model": "model", "cutoff": "cutoff", "train_temperatures": "train_temperatures",
    "test_temperatures": "test_temperatures", "train_samples": "train_samples", "test_samples": "test_samples",
    "md_interval": "md_interval", "test_interval": "test_interval", "epochs": "epochs", "train_minutes": "train_minutes", "md_steps": "md_steps",
    "threads": "threads", "seed": "seed", "label_workers": "label_workers", "batch_size": "batch_size",
    "lr": "lr", "dtype": "dtype",
}


def parse_key_values(pairs, option: str) -> dict:
    """``key=value`` strings -> dict (values parsed as YAML scalars: 5 -> int, 1e-3 -> float, true -> bool)."""
    import yaml

    out = {}
    for text in pairs:
        if "=" not in text:
            raise InputError(f"{option}: expected key=value, got {text!r}")
        key, value = text.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _temperatures(text: Optional[str], option: str):
    if text is None:
        return None
    try:
        return [float(t) for t in parse_list(text)]
    except ValueError:
        raise InputError(f"{option}: expected comma-separated temperatures in K, got {text!r}") from None


def distill_options(f):
    """The options shared by ``distill`` and ``demo``."""
    options = [
        click.option("--teacher", default=None, help="Teacher: sevennet-0 (default), gfn2-xtb, emt, mace:<file>, chgnet, module:Class."),
        click.option("--teacher-option", "teacher_options", multiple=True, metavar="KEY=VALUE", help="Teacher keyword option (repeatable)."),
        click.option("--budget-minutes", type=FiniteFloatRange(min=0, min_open=True), default=None,
                     help="Time budget of the whole run; sizes every option left on auto. [default: 60]"),
        click.option("--hvp", type=click.IntRange(min=0), default=None, help="Hessian-vector products per training structure (0: none). [default: 0]"),
        click.option("--model", default=None, help="Student architecture (painn, schnet). [default: painn]"),
        click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE", help="Student hyperparameter (repeatable)."),
        click.option("--cutoff", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Student cutoff (Å). [default: 5]"),
        click.option("--train-temperatures", default=None, help="Training MD temperatures, K, comma-separated. [default: 300,600]"),
        click.option("--test-temperatures", default=None, help="Held-out MD temperatures, K. [default: 450]"),
        click.option("--train-samples", type=click.IntRange(min=1), default=None, help="Training frames per seed and temperature. [default: auto]"),
        click.option("--test-samples", type=click.IntRange(min=1), default=None, help="Held-out frames per seed and temperature. [default: auto]"),
        click.option("--md-interval", type=click.IntRange(min=1), default=None, help="MD steps between training frames. [default: auto]"),
        click.option("--test-interval", type=click.IntRange(min=1), default=None, help="MD steps between held-out frames. [default: auto]"),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Most epochs. [default: auto]"),
        click.option("--train-minutes", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Training time limit. [default: auto]"),
        click.option("--md-steps", type=click.IntRange(min=1), default=None, help="NVE steps with the student. [default: auto]"),
        click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Training batch size. [default: 4]"),
        click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Learning rate. [default: 0.005]"),
        click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None, help="Student dtype. [default: float32]"),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for teacher, training and timing. [default: all cores]"),
        click.option("--label-workers", type=click.IntRange(min=1), default=None, help="Labeling processes. [default: 1]"),
        click.option("--seed", type=click.IntRange(min=0), default=None, help="Run seed. [default: 0]"),
        click.option("--overwrite", is_flag=True, help="Replace a finished (or different) run in the output directory."),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def build_config(base: dict, given: dict):
    """A DistillConfig from ``base`` (defaults or a config file) and the options given on the command line."""
    from ..distill import DistillConfig

    values = dict(base)
    for option, name in _FIELDS.items():
        value = given.get(option)
        if value is None or value == ():
            continue
        if option in ("train_temperatures", "test_temperatures"):
            value = _temperatures(value, f"--{option.replace('_', '-')}")
        if option == "structures":
            value = [s for item in value for s in parse_list(item)]
        values[name] = value
    if given.get("teacher_options"):
        values["teacher_options"] = parse_key_values(given["teacher_options"], "--teacher-option")
    if given.get("model_options"):
        values["model_options"] = parse_key_values(given["model_options"], "--model-option")
    if given.get("no_progress"):
        values["progress"] = False
    return DistillConfig.from_dict(values, where="options")


def print_result(result, json_output: bool = False) -> None:
    from ..evaluation.report import render_table
    from .render import console

    if json_output:
        click.echo(json.dumps(result.report, indent=1, default=str))
        return
    out = console()
    out.print(render_table(result.report, title=f"Teacher vs student ({result.out_dir})"))
    out.print(f"report: {result.report_md}  student: {result.student}  ({result.seconds / 60:.1f} min)")


@click.command()
@click.option("--structures", multiple=True, help="Seed structures: files or built-in names (aspirin, cu64, si216...), comma-separated or repeated. [default: aspirin]")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run directory. [default: distill_run]")
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=True),
              help="A config.yaml of an earlier run (or its run directory) to repeat: into --out (default: the "
                   "run's own directory, where it resumes, or with --overwrite starts again); other options override it.")
@distill_options
@click.option("--json", "json_output", is_flag=True, help="Print the report as JSON.")
def distill(structures, out, config_path, overwrite, json_output, **given) -> None:
    """Distill TEACHER on SEEDS into a fast student: sample with teacher MD, label (energies, forces,
    stress, HVPs), split by provenance, train, export, evaluate, report. Every stage writes into the
    run directory; rerun the same command to resume after an interruption."""
    from ..distill import DistillConfig
    from ..distill.run import load_run_config

    base = load_run_config(config_path).to_dict() if config_path else DistillConfig().to_dict()
    if config_path:
        base["plan"] = {}
    given.update(structures=structures or None, out=out)
    overwrite_flag = overwrite
    cfg = build_config(base, given)
    result = run_cli(cfg, overwrite_flag)
    print_result(result, json_output)


def run_cli(cfg, overwrite: bool):
    """``distill`` with its errors as one-line user errors (a finished run, a missing optional teacher)."""
    from ..distill import distill as run_distill
    from ..teachers import MissingExtraError

    try:
        return run_distill(cfg, overwrite=overwrite, log=lambda text: click.echo(text, err=True))
    except FileExistsError as exc:
        raise InputError(str(exc) if not exc.filename else f"{exc.filename}: {exc.strerror}") from None
    except MissingExtraError as exc:
        raise InputError(str(exc)) from None
