"""``mlff-distiller bench``: loader throughput of a dataset (samples/s, atoms/s)."""

from __future__ import annotations

import json
import os
from typing import Optional

import click

from .errors import InputError
from .inputs import data_path, describe_format, member_files, require_input, shown_path
from .options import CUTOFF, FORMAT_HELP, PATHS_HELP, parse_list
from .render import console


@click.command(epilog=PATHS_HELP)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default="0,2", show_default=True, help="Comma-separated DataLoader worker counts.")
@click.option("--modes", default="padded,graph", show_default=True, help="Batching modes to time.")
@click.option(
    "--epochs", default=2, show_default=True, type=click.IntRange(min=1), help="Timed epochs (after a warm-up)."
)
@click.option("--cutoff", default=None, type=CUTOFF, help="Å (> 0); graph mode also builds neighbor lists.")
@click.option("--cache", is_flag=True, help="Keep the dataset in memory (MolecularDataset(cache=True)).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench(
    paths: tuple[str, ...],
    fmt: Optional[str],
    batch_size: int,
    workers: str,
    modes: str,
    epochs: int,
    cutoff: Optional[float],
    cache: bool,
    as_json: bool,
) -> None:
    """Loader throughput (samples/s, atoms/s) on PATH for padded and graph batching and worker counts."""
    require_input(paths)
    from ..data.dataset import MolecularDataset
    from ..data.throughput import throughput_table, time_loader, time_reader

    try:
        worker_counts = [int(w) for w in parse_list(workers)]
    except ValueError:
        raise InputError(f"--workers: expected comma-separated integers, got {workers!r}") from None
    if not worker_counts or min(worker_counts) < 0:
        raise InputError(f"--workers: expected integers >= 0, got {workers!r}")
    mode_list = parse_list(modes)
    if not mode_list or any(m not in ("padded", "graph") for m in mode_list):
        raise InputError(f"--modes: choose from padded, graph; got {modes!r}")
    dataset = MolecularDataset(data_path(paths), format=fmt, cache=cache, return_atoms=False)
    display = dataset.reader.display_path
    if len(dataset) == 0:
        raise InputError(f"{display}: no structures")
    fmt_name = describe_format(dataset.reader)
    rows = [dict(time_reader(dataset.reader, epochs), format=fmt_name)]
    for mode in mode_list:
        for w in worker_counts:
            rows.append(
                dict(
                    time_loader(
                        dataset,
                        padded=mode == "padded",
                        workers=w,
                        batch_size=batch_size,
                        epochs=epochs,
                        cutoff=cutoff if mode == "graph" else None,
                    ),
                    format=fmt_name,
                )
            )
    if as_json:
        report = {
            "file": shown_path(paths),
            "files": member_files(dataset.reader),
            "num_structures": len(dataset),
            "batch_size": batch_size,
            "results": rows,
        }
        click.echo(json.dumps(report, indent=2))
        return
    table = throughput_table(f"{display}: loader throughput", rows)
    table.caption = (
        f"{len(dataset)} structures, batch size {batch_size}, {epochs} timed epoch(s), {os.cpu_count()} CPU(s)"
    )
    console().print(table)
