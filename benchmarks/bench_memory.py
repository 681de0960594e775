#!/usr/bin/env python
"""Resident memory while iterating a large packed file with ``cache=False``.

    python benchmarks/bench_memory.py                        # 1,000,000 structures of 4-16 atoms
    python benchmarks/bench_memory.py --n-structures 200000 --workers 2

Writes (once, into ``--data-dir``) a packed file of small random periodic structures with
energy, forces and stress, then, in a fresh process, opens it with ``MolecularDataset`` and
iterates one shuffled epoch with ``MolecularDataLoader`` (graph batches). It prints the file
size and the process's resident memory from ``/proc/self/status``: VmRSS (what ``top`` shows),
split into RssAnon (private memory: what the loader itself allocates) and RssFile (pages of the
memory-mapped file: they belong to the OS page cache, are shared by every process reading the
file and are dropped by the OS under memory pressure; recent kernels map whole large folios of
a cached file on each touch, so RssFile soon approaches the file size), and the peak VmHWM.
With workers, each worker prints its own numbers when it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def memory_status(pid: str = "self") -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of a process in bytes (Linux /proc/<pid>/status)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def write_file(path: Path, n: int, seed: int, chunk: int = 100_000) -> None:
    """``n`` random periodic structures of 4-16 atoms, written with ``PackedBuilder.add_batch``."""
    from mlff_distiller.data.packed import PackedBuilder
    from mlff_distiller.data.structure_batch import Column, StructureBatch

    rng = np.random.default_rng(seed)
    spill = tempfile.mkdtemp(prefix=".spill-", dir=path.parent)
    builder = PackedBuilder(spill_dir=spill, source=str(path))
    try:
        for start in range(0, n, chunk):
            b = min(chunk, n - start)
            natoms = rng.integers(4, 17, size=b)
            total = int(natoms.sum())
            cell = np.repeat((8.0 * np.eye(3))[None], b, axis=0) + rng.normal(scale=0.1, size=(b, 3, 3))
            builder.add_batch(StructureBatch(np.arange(start, start + b), natoms, {
                "positions": Column(rng.random((total, 3)) * 8.0, kind="atom"),
                "species": Column(rng.integers(1, 80, size=total), kind="atom"),
                "cell": Column(cell), "pbc": Column(np.ones((b, 3), dtype=bool)),
                "energy": Column(rng.normal(size=b)),
                "forces": Column(rng.normal(size=(total, 3)), kind="atom"),
                "stress": Column(rng.normal(size=(b, 3, 3)) * 1e-3),
            }))
        tmp = path.with_name(path.name + ".partial")
        builder.write(tmp, {"source": "bench_memory random structures"})
        tmp.rename(path)
    finally:
        import shutil

        shutil.rmtree(spill, ignore_errors=True)


def iterate(path: Path, batch_size: int, workers: int, seed: int) -> dict:
    """One shuffled epoch of graph batches; memory before, after, peak (bytes)."""
    import torch

    from mlff_distiller.data import MolecularDataLoader, MolecularDataset

    torch.set_num_threads(1)
    before = memory_status()
    dataset = MolecularDataset(path, format="packed", cache=False)
    opened = memory_status()
    loader = MolecularDataLoader(dataset, batch_size=batch_size, shuffle=True, use_padding=False,
                                 num_workers=workers, pin_memory=False, seed=seed)
    t0 = time.perf_counter()
    structures = atoms = 0
    it = iter(loader)
    worker_pids = [w.pid for w in getattr(it, "_workers", [])]
    n_batches = len(loader)
    for k, batch in enumerate(it):
        structures += int(batch["natoms"].shape[0])
        atoms += int(batch["total_atoms"])
        if k == n_batches - 2:  # workers are still alive: read their memory
            workers_after = [memory_status(str(pid)) for pid in worker_pids]
    seconds = time.perf_counter() - t0
    after = memory_status()
    return {"before": before, "opened": opened, "after": after, "structures": structures, "atoms": atoms,
            "seconds": seconds, "workers": workers_after if worker_pids else []}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-structures", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mlff_distiller_bench")
    parser.add_argument("--iterate", type=Path, help=argparse.SUPPRESS)  # internal: the measuring process
    args = parser.parse_args(argv)
    if args.iterate:
        print(json.dumps(iterate(args.iterate, args.batch_size, args.workers, args.seed)))
        return 0
    args.data_dir.mkdir(parents=True, exist_ok=True)
    path = args.data_dir / f"memory-n{args.n_structures}-seed{args.seed}.packed.h5"
    if not path.exists():
        t0 = time.perf_counter()
        write_file(path, args.n_structures, args.seed)
        print(f"wrote {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    result = subprocess.run(
        [sys.executable, __file__, "--iterate", str(path), "--batch-size", str(args.batch_size),
         "--workers", str(args.workers), "--seed", str(args.seed)],
        check=True, capture_output=True, text=True,
    )
    sys.stderr.write(result.stderr)
    r = json.loads(result.stdout.strip().splitlines()[-1])
    size = path.stat().st_size
    mib = lambda v: f"{v / 2**20:,.0f} MiB"  # noqa: E731
    print(f"file: {args.n_structures:,} structures, {r['atoms']:,} atoms, {mib(size)}")
    print(f"epoch: {r['structures']:,} structures in {r['seconds']:.1f} s, batch size {args.batch_size}, "
          f"workers {args.workers}")
    print(f"{'':22s}{'VmRSS':>12s}{'RssAnon':>12s}{'RssFile':>12s}{'VmHWM':>12s}")
    rows = [(label, r[label]) for label in ("before", "opened", "after")]
    rows += [(f"worker {k} (near end)", m) for k, m in enumerate(r["workers"])]
    for label, m in rows:
        print(f"{label:22s}" + "".join(f"{mib(m.get(k, 0)):>12s}" for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")))
    anon = r["after"]["RssAnon"] - r["before"]["RssAnon"]
    rss = r["after"]["VmRSS"] - r["before"]["VmRSS"]
    print(f"growth over open + one epoch: private memory (RssAnon) {mib(anon)} = {anon / size:.3f} x the file "
          f"size; VmRSS {mib(rss)} = {rss / size:.2f} x (mapped page-cache pages, shared and reclaimable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
