"""``mlff-distiller evaluate``: a student vs its teacher's labels — errors, like-for-like speed, NVE stability."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import InputError
from .options import FiniteFloatRange


@click.command()
@click.argument("student", type=click.Path(exists=True, dir_okay=False))
@click.argument("data")
@click.option("--teacher", default=None, help="Time this teacher against the student on the same structures (e.g. sevennet-0).")
@click.option("--teacher-option", "teacher_options", multiple=True, metavar="KEY=VALUE", help="Teacher keyword option (repeatable).")
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path), help="Write report.md, report.json and plots here.")
@click.option("-f", "--format", "fmt", default=None, help="Format of DATA (default: from its suffix).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads for both models. [default: torch's]")
@click.option("--device", default="cpu", show_default=True)
@click.option("--speed-structures", default=20, show_default=True, type=click.IntRange(min=2), help="Structures timed, one per call.")
@click.option("--speed-rounds", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--md-steps", default=2000, show_default=True, type=click.IntRange(min=0), help="NVE steps with the student (0: none).")
@click.option("--md-timestep-fs", default=0.5, show_default=True, type=FiniteFloatRange(min=0, min_open=True))
@click.option("--md-temperature", default=None, type=FiniteFloatRange(min=0, min_open=True), help="K. [default: the data's sampling temperature, else 300]")
@click.option("--json", "json_output", is_flag=True, help="Print the report as JSON.")
def evaluate(student, data, teacher, teacher_options, out, fmt, threads, device, speed_structures, speed_rounds,
             md_steps, md_timestep_fs, md_temperature, json_output) -> None:
    """Evaluate STUDENT (a .safetensors student) on DATA (teacher-labeled structures): energy/force/stress
    MAE and RMSE, ms per single point (with --teacher: both models, same structures, same threads),
    batched throughput (separately), an NVE run, and with --out parity and error-vs-size plots."""
    from ..evaluation import evaluate as run_evaluate
    from ..evaluation.report import render_table
    from .distill import parse_key_values
    from .render import console

    teacher_obj = None
    if teacher is not None:
        from ..teachers import MissingExtraError, get_teacher

        try:
            teacher_obj = get_teacher(teacher, **parse_key_values(teacher_options, "--teacher-option"))
        except MissingExtraError as exc:
            raise InputError(str(exc)) from None
    report = run_evaluate(
        student, data, teacher=teacher_obj, out_dir=out, device=device, num_threads=threads,
        speed_structures=speed_structures, speed_rounds=speed_rounds, md_steps=md_steps,
        md_timestep_fs=md_timestep_fs, md_temperature=md_temperature, data_format=fmt,
        log=lambda text: click.echo(text, err=True),
    )
    if json_output:
        click.echo(json.dumps(report, indent=1, default=str))
        return
    c = console()
    c.print(render_table(report, title=f"{student} on {data}"))
    acc = report["accuracy"]
    c.print(f"energy RMSE {acc['energy_per_atom']['rmse'] * 1e3:.2f} meV/atom, force RMSE "
            f"{acc['forces']['rmse'] * 1e3:.1f} meV/Å over {acc['structures']} structures")
    if out is not None:
        c.print(f"report: {out / 'report.md'}")
