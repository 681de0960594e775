#!/usr/bin/env python
"""Loader throughput: every format x padded/graph x workers beside plain-loop baselines and the
in-RAM numpy gather limit, all measured in the same run on the same data.

    python benchmarks/bench_loaders.py                      # 4,000 structures, 3 interleaved passes
    python benchmarks/bench_loaders.py --quick              # small and fast (CI smoke test)
    python benchmarks/bench_loaders.py --only packed,limit  # paths whose name contains a word

Data: deterministic EMT-labeled structures (numpy seed ``--seed``): rattled H/C/N/O molecules
of 10-14 atoms from ``ase.collections.g2``, rattled and strained fcc supercells of
Cu/Al/Ni/Pd/Ag/Au/Pt (12-256 atoms, and 4% with 863 atoms: 6x6x6 with a vacancy; these carry
stress) and icosahedral clusters (13-147 atoms); about 63 atoms per structure on average,
like the issue's data set. Written once to ``--data-dir`` as an ASE
database, extended XYZ, the guide's HDF5 layout and the packed format (with and without stored
5 Å neighbor lists).

Passes are interleaved (every path once, then again, ``--repeats`` times, in a rotated order),
because a small shared machine drifts between runs; each measurement of a path is bracketed by
two short measurements of the numpy limit (the padded limit for padded paths, the concatenated
limit otherwise) and divided by their mean, and the table shows medians over passes. Our paths iterate a
``MolecularDataLoader`` with random batches (``RandomSampler``); the clock of each pass starts
when the first batch arrives, so worker start-up is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

GENERATOR_VERSION = 2
METALS = ("Cu", "Al", "Ni", "Pd", "Ag", "Au", "Pt")
LATTICE = {"Cu": 3.61, "Al": 4.05, "Ni": 3.52, "Pd": 3.89, "Ag": 4.09, "Au": 4.08, "Pt": 3.92}


# =============================================================================================
# Data
# =============================================================================================
def generate_atoms(n: int, seed: int = 0) -> list:
    """``n`` EMT-labeled ``ase.Atoms`` (SinglePointCalculator: energy, forces, stress if periodic)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.cluster import Icosahedron
    from ase.collections import g2

    rng = np.random.default_rng(seed)
    molecules = [name for name in g2.names if set(g2[name].get_chemical_symbols()) <= set("HCNO") and len(g2[name]) >= 10]
    out = []
    for k in range(n):
        kind = rng.choice(3, p=[0.30, 0.30, 0.40])
        if kind == 0:  # molecule
            atoms = g2[molecules[rng.integers(len(molecules))]].copy()
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        elif kind == 1:  # cluster
            shells = rng.choice([2, 3, 4], p=[0.3, 0.4, 0.3])
            metal = METALS[rng.integers(len(METALS))]
            atoms = Icosahedron(metal, noshells=int(shells), latticeconstant=LATTICE[metal])
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            atoms.cell = np.zeros((3, 3))
            atoms.pbc = False
        else:  # periodic bulk, strained and rattled
            metal = METALS[rng.integers(len(METALS))]
            atoms = bulk(metal, "fcc", a=LATTICE[metal], cubic=True)
            if rng.random() < 0.04:
                atoms = atoms.repeat((6, 6, 6))
                del atoms[int(rng.integers(len(atoms)))]  # a vacancy: 863 atoms
            else:
                repeat = rng.integers(1, 5, size=3)
                while repeat.prod() < 3:
                    repeat = rng.integers(1, 5, size=3)
                atoms = atoms.repeat(tuple(int(v) for v in repeat))
            strain = np.eye(3) + rng.normal(scale=0.01, size=(3, 3))
            atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        out.append(atoms)
    return out


def write_guide_hdf5(path: Path, structures: list) -> None:
    """The guide's HDF5 layout (plus ``stress`` [3, 3] for periodic structures)."""
    import h5py
    from ase.stress import voigt_6_to_full_3x3_stress

    with h5py.File(path, "w") as f:
        root = f.create_group("structures")
        for i, atoms in enumerate(structures):
            group = root.create_group(str(i))
            group.create_dataset("positions", data=atoms.positions)
            group.create_dataset("species", data=atoms.numbers)
            group.create_dataset("cell", data=atoms.cell.array)
            group.create_dataset("pbc", data=atoms.pbc)
            group.create_dataset("energy", data=atoms.get_potential_energy())
            group.create_dataset("forces", data=atoms.get_forces())
            if "stress" in atoms.calc.results:
                group.create_dataset("stress", data=voigt_6_to_full_3x3_stress(atoms.calc.results["stress"]))


