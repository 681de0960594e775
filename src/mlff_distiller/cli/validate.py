"""``mlff-distiller validate``: check every structure of a dataset; exit code 1 on problems."""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from .errors import hide_passwords
from .inputs import member_files, open_input, require_input, shown_path
from .options import FORMAT_HELP, PATHS_HELP, FiniteFloatRange, reader_options
from .render import print_problems, progress

#: read whenever a file has them (optional): a repeated geometry in another charge/spin state is
#: a conflict of states, not a plain duplicate
STATE_PROPERTIES = ("total_charge", "spin")


def _with_state_properties(options: dict) -> dict:
    """``options`` asking also for the charge/spin properties, as optional ones."""
    from ..data.properties import Property, parse_properties

    asked = list(parse_properties(options.get("properties")))
    names = {p.name for p in asked}
    asked += [Property(name, required=False) for name in STATE_PROPERTIES if name not in names]
    return dict(options, properties=asked)


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
@click.option("--allow-unlabeled", is_flag=True,
              help="Data without any energy label is not a problem (inference-only input).")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@reader_options
def validate(
    paths: tuple[str, ...],
    fmt: Optional[str],
    overlap_threshold: float,
    decimals: int,
    max_show: int,
    allow_unlabeled: bool,
    as_json: bool,
    reader: dict,
) -> None:
    """Check every structure of PATH; exit code 1 when problems are found.

    Reports unreadable structures, NaN/inf, shape mismatches, invalid atomic numbers, overlapping
    atoms, duplicate structures (repeats whose charge/spin or labels differ: conflicting labels),
    labels some structures carry and others lack, and data without any energy label (with the
    keys that may hold one) — with indices, and the member file of each problem for several files.
    """
    from ..data.validate import validate_reader

    require_input(paths)
    source = open_input(paths, fmt, _with_state_properties(reader))
    problems = validate_reader(
        source,
        overlap_threshold,
        decimals=decimals,
        progress=lambda it: progress(it, len(source), "validate"),
        accept_unlabeled=allow_unlabeled,
    )
    if as_json:
        report = {
            "file": shown_path(paths),
            "files": member_files(source),
            "num_structures": len(source),
            "problems": [dict(p.as_dict(), message=hide_passwords(p.message)) for p in problems],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        print_problems(problems, len(source), source.display_path, max_show)
    if problems:
        sys.exit(1)
