"""``mlff-distiller convert``: any supported format to any other, losslessly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click

from .inputs import conversion_notes, describe_format, format_of, open_input, refuse_url_output, require_input, scan
from .options import CUTOFF, FORMAT_HELP, PATHS_HELP, reader_options
from .render import progress


@click.command(epilog=PATHS_HELP.replace("PATH", "IN"))
@click.argument("srcs", metavar="IN...", nargs=-1, required=True)
@click.argument("dst", metavar="OUT")
@click.option("--from", "from_fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option("--to", "to_fmt", default=None, help=f"Output format: {FORMAT_HELP}.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option(
    "--cutoff", default=None, type=CUTOFF, help="Å (> 0); packed output only: also store neighbor lists."
)
@reader_options
def convert(
    srcs: tuple[str, ...],
    dst: str,
    from_fmt: Optional[str],
    to_fmt: Optional[str],
    overwrite: bool,
    cutoff: Optional[float],
    reader: dict,
) -> None:
    """Convert IN to OUT (any supported format to any other), losslessly.

    Positions, atomic numbers, cell, pbc, energy, forces, stress, the extras a file carries
    (per-atom energies, HVPs, provenance) and the --properties read are copied exactly (float64
    bit for bit), in eV/Å after the unit options. Several inputs (or a glob) are written one after
    the other into OUT.
    """
    from ..data.readers.base import check_configured_keys
    from ..data.writers import write_structures

    require_input(srcs)
    refuse_url_output(dst)
    dst = Path(dst)
    start = time.perf_counter()
    options = reader
    reader = open_input(srcs, from_fmt, options)
    if dst.exists() and any(
        "://" not in f and Path(f).resolve() == dst.resolve() for f in getattr(reader, "paths", [reader.path])
    ):
        raise ValueError(f"{dst}: input and output are the same file")
    check_configured_keys(reader)
    out_fmt = format_of(dst, to_fmt)
    if cutoff is not None and out_fmt != "packed":
        raise ValueError(f"--cutoff stores neighbor lists in the packed format only, not in {out_fmt!r}")
    if out_fmt == "packed":  # the packed writer reads the reader itself (keeps its units and source)
        from ..data.packed import write_packed

        bar = progress(None, len(reader), "convert")
        try:
            count = write_packed(dst, reader, overwrite=overwrite, cutoff=cutoff, progress=bar.update)
        finally:
            bar.close()
    else:
        structures = progress(scan(reader), len(reader), "convert")
        count = write_structures(dst, structures, out_fmt, overwrite=overwrite, keys=reader.key_registry)
    click.echo(
        f"Converted {count} structures: {reader.display_path} ({describe_format(reader)}) -> {dst} ({out_fmt}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    for note in conversion_notes(reader):
        click.echo(note, err=True)