def prepare_data(data_dir: Path, n: int, seed: int, cutoff: float, log: Callable[[str], None]) -> dict:
    """Write (once) the data set in every format; returns {name: path} and timing notes."""
    from ase.db import connect
    from ase.io import write

    from mlff_distiller.data.packed import pack

    folder = data_dir / f"emt-n{n}-seed{seed}-v{GENERATOR_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "ase": folder / "structures.db",
        "xyz": folder / "structures.xyz",
        "hdf5": folder / "structures.h5",
        "packed": folder / "structures.packed.h5",
        "packed_nl": folder / f"structures.nl{cutoff:g}.packed.h5",
    }
    info: dict = {}
    if not all(p.exists() for p in files.values()):
        t0 = time.perf_counter()
        structures = generate_atoms(n, seed)
        log(f"generated {n} EMT structures in {time.perf_counter() - t0:.1f} s")
        if not files["ase"].exists():
            tmp = files["ase"].with_suffix(".partial.db")
            tmp.unlink(missing_ok=True)
            with connect(tmp) as db:
                for atoms in structures:
                    db.write(atoms)
            tmp.rename(files["ase"])
        if not files["xyz"].exists():
            write(files["xyz"].with_suffix(".partial"), structures, format="extxyz")
            files["xyz"].with_suffix(".partial").rename(files["xyz"])
        if not files["hdf5"].exists():
            write_guide_hdf5(files["hdf5"].with_suffix(".partial"), structures)
            files["hdf5"].with_suffix(".partial").rename(files["hdf5"])
        if not files["packed_nl"].exists():
            pack(files["ase"], files["packed_nl"], format="ase", cutoff=cutoff)
    # conversion ASE db -> packed, beside ASE's own row read of the same file
    files["packed"].unlink(missing_ok=True)
    t0 = time.perf_counter()
    pack(files["ase"], files["packed"], format="ase")
    info["pack_seconds"] = time.perf_counter() - t0
    info["ase_row_read_seconds"] = ase_row_read_seconds(files["ase"])
    return {"files": files, "info": info}


def ase_row_read_seconds(db_path: Path) -> float:
    """ASE's own read of every row (db.select + toatoms + labels), no conversion."""
    from ase.db import connect

    t0 = time.perf_counter()
    db = connect(db_path)
    for row in db.select():
        atoms = row.toatoms()
        atoms.get_potential_energy()
        atoms.get_forces()
    return time.perf_counter() - t0


# =============================================================================================
# Paths: each yields (structures, atoms) per batch, forever
# =============================================================================================
@dataclass
class Path_:
    name: str
    kind: str  # "graph" (ratio to the concatenated limit) or "padded" (to the padded limit)
    make: Callable[[], Iterator[tuple[int, int]]]
    group: str = "ours"
    samples: list = field(default_factory=list)  # samples/s per pass
    atoms: list = field(default_factory=list)  # atoms/s per pass
    ratios: list = field(default_factory=list)  # ratio to the limit measured beside it
    error: Optional[str] = None


class RamData:
    """Every structure as concatenated numpy arrays in RAM (the limit and vesin baselines)."""

    def __init__(self, packed_path: Path) -> None:
        from mlff_distiller.data.packed import open_packed

        store = open_packed(packed_path).to_memory()
        a = store.arrays
        self.offsets = store.offsets
        self.natoms = store.natoms_array()
        self.positions, self.numbers, self.forces = a["positions"], a["numbers"], a["forces"]
        self.cell, self.pbc = a["cell"], a["pbc"]
        self.energy = np.where(a["energy_present"], a["energy"], 0.0)
        self.stress = np.where(a["stress_present"][:, None, None], a["stress"], 0.0)

    def __len__(self) -> int:
        return len(self.natoms)


