"""``mlff-distiller demo``: the main job on built-in data."""

from __future__ import annotations

from pathlib import Path

import click

from .render import console


@click.command()
@click.option("--out", default="demo_output", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("-n", "--num-structures", default=300, show_default=True, type=click.IntRange(min=3))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier demo in --out.")
def demo(out: Path, num_structures: int, seed: int, batch_size: int, overwrite: bool) -> None:
    """The whole job in under a minute: generate an EMT-labeled dataset, write every format,
    check the round trip, print statistics, validate and time the padded and graph loaders."""
    from .data_tour import run_demo

    run_demo(
        out, num_structures=num_structures, seed=seed, batch_size=batch_size, overwrite=overwrite, console=console()
    )
