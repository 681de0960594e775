"""Size-aware batching: budgets, exactly-once epochs, reshuffling, oversized structures."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mlff_distiller.data.samplers import AtomBudgetBatchSampler, OversizedStructureWarning, pack_by_atoms


def _reference_next_fit(order, natoms, budget, padded):
    """Plain Python next-fit packing, one structure at a time (the independent reference)."""
    batches, current = [], []
    for i in order:
        trial = current + [i]
        sizes = [max(int(natoms[k]), 1) for k in trial]
        cost = max(sizes) * len(trial) if padded else sum(sizes)
        if current and cost > budget:
            batches.append(current)
            current = [i]
        else:
            current = trial
    if current:
        batches.append(current)
    return batches


def _mixed_natoms(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.5, rng.integers(8, 13, n), rng.integers(900, 1100, n)).astype(np.int64)


@pytest.mark.parametrize("padded", [False, True])
def test_packing_equals_a_plain_next_fit_loop(padded):
    rng = np.random.default_rng(1)
    for trial in range(20):
        natoms = rng.integers(1, 60, size=rng.integers(1, 120))
        natoms[rng.random(len(natoms)) < 0.05] = 500  # some oversized
        order = rng.permutation(len(natoms))
        budget = int(rng.integers(20, 300))
        got = [b.tolist() for b in pack_by_atoms(order, natoms, budget, padded=padded)]
        assert got == _reference_next_fit(order.tolist(), natoms, budget, padded)


def test_max_batch_size_caps_structures_per_batch():
    natoms = np.full(50, 2)
    batches = pack_by_atoms(np.arange(50), natoms, 1000, max_batch_size=8)
    assert [len(b) for b in batches] == [8] * 6 + [2]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_index_once_per_epoch_within_budget(padded, drop_last):
    natoms = _mixed_natoms()
    budget = 4000
    sampler = AtomBudgetBatchSampler(natoms, budget, shuffle=True, seed=3, padded=padded, drop_last=drop_last)
    epochs = []
    for _ in range(3):
        n_batches = len(sampler)
        batches = list(sampler)
        assert len(batches) == n_batches  # __len__ is exact
        flat = np.concatenate(batches)
        assert len(np.unique(flat)) == len(flat)  # no index twice
        if drop_last:
            missing = np.setdiff1d(np.arange(len(natoms)), flat)
            # only the final, partly filled batch may be dropped
            assert len(missing) < budget
        else:
            assert sorted(flat.tolist()) == list(range(len(natoms)))
        for b in batches:
            sizes = natoms[b]
            cost = sizes.max() * len(b) if padded else sizes.sum()
            assert cost <= budget
        epochs.append([list(b) for b in batches])
    assert epochs[0] != epochs[1] != epochs[2]  # reshuffled each new iteration without set_epoch


def test_set_epoch_is_deterministic_and_seed_dependent():
    natoms = _mixed_natoms(100)
    a = AtomBudgetBatchSampler(natoms, 3000, seed=5)
    b = AtomBudgetBatchSampler(natoms, 3000, seed=5)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    a.set_epoch(4)
    first = list(a)
    a.set_epoch(4)
    assert list(a) == first
    a.set_epoch(5)
    assert list(a) != first
    c = AtomBudgetBatchSampler(natoms, 3000, seed=6)
    c.set_epoch(4)
    assert list(c) != first


def test_without_shuffle_order_is_sequential():
    natoms = np.array([3, 4, 5, 6, 7, 8, 9])
    sampler = AtomBudgetBatchSampler(natoms, 12, shuffle=False)
    assert list(sampler) == [[0, 1, 2], [3], [4], [5], [6]]
    assert [x for b in sampler for x in b] == list(range(7))
    assert list(sampler) == _reference_next_fit(range(7), natoms, 12, padded=False)
    assert list(sampler) == list(sampler)  # no reshuffle without shuffle


def test_oversized_structure_gets_its_own_batch_with_one_warning():
    natoms = np.array([10, 10, 5000, 10, 10])
    with pytest.warns(OversizedStructureWarning, match=r"2 \(5000 atoms\)"):
        sampler = AtomBudgetBatchSampler(natoms, 100, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further warning while iterating
        batches = list(sampler)
    assert [2] in batches
    assert sorted(x for b in batches for x in b) == list(range(5))
    with pytest.raises(ValueError, match=r"2 \(5000 atoms\)"):
        AtomBudgetBatchSampler(natoms, 100, oversized="error")


def test_padded_bucketing_keeps_molecules_apart_from_large_cells():
    natoms = _mixed_natoms(400)
    budget = 4000

    def waste(sampler):
        used = total = 0
        for b in sampler:
            used += natoms[b].sum()
            total += natoms[b].max() * len(b)
        return 1 - used / total

    bucketed = AtomBudgetBatchSampler(natoms, budget, seed=0, padded=True)
    unsorted = AtomBudgetBatchSampler(natoms, budget, seed=0, padded=True, bucket_size=1)
    assert waste(bucketed) < 0.1 < 0.3 < waste(unsorted)


def test_from_dataset_reads_natoms_array_not_samples():
    class CountingDataset:
        reads = 0

        def __len__(self):
            return 50

        def __getitem__(self, i):
            CountingDataset.reads += 1
            raise AssertionError("the sampler must not load samples")

        def natoms_array(self):
            return np.arange(1, 51)

    ds = CountingDataset()
    sampler = AtomBudgetBatchSampler.from_dataset(ds, 100, seed=0)
    assert len(sampler) == len(list(sampler)) and CountingDataset.reads == 0
    with pytest.raises(TypeError, match="natoms_array"):
        AtomBudgetBatchSampler.from_dataset([1, 2, 3], 10)


def test_bad_arguments_are_rejected():
    for budget in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_atoms_per_batch"):
            AtomBudgetBatchSampler([1, 2], budget)
    with pytest.raises(ValueError, match="oversized"):
        AtomBudgetBatchSampler([1, 2], 10, oversized="skip")


def test_padded_shuffle_sorts_by_size_within_buckets_of_the_shuffled_order_only():
    """The bucketing is pinned: batches are runs of the shuffled order sorted by size within buckets,
    so a batch takes its structures from one bucket (or two neighbouring ones where a batch straddles a
    bucket boundary); sorting the whole epoch would mix buckets and give the same batches every epoch."""
    natoms = np.random.default_rng(3).integers(5, 200, size=2000)
    sampler = AtomBudgetBatchSampler(natoms, 2000, padded=True, shuffle=True, seed=4, bucket_size=100)
    assert sampler.bucket_size == 100
    for epoch in (0, 1):
        position = np.empty(len(natoms), dtype=np.int64)
        position[sampler.order(epoch)] = np.arange(len(natoms))
        batches = sampler.batches(epoch)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(natoms)))
        for batch in batches:
            buckets = np.unique(position[batch] // 100)
            assert len(buckets) <= 2 and (len(buckets) == 1 or buckets[1] == buckets[0] + 1), buckets
            # within a bucket the structures come in increasing size
            for bucket in buckets:
                inside = batch[position[batch] // 100 == bucket]
                assert (np.diff(natoms[inside]) >= 0).all()
    padding = sum(len(b) * natoms[b].max() - natoms[b].sum() for b in sampler.batches(0))
    unsorted = AtomBudgetBatchSampler(natoms, 2000, padded=True, shuffle=True, seed=4, bucket_size=1)
    assert padding < 0.5 * sum(len(b) * natoms[b].max() - natoms[b].sum() for b in unsorted.batches(0))
    # the batch order is shuffled too (sorted buckets must not come out smallest first)
    means = [natoms[b].mean() for b in sampler.batches(0)]
    assert not (np.diff(means) >= 0).all()