def _random_batches(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for a in range(0, n - batch_size + 1, batch_size):
            yield order[a : a + batch_size]


def limit_path(data: RamData, batch_size: int, padded: bool, seed: int) -> Iterator[tuple[int, int]]:
    """The numpy in-RAM limit: random batch -> one vectorised gather -> float32 torch tensors."""
    for idx in _random_batches(len(data), batch_size, seed):
        natoms = data.natoms[idx]
        starts = data.offsets[idx]
        first = np.concatenate([[0], np.cumsum(natoms[:-1])])
        atom = np.arange(int(natoms.sum())) + np.repeat(starts - first, natoms)
        pos, num, frc = data.positions.take(atom, axis=0), data.numbers.take(atom), data.forces.take(atom, axis=0)
        if padded:
            b, m = len(idx), int(natoms.max())
            rows = np.repeat(np.arange(b) * m - first, natoms) + np.arange(len(atom))
            p = torch.zeros((b * m, 3), dtype=torch.float32)
            p[torch.from_numpy(rows)] = torch.from_numpy(pos.astype(np.float32))
            z = torch.zeros(b * m, dtype=torch.int64)
            z[torch.from_numpy(rows)] = torch.from_numpy(num)
            f = torch.zeros((b * m, 3), dtype=torch.float32)
            f[torch.from_numpy(rows)] = torch.from_numpy(frc.astype(np.float32))
            batch = (p.view(b, m, 3), z.view(b, m), f.view(b, m, 3), torch.arange(m)[None] < torch.from_numpy(natoms)[:, None])
        else:
            batch = (torch.from_numpy(pos.astype(np.float32)), torch.from_numpy(num), torch.from_numpy(frc.astype(np.float32)))
        batch += (
            torch.from_numpy(data.energy.take(idx).astype(np.float32)),
            torch.from_numpy(data.cell.take(idx, axis=0).astype(np.float32)),
            torch.from_numpy(data.stress.take(idx, axis=0).astype(np.float32)),
            torch.from_numpy(data.pbc.take(idx, axis=0)),
        )
        yield len(idx), len(atom)


def _collate_arrays(items: list[tuple]) -> tuple:
    """Minimal graph collate of per-sample numpy arrays (what a hand-written loop would do)."""
    pos = torch.cat([torch.from_numpy(np.asarray(p, dtype=np.float32)) for p, *_ in items])
    num = torch.cat([torch.from_numpy(np.asarray(z, dtype=np.int64)) for _, z, *_ in items])
    frc = torch.cat([torch.from_numpy(np.asarray(f, dtype=np.float32)) for *_, f, _ in items])
    energy = torch.tensor([e for *_, e in items], dtype=torch.float32)
    return pos, num, frc, energy


def ase_db_loop(db_path: Path, batch_size: int) -> Iterator[tuple[int, int]]:
    """Plain ASE db loop: db.select() + toatoms() + get_potential_energy()/get_forces()."""
    from ase.db import connect

    db = connect(db_path)
    while True:
        items = []
        for row in db.select():
            atoms = row.toatoms()
            items.append((atoms.positions, atoms.numbers, atoms.get_forces(), atoms.get_potential_energy()))
            if len(items) == batch_size:
                _collate_arrays(items)
                yield batch_size, sum(len(p) for p, *_ in items)
                items = []


def ase_iread_loop(xyz_path: Path, batch_size: int) -> Iterator[tuple[int, int]]:
    """Plain extended XYZ loop: ase.io.iread(':') + get_potential_energy()/get_forces()."""
    from ase.io import iread

    while True:
        items = []
        for atoms in iread(xyz_path, index=":", format="extxyz"):
            items.append((atoms.positions, atoms.numbers, atoms.get_forces(), atoms.get_potential_energy()))
            if len(items) == batch_size:
                _collate_arrays(items)
                yield batch_size, sum(len(p) for p, *_ in items)
                items = []


def h5py_loop(h5_path: Path, n: int, batch_size: int, seed: int) -> Iterator[tuple[int, int]]:
    """Plain h5py loop over the guide layout (file opened once, random batches)."""
    import h5py

    with h5py.File(h5_path, "r") as f:
        root = f["structures"]
        for idx in _random_batches(n, batch_size, seed):
            items = []
            for i in idx:
                g = root[str(i)]
                items.append((g["positions"][()], g["species"][()], g["forces"][()], float(g["energy"][()])))
                g["cell"][()], g["pbc"][()]
            _collate_arrays(items)
            yield len(idx), sum(len(p) for p, *_ in items)


def vesin_path(data: RamData, batch_size: int, cutoff: float, seed: int) -> Iterator[tuple[int, int]]:
    """vesin alone: the neighbor list of each structure of random batches (arrays in RAM), one
    thread (as in the loader, where each DataLoader worker is one process)."""
    import vesin

    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True, n_threads=1)
    for idx in _random_batches(len(data), batch_size, seed):
        atoms = 0
        for i in idx:
            a, b = data.offsets[i], data.offsets[i + 1]
            calculator.compute(data.positions[a:b], data.cell[i], data.pbc[i], quantities="ijS", copy=True)
            atoms += b - a
        yield len(idx), int(atoms)


