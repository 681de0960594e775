"""``mlff-distiller generate``: a teacher-labeled dataset of built-in structures."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import click

from .errors import InputError
from .inputs import format_of, refuse_url_output
from .options import FORMAT_HELP, FiniteFloatRange, parse_list
from .render import progress


def _parse_kwargs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--teacher-kwargs: not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise InputError(f"--teacher-kwargs: must be a JSON object such as '{{\"rc\": 5.0}}', got {text!r}")
    return value


@click.command()
@click.argument("out")
@click.option("-n", "--num-structures", default=300, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, identical arrays.")
@click.option(
    "--teacher",
    default="emt",
    show_default=True,
    help="ASE calculator labeling the structures: emt, lj, morse or an import path 'module:Class'.",
)
@click.option("--teacher-kwargs", default="{}", show_default=True, help="JSON object of keyword options.")
@click.option(
    "--kinds", default="bulk,cluster,molecule", show_default=True, help="Comma-separated structure kinds."
)
@click.option("--max-atoms", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--snapshots-per-run", default=5, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--md-interval", default=4, show_default=True, type=click.IntRange(min=1), help="MD steps between snapshots."
)
@click.option(
    "--temperature",
    default=300.0,
    show_default=True,
    type=FiniteFloatRange(min=0),
    help="Langevin temperature (K), >= 0.",
)
@click.option("-f", "--format", "fmt", default=None, help=f"Output format: {FORMAT_HELP}.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def generate(
    out: str,
    num_structures: int,
    seed: int,
    teacher: str,
    teacher_kwargs: str,
    kinds: str,
    max_atoms: int,
    snapshots_per_run: int,
    md_interval: int,
    temperature: float,
    fmt: Optional[str],
    overwrite: bool,
) -> None:
    """Build a teacher-labeled dataset and write it to OUT.

    Samples rattled bulk supercells, metal clusters and H/C/N/O molecules, runs a short Langevin MD
    from each and labels every snapshot with the teacher (energy, forces and, for periodic
    structures, stress).
    """
    from ..data.writers import write_structures
    from ..generate import iter_dataset

    refuse_url_output(out)
    out = Path(out)
    kwargs = _parse_kwargs(teacher_kwargs)
    start = time.perf_counter()
    structures = iter_dataset(
        num_structures,
        seed,
        teacher=teacher,
        teacher_kwargs=kwargs,
        kinds=parse_list(kinds),
        max_atoms=max_atoms,
        snapshots_per_run=snapshots_per_run,
        md_interval=md_interval,
        temperature_K=temperature,
    )
    count = write_structures(
        out, progress(structures, num_structures, "generate"), fmt, overwrite=overwrite
    )
    seconds = time.perf_counter() - start
    click.echo(f"Wrote {count} structures to {out} ({format_of(out, fmt)}) in {seconds:.1f} s")
