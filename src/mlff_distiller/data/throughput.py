"""Loader throughput: samples/s and atoms/s of a ``MolecularDataLoader`` or of a raw reader.

Used by ``mlff-distiller bench`` and ``demo``: wall-clock numbers for people, never for tests.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from .readers.base import scan



def _require_structures(n: int, name: str) -> None:
    """ValueError ``<name>: no structures`` for an empty dataset (nothing to time)."""
    if n == 0:
        raise ValueError(f"{name}: no structures")


def _result(mode: str, workers: int, batches: int, seconds: float, samples: int, atoms: int) -> dict:
    return {
        "mode": mode,
        "workers": workers,
        "batches": batches,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "atoms_per_s": atoms / seconds,
    }


def time_loader(
    dataset,
    *,
    padded: bool,
    workers: int,
    batch_size: int,
    epochs: int,
    cutoff: Optional[float] = None,
) -> dict:
    """Iterate a shuffled ``MolecularDataLoader`` over ``dataset`` for ``epochs`` timed epochs after
    one untimed warm-up epoch (worker start-up; workers persist between epochs).

    Returns mode ('padded'/'graph'), workers, batches, seconds, samples_per_s, atoms_per_s.
    """
    from .loader import MolecularDataLoader

    _require_structures(len(dataset), getattr(getattr(dataset, "reader", None), "display_path", "dataset"))
    options: dict = {"persistent_workers": True} if workers > 0 else {}
    loader = MolecularDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        use_padding=padded,
        num_workers=workers,
        seed=0,
        cutoff=cutoff,
        **options,
    )
    for _ in loader:  # warm-up
        pass
    batches = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in loader:
            batches += 1
    seconds = time.perf_counter() - start
    atoms = int(np.asarray(dataset.natoms_array()).sum()) * epochs
    return _result("padded" if padded else "graph", workers, batches, seconds, len(dataset) * epochs, atoms)


def time_reader(reader, epochs: int) -> dict:
    """Read every structure ``epochs`` times as numpy arrays with ``read_many`` (no torch, no batching)."""
    n = len(reader)
    _require_structures(n, reader.display_path)
    start = time.perf_counter()
    for _ in range(epochs):
        for _chunk in scan(reader.read_many, range(n)):
            pass
    seconds = time.perf_counter() - start
    atoms = int(np.asarray(reader.natoms_array()).sum()) * epochs
    return _result("reader.read_many", 0, 0, seconds, n * epochs, atoms)


def throughput_table(title: str, rows: list[dict]):
    """A rich table of ``rows`` (results of ``time_loader``/``time_reader`` plus ``format``)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("format", "left"),
        ("batching", "left"),
        ("workers", "right"),
        ("samples/s", "right"),
        ("atoms/s", "right"),
    ):
        table.add_column(column, justify=justify)
    for r in rows:
        table.add_row(
            r.get("format", ""),
            r["mode"],
            str(r["workers"]),
            f"{r['samples_per_s']:,.0f}",
            f"{r['atoms_per_s']:,.0f}",
        )
    return table
