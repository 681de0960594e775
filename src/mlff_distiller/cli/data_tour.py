"""``mlff-distiller demo``: the whole job on built-in data, in well under a minute on 2 cores.

1. generate a few hundred structures labeled by ASE's EMT teacher (bulk, clusters, molecules);
2. write them as an ASE database, extended XYZ, HDF5 and the packed format, and
   read every file back, checking the arrays are bit-for-bit identical;
3. print the dataset's statistics; 4. validate the file; 5. time the padded and graph loaders.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

#: file name of each format in the output directory (a packed file is HDF5 too)
DEMO_FILES = {
    "ase": "structures.db",
    "xyz": "structures.xyz",
    "hdf5": "structures.h5",
    "packed": "structures.packed.h5",
}


def _shapes(batch: dict) -> str:
    """``key [shape]`` for the tensors of a batch, in a stable order."""
    import torch

    parts = [f"{k} {list(v.shape)}" for k, v in batch.items() if isinstance(v, torch.Tensor)]
    return ", ".join(parts)


def run_demo(
    out: Path,
    *,
    num_structures: int = 300,
    seed: int = 0,
    batch_size: int = 32,
    overwrite: bool = False,
    console=None,
) -> dict:
    """Run the demo into directory ``out``; returns {format: path} of the files written.

    Raises FileExistsError when a demo file exists in ``out`` and ``overwrite`` is False.
    """
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from .render import collect_warnings, human_size, progress, render_statistics
    from ..data.dataset import MolecularDataset
    from ..data.readers import open_reader
    from ..data.stats import compute_statistics
    from ..data.writers import structure_difference, write_structures
    from ..generate import iter_dataset
    from ..data.throughput import throughput_table, time_loader
    from ..data.validate import validate_reader

    console = console or Console(highlight=False)
    t_start = time.perf_counter()
    paths = {fmt: out / name for fmt, name in DEMO_FILES.items()}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (an earlier demo?); pass --overwrite or choose --out DIR")
    out.mkdir(parents=True, exist_ok=True)

    console.print(
        Panel.fit(
            f"[bold]mlff-distiller demo[/]: {num_structures} structures labeled by ASE's EMT teacher "
            f"(seed {seed})\nbulk metals and alloys, nanoclusters and molecules, each followed by a short "
            f"Langevin MD → files in [cyan]{out}/[/]",
            border_style="blue",
        )
    )

    # 1. generate -------------------------------------------------------------------------
    console.rule("[bold]1 · generate")
    t0 = time.perf_counter()
    structures = list(progress(iter_dataset(num_structures, seed), num_structures, "generate"))
    natoms = np.array([s.natoms for s in structures])
    kinds = Counter(s.extras.get("config_type", "?") for s in structures)
    console.print(
        f"{len(structures)} structures ({', '.join(f'{v} {k}' for k, v in kinds.items())}), "
        f"{natoms.min()}–{natoms.max()} atoms, {natoms.sum()} atoms in all — {time.perf_counter() - t0:.1f} s"
    )

    # 2. write every format and read it back ------------------------------------------------
    console.rule("[bold]2 · write every format, read back")
    table = Table(title_justify="left")
    for col in ("format", "file", "size", "write", "read back"):
        table.add_column(col, justify="right" if col in ("size", "write") else "left")
    for fmt, path in paths.items():
        t0 = time.perf_counter()
        write_structures(path, structures, fmt, overwrite=overwrite)
        t_write = time.perf_counter() - t0
        reader = open_reader(path, fmt)
        back = reader.read_many(range(len(reader)))
        diffs = [(i, d) for i, (a, b) in enumerate(zip(structures, back)) if (d := structure_difference(a, b))]
        if len(reader) != len(structures):
            check = f"[red]✗ {len(reader)} structures read[/]"
        elif diffs:
            check = f"[red]✗ structure {diffs[0][0]}: {diffs[0][1]}[/]"
        else:
            check = "[green]✓ bit-identical[/]"
        table.add_row(fmt, path.name, human_size(path), f"{t_write:.2f} s", check)
    console.print(table)

    # 3. statistics -------------------------------------------------------------------------
    console.rule("[bold]3 · statistics")
    stats, notes = collect_warnings(compute_statistics, structures)
    for part in render_statistics(stats, "Summary (as `mlff-distiller stats FILE` prints it)"):
        console.print(part)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")

    # 4. validate ---------------------------------------------------------------------------
    console.rule("[bold]4 · validate")
    problems = validate_reader(open_reader(paths["hdf5"], "hdf5"))
    if problems:
        first = problems[0]
        console.print(f"[yellow]{len(problems)} problem(s)[/]; first: structure {first.index}: {first.message}")
    else:
        console.print(
            f"[green]✓[/] {paths['hdf5']}: no problems (no NaN/inf, shape mismatch, overlapping atoms "
            "< 0.5 Å, duplicate or inconsistent label)"
        )

    # 5. loaders ----------------------------------------------------------------------------
    console.rule("[bold]5 · PyTorch loaders")
    from ..data.loader import MolecularDataLoader

    dataset = MolecularDataset(paths["packed"], format="packed", return_atoms=False)
    for padded in (True, False):
        batch = next(iter(MolecularDataLoader(dataset, batch_size=batch_size, use_padding=padded)))
        console.print(f"[bold]{'padded' if padded else 'graph'} batch[/]: {_shapes(batch)}")
    rows = []
    for fmt, path in paths.items():
        ds = MolecularDataset(path, format=fmt, return_atoms=False)
        for padded in (True, False):
            r = time_loader(ds, padded=padded, workers=0, batch_size=batch_size, epochs=2)
            rows.append(dict(r, format=fmt))
    console.print(throughput_table(f"two epochs, batch size {batch_size}, main process", rows))

    console.rule()
    console.print(f"[bold green]done[/] in {time.perf_counter() - t_start:.1f} s. Next, on the command line:")
    console.print(
        f"  mlff-distiller stats {paths['ase']}\n"
        f"  mlff-distiller validate {paths['xyz']}\n"
        f"  mlff-distiller convert {paths['xyz']} {out / 'copy.h5'}\n"
        f"  mlff-distiller bench {paths['packed']} --workers 0,2",
        soft_wrap=True,
    )
    console.print("and in Python:")
    console.print(
        "  from mlff_distiller.data import MolecularDataset, MolecularDataLoader\n"
        f"  dataset = MolecularDataset({str(paths['ase'])!r}, format='ase')\n"
        "  loader = MolecularDataLoader(dataset, batch_size=32, shuffle=True)",
        soft_wrap=True,
        markup=False,
    )
    return {fmt: str(p) for fmt, p in paths.items()}
