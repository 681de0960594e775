"""``mlff-distiller stats``: sizes, labels, per-element counts and reference energies of a dataset."""

from __future__ import annotations

import json
from typing import Optional, Sequence

import click

from .errors import hide_passwords
from .inputs import member_files, open_input, require_input, scan, shown_path
from .options import FORMAT_HELP, PATHS_HELP, reader_options
from .render import collect_warnings, console, json_default, progress, render_statistics


def _statistics(paths: Sequence[str], fmt: Optional[str], options: dict, stats_options: dict) -> tuple[dict, list[str]]:
    """What ``MolecularDataset.get_statistics`` returns (without importing torch) and the text of
    any warnings (statistics, labels found nowhere). ``file``: the input as given (passwords
    hidden); ``files``: the files read (several for a glob); ``display``: how tables name the data;
    ``label_keys``: the key each label/property was read from; ``candidates``: keys that may hold
    a label the keys found in no structure."""
    from ..data.keys import STRUCTURE_LABELS
    from ..data.labels import inspect_labels
    from ..data.readers.base import check_configured_keys
    from ..data.stats import compute_statistics

    def compute():
        reader = open_input(paths, fmt, options)
        check_configured_keys(reader)
        stats = compute_statistics(progress(scan(reader), len(reader), "stats"), **stats_options)
        found = {label: stats[f"num_with_{label}"] for label in STRUCTURE_LABELS}
        report = inspect_labels(reader, found=found)  # warns (a note below) when candidates exist
        return {
            "file": shown_path(paths),
            "files": member_files(reader),
            "format": reader.format_name,
            "layout": getattr(reader, "layout_name", None),
            **stats,
            "units": dict(reader.units),
            "label_keys": report.keys,
            "candidates": report.candidates,
        }, reader.display_path

    (result, display), notes = collect_warnings(compute)
    return dict(result, display=display), [hide_passwords(n) for n in notes]


@click.command(epilog=PATHS_HELP)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--e0", "e0", type=click.Choice(["fit", "isolated"]), default="fit", show_default=True,
              help="Reference energies: least-squares fit, or the isolated-atom frames "
                   "(config_type=IsolatedAtom / isolated_atom, MACE's convention).")
@click.option("--exclude-isolated", is_flag=True,
              help="Leave the isolated-atom frames out of the other statistics (they are not training data).")
@reader_options
def stats(
    paths: tuple[str, ...], fmt: Optional[str], as_json: bool, e0: str, exclude_isolated: bool, reader: dict
) -> None:
    """Statistics of the dataset at PATH: sizes, labels, per-element counts and reference energies.

    The table says which key each label was read from; when no label is found but the file holds
    keys that look like one (dft_energy, REF_forces...), a note names them and the option to pass.
    """
    require_input(paths)
    result, notes = _statistics(paths, fmt, reader,
                                {"reference_energies": e0, "exclude_isolated": exclude_isolated})
    display = result.pop("display")
    if as_json:
        result["warnings"] = notes
        click.echo(json.dumps(result, indent=2, default=json_default))
        return
    out = console()
    fmt_text = f"{result['format']} ({result['layout']})" if result.get("layout") else result["format"]
    summary, elements = render_statistics(result, f"{display} ({fmt_text})")
    for label, key in (result.get("label_keys") or {}).items():
        summary.add_row(f"{label} read from", str(key))
    if result.get("reference_energies_source") not in (None, "fit"):
        summary.add_row("E0 from", f"{result['reference_energies_source']} "
                                   f"({len(result.get('isolated_atoms') or [])} isolated-atom frames)")
    if result.get("num_excluded"):
        summary.add_row("excluded", f"{result['num_excluded']} isolated-atom frames")
    out.print(summary)
    out.print(elements)
    from rich.markup import escape

    for note in notes:
        out.print(f"[yellow]note:[/] {escape(note)}")
