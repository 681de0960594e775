"""``mlff-distiller validate``: check every structure of a dataset; exit code 1 on problems."""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from .errors import hide_passwords
from .inputs import member_files, open_input, require_input, shown_path
from .options import FORMAT_HELP, PATHS_HELP, FiniteFloatRange, keys_from, label_options
from .render import print_problems, progress


@click.command(epilog=PATHS_HELP)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option(
    "--overlap-threshold", default=0.5, show_default=True, type=FiniteFloatRange(min=0), help="Å; 0 disables."
)
@click.option(
    "--decimals",
    default=6,
    show_default=True,
    type=click.IntRange(min=0),
    help="Decimals (Å) positions are rounded to for duplicate detection.",
)
@click.option(
    "--max-show", default=50, show_default=True, type=click.IntRange(min=0), help="Problems listed in the table."
)
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@label_options
def validate(
    paths: tuple[str, ...],
    fmt: Optional[str],
    overlap_threshold: float,
    decimals: int,
    max_show: int,
    as_json: bool,
    energy_key: str,
    forces_key: str,
    stress_key: str,
) -> None:
    """Check every structure of PATH; exit code 1 when problems are found.

    Reports unreadable structures, NaN/inf, shape mismatches, invalid atomic numbers, overlapping
    atoms, duplicate structures and labels some structures carry and others lack — with indices.
    """
    from ..data.validate import validate_reader

    require_input(paths)
    reader = open_input(paths, fmt, keys_from(energy_key, forces_key, stress_key))
    problems = validate_reader(
        reader,
        overlap_threshold,
        decimals=decimals,
        progress=lambda it: progress(it, len(reader), "validate"),
    )
    if as_json:
        report = {
            "file": shown_path(paths),
            "files": member_files(reader),
            "num_structures": len(reader),
            "problems": [dict(p.as_dict(), message=hide_passwords(p.message)) for p in problems],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        print_problems(problems, len(reader), reader.display_path, max_show)
    if problems:
        sys.exit(1)
