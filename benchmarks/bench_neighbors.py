"""Neighbor-list throughput: our vesin-based lists beside ASE's ``neighbor_list`` on the same data.

Structures are generated deterministically (no files, no calculators): rattled bulk supercells
(fcc Cu, diamond Si, rocksalt NaCl, triclinic-sheared), slabs with vacuum (pbc T,T,F), molecules
and non-periodic clusters (zero cell or vacuum box) of 10-1000 atoms. Each repeat runs every
method once over all structures, interleaved, and the best repeat is reported; edge counts are
checked to be equal.

    python benchmarks/bench_neighbors.py --n 50 --cutoff 5.0 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import ase
import ase.build
import numpy as np
import torch
from ase.neighborlist import neighbor_list
from rich.console import Console
from rich.table import Table

from mlff_distiller.data.neighbors import NeighborList, batch_neighbors, compute_neighbors

ASE_NAME = "ASE neighbor_list('ijS')"
MOLECULES = ["C6H6", "CH3CH2OH", "H2O", "C2H6", "CH3COOH", "C4H4NH", "CH3CH2NH2", "C60"]


def _supercell(unit: ase.Atoms, target: int) -> ase.Atoms:
    reps = max(1, int(np.ceil((target / len(unit)) ** (1 / 3) - 0.25)))
    return unit * (reps, reps, reps)


def make_structures(n: int, seed: int, max_atoms: int = 1000) -> list[ase.Atoms]:
    """``n`` structures with log-uniform sizes in [10, max_atoms], reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    units = [
        ase.build.bulk("Cu", "fcc", a=3.61, cubic=True),
        ase.build.bulk("Si", "diamond", a=5.43, cubic=True),
        ase.build.bulk("NaCl", "rocksalt", a=5.64, cubic=True),
    ]
    out = []
    for k in range(n):
        target = int(np.exp(rng.uniform(np.log(10), np.log(max_atoms))))
        kind = k % 5
        if kind == 0:
            atoms = ase.build.molecule(MOLECULES[rng.integers(len(MOLECULES))])
        elif kind == 1:  # triclinic: shear a bulk supercell
            atoms = _supercell(units[rng.integers(len(units))], target)
            atoms.set_cell(atoms.cell.array + rng.normal(0, 0.08, (3, 3)) * atoms.cell.lengths()[:, None],
                           scale_atoms=True)
        elif kind == 2:  # slab, periodic in-plane only
            side = max(2, round((target / 4) ** 0.5))
            atoms = ase.build.fcc111("Al", (side, side, 4), vacuum=8.0)
        elif kind == 3:  # non-periodic cluster cut from a crystal: zero cell, or a vacuum box
            atoms = _supercell(units[0], target)
            atoms.pbc = False
            if k % 2:
                atoms.cell = np.zeros((3, 3))
            else:
                atoms.center(vacuum=6.0)
        else:
            atoms = _supercell(units[rng.integers(len(units))], target)
        atoms.rattle(0.05, seed=int(rng.integers(2**31)))
        out.append(atoms)
    return out


def _sample(atoms: ase.Atoms) -> dict[str, torch.Tensor]:
    return {
        "positions": torch.tensor(atoms.positions, dtype=torch.float32),
        "cell": torch.tensor(atoms.cell.array, dtype=torch.float32),
        "pbc": torch.tensor(atoms.pbc),
        "natoms": torch.tensor(len(atoms)),
    }


def _graph_batches(samples: list[dict], batch_size: int) -> list[dict]:
    batches = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        natoms = torch.stack([s["natoms"] for s in chunk])
        batches.append({
            "positions": torch.cat([s["positions"] for s in chunk]),
            "cell": torch.stack([s["cell"] for s in chunk]),
            "pbc": torch.stack([s["pbc"] for s in chunk]),
            "ptr": torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(natoms, 0)]),
        })
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="number of structures")
    parser.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius in Å")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved passes; the best is reported")
    parser.add_argument("--max-atoms", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="structures per graph batch")
    parser.add_argument("--threads", type=int, default=1, help="vesin threads (0 = all cores)")
    args = parser.parse_args()

    structures = make_structures(args.n, args.seed, args.max_atoms)
    samples = [_sample(a) for a in structures]
    batches = _graph_batches(samples, args.batch_size)
    transform = NeighborList(args.cutoff, n_threads=args.threads)
    cutoff = args.cutoff

    def run_ours() -> int:
        total = 0
        for a in structures:
            edges = compute_neighbors(a.positions, a.cell.array, a.pbc, cutoff, n_threads=args.threads)
            total += edges.shifts.shape[0]
        return total

    def run_transform() -> int:
        return sum(transform(s)["shifts"].shape[0] for s in samples)

    def run_batched() -> int:
        return sum(batch_neighbors(b, cutoff, n_threads=args.threads)["shifts"].shape[0] for b in batches)

    def run_ase() -> int:
        return sum(len(neighbor_list("ijS", a, cutoff)[0]) for a in structures)

    methods = {
        "ours: compute_neighbors (numpy, sorted)": run_ours,
        "ours: NeighborList transform (torch float32)": run_transform,
        f"ours: batch_neighbors (graph batches of {args.batch_size})": run_batched,
        ASE_NAME: run_ase,
    }
    best = {name: float("inf") for name in methods}
    pairs = {}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            pairs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    counts = set(pairs.values())
    n_atoms = sum(len(a) for a in structures)
    console = Console(width=120)
    console.print(
        f"{len(structures)} structures, {n_atoms} atoms (sizes {min(map(len, structures))}-"
        f"{max(map(len, structures))}), cutoff {cutoff} Å, {pairs[ASE_NAME]} directed pairs, "
        f"best of {args.repeats} interleaved passes, vesin threads={args.threads}"
    )
    if len(counts) != 1:
        console.print(f"[red]pair counts differ between methods: {pairs}[/red]")
    table = Table()
    for column in ("method", "time (s)", "structures/s", "pairs/s", "vs ASE"):
        table.add_column(column, justify="left" if column == "method" else "right")
    ase_time = best[ASE_NAME]
    for name, seconds in best.items():
        table.add_row(
            name, f"{seconds:.4f}", f"{len(structures) / seconds:,.0f}", f"{pairs[name] / seconds:,.0f}",
            f"{ase_time / seconds:.1f}x",
        )
    console.print(table)


if __name__ == "__main__":
    main()