def pyg_path(data: RamData, batch_size: int, cutoff: float, seed: int) -> Optional[Callable]:
    """PyG's in-memory loader with precomputed edges (only when torch_geometric is installed)."""
    try:
        from torch_geometric.data import Data
        from torch_geometric.loader import DataLoader as PygLoader
    except ImportError:
        return None
    from mlff_distiller.data.neighbors import compute_neighbors

    graphs = []
    for i in range(len(data)):
        a, b = data.offsets[i], data.offsets[i + 1]
        edges = compute_neighbors(data.positions[a:b], data.cell[i], data.pbc[i], cutoff)
        graphs.append(Data(
            pos=torch.from_numpy(data.positions[a:b].astype(np.float32)), z=torch.from_numpy(data.numbers[a:b]),
            forces=torch.from_numpy(data.forces[a:b].astype(np.float32)),
            energy=torch.tensor([data.energy[i]], dtype=torch.float32),
            cell=torch.from_numpy(data.cell[i].astype(np.float32))[None],
            edge_index=torch.from_numpy(edges.edge_index), shifts=torch.from_numpy(edges.shifts),
        ))

    def make() -> Iterator[tuple[int, int]]:
        sampler = torch.utils.data.RandomSampler(graphs, num_samples=10**9, generator=torch.Generator().manual_seed(seed))
        for batch in PygLoader(graphs, batch_size=batch_size, sampler=sampler):
            yield int(batch.num_graphs), int(batch.num_nodes)

    return make


def loader_path(path: Path, fmt: str, padded: bool, workers: int, batch_size: int, seed: int,
                cache: bool = False, cutoff: Optional[float] = None) -> Iterator[tuple[int, int]]:
    """Our ``MolecularDataLoader`` over ``MolecularDataset(path)`` with random batches."""
    from torch.utils.data import RandomSampler

    from mlff_distiller.data import MolecularDataLoader, MolecularDataset

    dataset = MolecularDataset(path, format=fmt, cache=cache)
    sampler = RandomSampler(dataset, num_samples=10**9, generator=torch.Generator().manual_seed(seed))
    loader = MolecularDataLoader(
        dataset, batch_size=batch_size, use_padding=padded, num_workers=workers, pin_memory=False,
        sampler=sampler, cutoff=cutoff, drop_last=True,
    )
    for batch in loader:
        total = batch.get("total_atoms")  # graph batches carry it; padded ones need a sum
        yield int(batch["natoms"].shape[0]), int(batch["natoms"].sum()) if total is None else total


def direct_path(path: Path, fmt: str, padded: bool, batch_size: int, seed: int) -> Iterator[tuple[int, int]]:
    """Our fast path without the DataLoader: ``dataset.__getitems__(batch).collate(...)``."""
    from mlff_distiller.data import MolecularDataset

    dataset = MolecularDataset(path, format=fmt)
    for idx in _random_batches(len(dataset), batch_size, seed):
        batch = dataset.__getitems__(idx.tolist()).collate(padded)
        total = batch.get("total_atoms")
        yield int(batch["natoms"].shape[0]), int(batch["natoms"].sum()) if total is None else total


# =============================================================================================
# Measuring
# =============================================================================================
def measure(make: Callable[[], Iterator[tuple[int, int]]], min_time: float, min_batches: int) -> tuple[float, float]:
    """(samples/s, atoms/s) over at least ``min_time`` s and ``min_batches`` batches; the clock
    starts after the first batch (start-up of workers and files is not counted)."""
    it = make()
    next(it)
    samples = atoms = batches = 0
    t0 = time.perf_counter()
    while True:
        s, a = next(it)
        samples, atoms, batches = samples + s, atoms + a, batches + 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time and batches >= min_batches:
            break
    it.close()
    return samples / elapsed, atoms / elapsed


