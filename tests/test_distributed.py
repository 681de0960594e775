"""Data-parallel batching: every structure exactly once per epoch across ranks, equal batch counts.

The sampler is checked in-process for many (dataset size, world size) pairs, then for real with
2 processes on torch.distributed's gloo backend (CPU): each rank iterates
``MolecularDataLoader(..., distributed=True)`` and all-reduces once per batch, as DDP does (a rank
with fewer batches would leave the other waiting: the process group's timeout turns that into a
failure instead of a hang).
"""

from __future__ import annotations

import json
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from mlff_distiller.data.distributed import (
    DistributedBatchSampler,
    DistributedPaddingWarning,
    even_out_batches,
    use_distributed,
)

WORLD = 2
EPOCHS = 3


def _all_ranks(world: int, epoch: int, **kwargs) -> list[list[list[int]]]:
    """Batches of every rank for ``epoch`` (samplers built as each rank would build them)."""
    out = []
    for rank in range(world):
        sampler = DistributedBatchSampler(num_replicas=world, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def _flat(per_rank) -> list[int]:
    return [i for batches in per_rank for batch in batches for i in batch]


# -- the sampler, in-process ------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 7, 8, 33, 100])
def test_fixed_size_every_index_once_equal_counts(world, n):
    for epoch in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ranks = _all_ranks(world, epoch, natoms=n, batch_size=4, seed=3)
        counts = {len(b) for b in ranks}
        assert len(counts) == 1, counts  # the same number of batches on every rank
        assert all(0 < len(batch) <= 4 for batches in ranks for batch in batches)
        flat = _flat(ranks)
        padded = [w for w in caught if issubclass(w.category, DistributedPaddingWarning)]
        if n >= world * counts.pop():  # enough structures: exactly once, no padding
            assert sorted(flat) == list(range(n))
            assert not padded
        else:  # too few structures to split into: every index at least once, repeats announced
            assert set(flat) == set(range(n)) and padded


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_atom_budget_every_index_once_within_budget(padded, world):
    rng = np.random.default_rng(0)
    natoms = rng.integers(1, 60, size=101)
    budget = 128
    seen_orders = []
    for epoch in range(3):
        ranks = _all_ranks(world, epoch, natoms=natoms, max_atoms_per_batch=budget, padded=padded, seed=11)
        assert len({len(b) for b in ranks}) == 1
        flat = _flat(ranks)
        assert sorted(flat) == list(range(len(natoms)))
        for batches in ranks:
            for batch in batches:
                sizes = natoms[batch]
                cost = sizes.max() * len(batch) if padded else sizes.sum()
                assert cost <= budget
        seen_orders.append(flat)
    assert seen_orders[0] != seen_orders[1] != seen_orders[2]  # reshuffled every epoch
    # the same epoch gives the same plan (every rank computes it independently)
    assert _flat(_all_ranks(world, 1, natoms=natoms, max_atoms_per_batch=budget, padded=padded, seed=11)) == seen_orders[1]


def test_splitting_evens_out_batch_counts():
    # 5 global batches of 4 on 2 ranks: one batch is split so that each rank gets 3
    batches = [np.arange(4 * k, 4 * k + 4) for k in range(5)]
    evened, repeated = even_out_batches(batches, 2)
    assert len(evened) == 6 and repeated == 0
    assert sorted(np.concatenate(evened).tolist()) == list(range(20))
    dropped, _ = even_out_batches(batches, 2, drop_last=True)
    assert len(dropped) == 4  # drop_last: the batch that does not fill a round is dropped


def test_padding_only_when_unavoidable():
    # 3 structures, batch_size 1, 2 ranks: 2 batches per rank need 4 structures -> one repeat
    with pytest.warns(DistributedPaddingWarning, match="repeated"):
        ranks = _all_ranks(2, 0, natoms=3, batch_size=1, shuffle=False)
    assert [len(b) for b in ranks] == [2, 2]
    assert sorted(_flat(ranks)) == [0, 0, 1, 2]


def test_drop_last_never_repeats():
    ranks = _all_ranks(3, 0, natoms=23, batch_size=4, drop_last=True, seed=1)
    flat = _flat(ranks)
    assert len({len(b) for b in ranks}) == 1
    assert len(flat) == len(set(flat)) == 12  # 5 full batches of 4, of which one round of 3 is kept
    assert all(len(batch) == 4 for batches in ranks for batch in batches)


def test_without_process_group():
    assert use_distributed(None) is False
    with pytest.raises(RuntimeError, match="init_process_group"):
        use_distributed(True)
    with pytest.raises(RuntimeError, match="num_replicas"):
        DistributedBatchSampler(10, batch_size=2)


# -- 2 processes, gloo --------------------------------------------------------------------------
CONFIGS = {
    "batch_size": dict(batch_size=4),
    "budget_graph": dict(max_atoms_per_batch=60, use_padding=False),
    "budget_padded": dict(max_atoms_per_batch=80, use_padding=True),
}


def _rank_main(rank: int, init_file: str, db_path: str, out_dir: str) -> None:
    """One rank: iterate the loaders for EPOCHS epochs, one all-reduce per batch (as DDP does)."""
    import torch.distributed as dist

    from mlff_distiller.data import MolecularDataLoader, MolecularDataset

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", world_size=WORLD, rank=rank, timeout=timedelta(seconds=30)
    )
    try:
        dataset = MolecularDataset(db_path, format="ase", return_atoms=False)
        results: dict = {}
        for name, options in CONFIGS.items():
            loader = MolecularDataLoader(dataset, shuffle=True, seed=5, distributed=True, **options)
            auto = MolecularDataLoader(dataset, shuffle=True, seed=5, **options)  # distributed=None: auto
            assert len(auto) == len(loader)
            results[name] = {"len": len(loader), "epochs": []}
            for epoch in range(EPOCHS):
                loader.set_epoch(epoch)
                batches = []
                for batch in loader:
                    batches.append(batch["idx"].tolist())
                    step = torch.ones(1)
                    dist.all_reduce(step)  # hangs (then times out) if the other rank has no batch left
                    assert int(step.item()) == WORLD
                results[name]["epochs"].append(batches)
        # a DataLoader with worker processes serves the same batches
        loader = MolecularDataLoader(dataset, shuffle=True, seed=5, distributed=True, num_workers=2, batch_size=4)
        loader.set_epoch(1)
        results["workers"] = [b["idx"].tolist() for b in loader]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Per-rank batches (indices) of every configuration and epoch, from 2 gloo processes."""
    import torch.multiprocessing as mp
    from ase.db import connect

    from conftest import emt_structures

    root = tmp_path_factory.mktemp("ddp")
    db_path = root / "structures.db"
    structures = emt_structures(23, seed=1)  # 23: not divisible by the world size
    with connect(db_path) as db:
        for atoms in structures:
            db.write(atoms)
    # fork: the ranks start in a second instead of re-importing torch (spawn works too, slowly:
    # its DataLoader workers are spawned as well)
    mp.start_processes(
        _rank_main, args=(str(root / "init"), str(db_path), str(root)), nprocs=WORLD, join=True,
        start_method="fork",
    )
    results = [json.loads((root / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return results, np.array([len(a) for a in structures])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_gloo_ranks_see_every_index_once_per_epoch(two_ranks, name):
    results, natoms = two_ranks
    n = len(natoms)
    orders = []
    for epoch in range(EPOCHS):
        per_rank = [r[name]["epochs"][epoch] for r in results]
        assert len(per_rank[0]) == len(per_rank[1]) == results[0][name]["len"] == results[1][name]["len"]
        seen = [i for batches in per_rank for batch in batches for i in batch]
        assert sorted(seen) == list(range(n)), f"epoch {epoch}: every index exactly once across ranks"
        assert set(_flat([per_rank[0]])).isdisjoint(_flat([per_rank[1]]))
        budget = CONFIGS[name].get("max_atoms_per_batch")
        if budget is not None:
            padded = CONFIGS[name]["use_padding"]
            for batches in per_rank:
                for batch in batches:
                    cost = natoms[batch].max() * len(batch) if padded else natoms[batch].sum()
                    assert cost <= budget
        orders.append(seen)
    assert orders[0] != orders[1] and orders[1] != orders[2], "set_epoch must reshuffle"


def test_two_gloo_ranks_with_workers(two_ranks):
    results, natoms = two_ranks
    w0, w1 = results[0]["workers"], results[1]["workers"]
    assert len(w0) == len(w1)
    assert sorted(_flat([w0, w1])) == list(range(len(natoms)))
    # the same batches as the in-process loader of epoch 1 (same seed, same epoch)
    assert w0 == results[0]["batch_size"]["epochs"][1] and w1 == results[1]["batch_size"]["epochs"][1]
