"""``mlff-distiller label``: label every structure of a file with a teacher (resumable, parallel)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import click

from .errors import InputError
from .inputs import refuse_url_output
from .options import FORMAT_HELP, FiniteFloatRange, json_object


def parse_teacher_options(pairs: Sequence[str], json_text: Optional[str] = None) -> dict:
    """``key=value`` pairs (values parsed as JSON when they parse, else kept as strings), over an
    optional JSON object (``--teacher-kwargs``)."""
    options = json_object(json_text, "--teacher-kwargs", '{"rc": 5.0}')
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(f"--teacher-option: expected key=value (e.g. accuracy=0.1), got {pair!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def teacher_options(f):
    """``--teacher NAME`` and repeatable ``--teacher-option key=value``."""
    f = click.option(
        "-o", "--teacher-option", "teacher_option", multiple=True, metavar="KEY=VALUE",
        help="Teacher keyword option (repeatable); VALUE is parsed as JSON when it parses (3, 0.1, true, "
             "[1,2]), else kept as a string.",
    )(f)
    return click.option(
        "--teacher", default="emt", show_default=True,
        help="emt, gfn2-xtb, sevennet-0 (extra sevenn), mace:<model file> (extra mace), chgnet (extra chgnet), "
             "or any ASE calculator as 'module:Class'.",
    )(f)


@click.command()
@click.argument("src", metavar="IN")
@click.argument("dst", metavar="OUT")
@teacher_options
@click.option("--hvp", default=0, show_default=True, type=click.IntRange(min=0),
              help="Hessian-vector products per structure along K random unit directions (eV/Å²).")
@click.option("--hvp-step", default=None, type=FiniteFloatRange(min=0, min_open=True),
              help="Central-difference step (Å) [default: the teacher's, 1e-3 for float64 codes, 1e-2 for float32].")
@click.option("--hessian", is_flag=True, help="Store the full Hessian (all 3N directions; small molecules).")
@click.option("--hvp-method", type=click.Choice(["auto", "fd", "autograd"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the HVP directions.")
@click.option("--reuse-labels", is_flag=True,
              help="Keep energy/forces IN already carries from this teacher (MD frames of `sample`); compute the rest.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (or Ray actors), each loading the teacher once.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (e.g. auto); default: a local Ray instance.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (Ray actors then ask for one GPU each).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="torch/OpenMP threads per worker.")
@click.option("--chunk-size", default=None, type=click.IntRange(min=1),
              help="Structures per checkpoint [default: about 10 s of work].")
@click.option("-f", "--format", "fmt", default=None, help=f"Output format: {FORMAT_HELP}.")
@click.option("--input-format", default=None, help="Input format (default: from the suffix).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--restart", is_flag=True, help="Discard an interrupted run's checkpoints instead of resuming.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def label(src: str, dst: str, teacher: str, teacher_option: tuple[str, ...], hvp: int, hvp_step: Optional[float],
          hessian: bool, hvp_method: str, seed: int, reuse_labels: bool, workers: int, engine: str, address: Optional[str], device: str,
          threads: int, chunk_size: Optional[int], fmt: Optional[str], input_format: Optional[str], overwrite: bool,
          restart: bool, as_json: bool) -> None:
    """Label every structure of IN with a teacher and write OUT (ASE db, extxyz, HDF5 or packed).

    Structures keep their order whatever the number of workers, and each records its input index as
    source_index: structure i of OUT is structure source_index[i] of IN; without failures the same i.
    Labels: energy, forces,
    stress (periodic cells), per-atom energies when the teacher has them, and with --hvp K the products
    H·v (eV/Å², H = ∂²E/∂x∂x) along K random unit directions, both stored. An interrupted run (even
    kill -9) resumes when the same command is run again and gives the same file. A structure the teacher
    fails on is left out of OUT (no unlabeled rows) and listed with its input index and error in
    OUT.failures.json; the run goes on and the exit code is then 1.
    """
    from ..teachers import MissingExtraError
    from ..teachers.labeling import label_file

    refuse_url_output(dst)
    if not Path(src).exists() and "://" not in src:
        raise FileNotFoundError(2, "no such file or directory", src)
    try:
        summary = label_file(
            src, dst, teacher, teacher_options=parse_teacher_options(teacher_option), hvp=hvp, hvp_step=hvp_step,
            hessian=hessian, hvp_method=hvp_method, seed=seed, reuse_labels=reuse_labels, workers=workers, engine=engine, address=address,
            device=device, threads=threads, chunk_size=chunk_size, format=fmt, input_format=input_format,
            overwrite=overwrite, restart=restart,
        )
    except MissingExtraError as exc:
        raise InputError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2, default=str))
    else:
        rate = (summary.total - summary.resumed) / summary.seconds if summary.seconds > 0 else 0.0
        resumed = f", {summary.resumed} done by an earlier run" if summary.resumed else ""
        click.echo(f"Labeled {summary.labeled} of {summary.total} structures with {summary.teacher['name']} "
                   f"into {summary.output} in {summary.seconds:.1f} s ({rate:.1f} structures/s{resumed})")
    if summary.failed:
        first = summary.failures[0]
        click.echo(f"{summary.failed} structure(s) failed (first: structure {first['index']}: {first['error']}); "
                   f"see {summary.failures_path}", err=True)
        click.get_current_context().exit(1)
