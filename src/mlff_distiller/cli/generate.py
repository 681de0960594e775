"""``mlff-distiller generate``: a teacher-labeled dataset of built-in structures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click

from .errors import InputError
from .inputs import format_of, refuse_url_output
from .label import parse_teacher_options
from .options import FORMAT_HELP, FiniteFloatRange, parse_list
from .render import progress


@click.command()
@click.argument("out")
@click.option("-n", "--num-structures", default=300, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, identical arrays.")
@click.option(
    "--teacher",
    default="emt",
    show_default=True,
    help="Teacher labeling the structures: emt, lj, morse, gfn2-xtb, sevennet-0, ... or 'module:Class'.",
)
@click.option("--teacher-kwargs", default="{}", show_default=True, help="JSON object of keyword options.")
@click.option("-o", "--teacher-option", "teacher_option", multiple=True, metavar="KEY=VALUE",
              help="Teacher keyword option (repeatable; VALUE parsed as JSON when it parses), over --teacher-kwargs.")
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
    teacher_option: tuple[str, ...],
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
    structures, stress). A shortcut for `sample` + `label` on built-in prototypes; use those two for
    your own seed structures, Hessian-vector products or several workers.
    """
    from ..data.writers import write_structures
    from ..generate import iter_dataset

    refuse_url_output(out)
    out = Path(out)
    from ..teachers import MissingExtraError, get_teacher

    try:
        teacher_obj = get_teacher(teacher, **parse_teacher_options(teacher_option, teacher_kwargs))
    except MissingExtraError as exc:
        raise InputError(str(exc)) from None
    start = time.perf_counter()
    structures = iter_dataset(
        num_structures,
        seed,
        teacher=teacher_obj.calculator(),
        kinds=parse_list(kinds),
        max_atoms=max_atoms,
        snapshots_per_run=snapshots_per_run,
        md_interval=md_interval,
        temperature_K=temperature,
    )
    count = write_structures(
        out, progress(structures, num_structures, "generate"), fmt, overwrite=overwrite,
        metadata={"teacher": teacher_obj.info()},
    )
    seconds = time.perf_counter() - start
    click.echo(f"Wrote {count} structures to {out} ({format_of(out, fmt)}) in {seconds:.1f} s")