def build_paths(files: dict, data: RamData, args) -> list[Path_]:
    bs, seed, cutoff = args.batch_size, args.seed, args.cutoff
    n = len(data)
    paths = [
        Path_("limit: numpy gather, concatenated", "graph", lambda: limit_path(data, bs, False, seed), "limit"),
        Path_("limit: numpy gather, padded", "padded", lambda: limit_path(data, bs, True, seed), "limit"),
        Path_("baseline: ASE db select+toatoms loop", "graph", lambda: ase_db_loop(files["ase"], bs), "baseline"),
        Path_("baseline: ase.io.iread extxyz loop", "graph", lambda: ase_iread_loop(files["xyz"], bs), "baseline"),
        Path_("baseline: plain h5py loop (guide)", "graph", lambda: h5py_loop(files["hdf5"], n, bs, seed), "baseline"),
        Path_(f"baseline: vesin alone, {cutoff:g} A, 1 thread", "graph", lambda: vesin_path(data, bs, cutoff, seed), "baseline"),
    ]
    pyg = pyg_path(data, bs, cutoff, seed) if args.pyg else None
    if pyg is not None:
        paths.append(Path_(f"baseline: PyG in-memory + edges {cutoff:g} A", "graph", pyg, "baseline"))
    sources = [("ase", files["ase"], "ase", False), ("xyz", files["xyz"], "xyz", False),
               ("hdf5", files["hdf5"], "hdf5", False), ("packed", files["packed"], "packed", False),
               ("packed cache", files["packed"], "packed", True)]
    for padded in (False, True):
        mode = "padded" if padded else "graph"
        paths.append(Path_(f"ours: packed, {mode}, no DataLoader", mode,
                           (lambda pd=padded: direct_path(files["packed"], "packed", pd, bs, seed))))
    for workers in args.workers:
        for label, path, fmt, cache in sources:
            for padded in (False, True):
                mode = "padded" if padded else "graph"
                paths.append(Path_(
                    f"ours: {label}, {mode}, w{workers}", mode,
                    (lambda p=path, f=fmt, pd=padded, w=workers, c=cache: loader_path(p, f, pd, w, bs, seed, cache=c)),
                ))
        paths.append(Path_(
            f"ours: packed, graph + NL {cutoff:g} A on the fly, w{workers}", "graph",
            (lambda w=workers: loader_path(files["packed"], "packed", False, w, bs, seed, cutoff=cutoff)),
        ))
        paths.append(Path_(
            f"ours: packed, graph + stored NL {cutoff:g} A, w{workers}", "graph",
            (lambda w=workers: loader_path(files["packed_nl"], "packed", False, w, bs, seed, cutoff=cutoff)),
        ))
    if args.only:
        words = [w.strip() for w in args.only.split(",") if w.strip()]
        paths = [p for p in paths if p.group == "limit" or any(w in p.name for w in words)]
    return paths


def run_passes(paths: list[Path_], args, log: Callable[[str], None]) -> None:
    """``--repeats`` passes over every path (rotated order). Each measurement of a path is
    bracketed by short measurements of its limit, and its ratio is taken to the mean of those
    two: on a shared machine the drift over a few seconds is much smaller than over a pass."""
    limits = {p.kind: p for p in paths if p.group == "limit"}
    bracket = max(args.min_time / 2, 0.01)

    def run(p: Path_, min_time: float) -> Optional[tuple[float, float]]:
        try:
            return measure(p.make, min_time, args.min_batches)
        except Exception as exc:  # noqa: BLE001 - reported in the table, never hidden
            p.error = f"{type(exc).__name__}: {exc}"
            log(f"  {p.name}: {p.error}")
            return None

    for rep in range(args.repeats):
        order = paths[rep % len(paths):] + paths[: rep % len(paths)]  # rotate to spread drift
        for p in order:
            if p.error:
                continue
            limit = limits[p.kind]
            before = run(limit, bracket) if p is not limit else None
            result = run(p, args.min_time)
            after = run(limit, bracket) if p is not limit else None
            if result is None:
                continue
            p.samples.append(result[0])
            p.atoms.append(result[1])
            if p is limit:
                p.ratios.append(1.0)
            elif before and after:
                p.ratios.append(result[0] / ((before[0] + after[0]) / 2))
        log(f"pass {rep + 1}/{args.repeats} done")


def _median(values: list) -> Optional[float]:
    return statistics.median(values) if values else None


