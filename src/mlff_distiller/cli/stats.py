"""``mlff-distiller stats``: sizes, labels, per-element counts and reference energies of a dataset."""

from __future__ import annotations

import json
from typing import Optional, Sequence

import click

from .errors import hide_passwords
from .inputs import member_files, open_input, require_input, scan, shown_path
from .options import FORMAT_HELP, PATHS_HELP, keys_from, label_options
from .render import collect_warnings, console, json_default, progress, render_statistics


def _statistics(paths: Sequence[str], fmt: Optional[str], keys: dict) -> tuple[dict, list[str]]:
    """What ``MolecularDataset.get_statistics`` returns (without importing torch) and the text of
    any statistics warnings. ``file``: the input as given (passwords hidden); ``files``: the
    files read (several for a glob); ``display``: how tables name the data."""
    from ..data.readers.base import check_configured_keys
    from ..data.stats import compute_statistics

    def compute():
        reader = open_input(paths, fmt, keys)
        check_configured_keys(reader)
        stats = compute_statistics(progress(scan(reader), len(reader), "stats"))
        return {
            "file": shown_path(paths),
            "files": member_files(reader),
            "format": reader.format_name,
            "layout": getattr(reader, "layout_name", None),
            **stats,
            "units": dict(reader.units),
        }, reader.display_path

    (result, display), notes = collect_warnings(compute)
    return dict(result, display=display), [hide_passwords(n) for n in notes]


@click.command(epilog=PATHS_HELP)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@label_options
def stats(
    paths: tuple[str, ...], fmt: Optional[str], as_json: bool, energy_key: str, forces_key: str, stress_key: str
) -> None:
    """Statistics of the dataset at PATH: sizes, labels, per-element counts and reference energies."""
    require_input(paths)
    result, notes = _statistics(paths, fmt, keys_from(energy_key, forces_key, stress_key))
    display = result.pop("display")
    if as_json:
        result["warnings"] = notes
        click.echo(json.dumps(result, indent=2, default=json_default))
        return
    out = console()
    fmt_text = f"{result['format']} ({result['layout']})" if result.get("layout") else result["format"]
    for table in render_statistics(result, f"{display} ({fmt_text})"):
        out.print(table)
    for note in notes:
        out.print(f"[yellow]note:[/] {note}")