def format_table(paths: list[Path_]) -> str:
    rows = [("path", "samples/s", "atoms/s", "ratio to limit", "kind")]
    for p in paths:
        if p.error:
            rows.append((p.name, "error", p.error[:60], "", p.kind))
            continue
        s, a, r = _median(p.samples), _median(p.atoms), _median(p.ratios)
        rows.append((p.name, f"{s:,.0f}", f"{a:,.0f}", "n/a" if r is None else f"{r:.4f}", p.kind))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def targets(paths: list[Path_], info: dict, workers: list[int], cutoff: float) -> list[tuple[str, str, Optional[float]]]:
    """(target, measured, ratio) per target of the issue, from the paths' median ratios to the limit."""
    by = {p.name: p for p in paths}

    def ratio(a: str, b: str) -> Optional[float]:
        """a / b via their ratios to the limit measured beside each (the limit cancels)."""
        pa, pb = by.get(a), by.get(b)
        if not pa or not pb or not pa.ratios or not pb.ratios:
            return None
        return _median(pa.ratios) / _median(pb.ratios)

    w = workers[0]
    out = [
        ("packed graph / concatenated limit >= 0.5", ratio(f"ours: packed, graph, w{w}", "limit: numpy gather, concatenated")),
        ("packed padded / padded limit >= 0.6", ratio(f"ours: packed, padded, w{w}", "limit: numpy gather, padded")),
        ("guide HDF5 (no cache) / plain h5py loop >= 2", ratio(f"ours: hdf5, graph, w{w}", "baseline: plain h5py loop (guide)")),
        ("ASE db (no cache) / ASE db loop >= 2", ratio(f"ours: ase, graph, w{w}", "baseline: ASE db select+toatoms loop")),
        (f"packed + NL on the fly / vesin alone >= 0.7", ratio(f"ours: packed, graph + NL {cutoff:g} A on the fly, w{w}", f"baseline: vesin alone, {cutoff:g} A, 1 thread")),
        ("packed + stored NL / PyG in-memory with edges >= 2", ratio(f"ours: packed, graph + stored NL {cutoff:g} A, w{w}", f"baseline: PyG in-memory + edges {cutoff:g} A")),
    ]
    if "pack_seconds" in info:
        out.append(("ASE db -> packed time / ASE row read time (~1)", info["pack_seconds"] / info["ase_row_read_seconds"]))
    return [(name, "n/a" if r is None else f"{r:.2f}", r) for name, r in out]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-structures", type=int, default=None, help="default 4000 (200 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="0,2", help="comma-separated num_workers values (default 0,2)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved passes over all paths (default 3)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per path per pass (default 1.0)")
    parser.add_argument("--min-batches", type=int, default=None, help="batches per path per pass, at least (default 3)")
    parser.add_argument("--cutoff", type=float, default=5.0, help="neighbor-list cutoff in Å")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mlff_distiller_bench")
    parser.add_argument("--only", default="", help="comma-separated words: run only paths containing one")
    parser.add_argument("--no-pyg", dest="pyg", action="store_false", help="skip the PyG baseline")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true",
                        help="small and fast defaults: 200 structures, 1 pass, 0.2 s, 2 batches")
    args = parser.parse_args(argv)
    defaults = dict(n_structures=200, repeats=1, min_time=0.2, min_batches=2) if args.quick else dict(
        n_structures=4000, repeats=3, min_time=1.0, min_batches=3)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if args.n_structures < 2 * args.batch_size:
        parser.error("--n-structures must be at least twice --batch-size")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    prepared = prepare_data(args.data_dir, args.n_structures, args.seed, args.cutoff, log)
    files, info = prepared["files"], prepared["info"]
    data = RamData(files["packed"])
    paths = build_paths(files, data, args)
    log(f"{len(data)} structures, {int(data.natoms.sum())} atoms ({data.natoms.min()}-{data.natoms.max()} per "
        f"structure); {len(paths)} paths x {args.repeats} passes of >= {args.min_time} s")
    run_passes(paths, args, log)
    print(f"\n{len(data)} structures, {int(data.natoms.sum())} atoms, batch size {args.batch_size}, "
          f"{args.repeats} interleaved passes, torch threads 1, cpus {os.cpu_count()}")
    print(format_table(paths))
    print("\ntargets (ratios of median ratios to the limit measured beside each path):")
    rows = targets(paths, info, args.workers, args.cutoff)
    width = max(len(name) for name, _, _ in rows)
    for name, text, _ in rows:
        print(f"  {name.ljust(width)}  {text}")
    print(f"\nASE db -> packed: {info['pack_seconds']:.2f} s; ASE's own row read of the same db: "
          f"{info['ase_row_read_seconds']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "paths": [{"name": p.name, "kind": p.kind, "samples_per_s": p.samples, "atoms_per_s": p.atoms,
                       "ratios": p.ratios, "error": p.error} for p in paths],
            "info": info, "targets": {name: r for name, _, r in rows},
        }, indent=1))
    return 1 if any(p.error for p in paths) else 0


if __name__ == "__main__":
    sys.exit(main())
