"""Size-aware batching: batches filled up to a budget of atoms instead of a fixed structure count.

A dataset mixing 10-atom molecules and 1000-atom cells wastes memory with a fixed batch size
(32 cells of 1000 atoms do not fit where 32 molecules fit easily). ``AtomBudgetBatchSampler``
packs structures greedily, in a (shuffled) order, into batches whose cost stays within
``max_atoms_per_batch``:

* graph batches (``padded=False``): cost = total atoms in the batch;
* padded batches (``padded=True``): cost = batch size x most atoms in the batch (the padded size),
  and by default structures are sorted by size within buckets of the shuffled order so that
  molecules are batched with molecules and cells with cells (little padding).

Each structure appears exactly once per epoch (``drop_last`` only drops the final, partly filled
batch). A structure larger than the budget cannot share a batch: by default it goes alone into its
own batch (with one warning naming it); ``oversized='error'`` raises instead. Atom counts come from
``dataset.natoms_array()`` (O(1) per structure, read from the file index, never by loading samples).

The packing core, :func:`pack_by_atoms`, is a pure function of an index order and the atom
counts, so a distributed sampler can pack the shard of one rank.
"""

from __future__ import annotations

import warnings
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["AtomBudgetBatchSampler", "pack_by_atoms", "bucket_by_size", "OversizedStructureWarning"]

OVERSIZED_POLICIES = ("own_batch", "error")


class OversizedStructureWarning(UserWarning):
    """A structure has more atoms than the batch budget and is batched alone."""


def _check_budget(max_atoms_per_batch: int) -> int:
    if isinstance(max_atoms_per_batch, bool) or int(max_atoms_per_batch) != max_atoms_per_batch:
        raise ValueError(f"max_atoms_per_batch must be a positive integer, got {max_atoms_per_batch!r}")
    if int(max_atoms_per_batch) < 1:
        raise ValueError(f"max_atoms_per_batch must be a positive integer, got {max_atoms_per_batch!r}")
    return int(max_atoms_per_batch)


def pack_by_atoms(
    order: np.ndarray,
    natoms: np.ndarray,
    max_atoms_per_batch: int,
    *,
    padded: bool = False,
    max_batch_size: Optional[int] = None,
) -> list[np.ndarray]:
    """Greedy next-fit packing of ``order`` (dataset indices) into batches within the budget.

    natoms: [S] atom count of every structure of the dataset (indexed by the entries of ``order``).
    A batch is closed when the next structure would push its cost over the budget (or its size over
    ``max_batch_size``); a structure over the budget on its own forms a one-structure batch.
    The loop runs once per batch (a ``searchsorted`` over the cumulative cost), not per structure.
    Returns the batches as int64 arrays of dataset indices, in order; their concatenation is ``order``.
    """
    budget = _check_budget(max_atoms_per_batch)
    order = np.asarray(order, dtype=np.int64)
    sizes = np.maximum(np.asarray(natoms, dtype=np.int64)[order], 1)  # an empty structure still takes a slot
    n = len(order)
    cap = n if max_batch_size is None else int(max_batch_size)
    if cap < 1:
        raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
    batches: list[np.ndarray] = []
    if not padded:
        cum = np.concatenate([[0], np.cumsum(sizes)])
        start = 0
        while start < n:
            # largest stop with cum[stop] - cum[start] <= budget
            stop = int(np.searchsorted(cum, cum[start] + budget, side="right")) - 1
            stop = min(max(stop, start + 1), start + cap, n)
            batches.append(order[start:stop])
            start = stop
        return batches
    limit = min(budget, cap)  # a batch never holds more than `budget` structures
    start, guess = 0, 8
    while start < n:
        window = min(guess, limit)
        while True:  # widen the window until the batch closes inside it (amortised O(batch))
            w = sizes[start : start + window]
            cost = np.maximum.accumulate(w) * np.arange(1, len(w) + 1)
            over = np.flatnonzero(cost > budget)
            if len(over) or window >= limit or start + window >= n:
                break
            window = min(2 * window, limit)
        take = int(over[0]) if len(over) else len(w)
        stop = start + max(take, 1)
        batches.append(order[start:stop])
        guess = 2 * (stop - start) + 1
        start = stop
    return batches


def bucket_by_size(order: np.ndarray, natoms: np.ndarray, bucket_size: int) -> np.ndarray:
    """``order`` with each run of ``bucket_size`` consecutive entries sorted by atom count (stable)."""
    order = np.asarray(order, dtype=np.int64)
    if bucket_size <= 1 or len(order) == 0:
        return order
    sizes = np.asarray(natoms, dtype=np.int64)[order]
    bucket = np.arange(len(order)) // int(bucket_size)
    return order[np.lexsort((sizes, bucket))]


class EpochBatchSampler(Sampler[list[int]]):
    """Epoch bookkeeping shared by the batch samplers: ``set_epoch``, iteration and ``len``.

    Subclasses implement ``_make_batches(epoch) -> list[np.ndarray]`` (deterministic for an
    epoch) and set ``shuffle``. Without ``set_epoch`` every new iteration of a shuffling
    sampler moves on to the next epoch's order.
    """

    shuffle: bool = False

    def _init_epochs(self) -> None:
        self._epoch = 0
        self._auto = 0  # iterations started since the last set_epoch
        self._running: Optional[int] = None  # epoch of the iteration in progress
        self._cache: Optional[tuple[int, list[np.ndarray]]] = None

    def _make_batches(self, epoch: int) -> list[np.ndarray]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration (deterministic for a given seed)."""
        self._epoch = int(epoch)
        self._auto = 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._epoch + self._auto

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The batches of ``epoch`` (cached for the last epoch asked for)."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._make_batches(epoch))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        if self.shuffle:
            self._auto += 1
        self._running = epoch
        try:
            for batch in self.batches(epoch):
                yield batch.tolist()
        finally:
            self._running = None

    def __len__(self) -> int:
        """Number of batches of the iteration in progress, else of the next one."""
        return len(self.batches(self.epoch if self._running is None else self._running))


def dataset_natoms(dataset) -> np.ndarray:
    """[S] int64 atom counts of ``dataset`` from ``dataset.natoms_array()`` (what size-aware
    batching packs from); TypeError when the dataset has none, ValueError when the count is off."""
    natoms_array = getattr(dataset, "natoms_array", None)
    if natoms_array is None:
        raise TypeError(
            f"{type(dataset).__name__} has no natoms_array(); size-aware batching needs the atom "
            "counts of every structure (MolecularDataset and MolecularSubset provide them)"
        )
    natoms = np.asarray(natoms_array(), dtype=np.int64)
    if len(natoms) != len(dataset):
        raise ValueError(f"natoms_array() has {len(natoms)} entries for a dataset of {len(dataset)}")
    return natoms


class AtomBudgetBatchSampler(EpochBatchSampler):
    """Batches of dataset indices whose atom cost stays within ``max_atoms_per_batch``.

    Args:
        natoms: [S] int atom count of every structure (``dataset.natoms_array()``).
        max_atoms_per_batch: the budget (atoms; padded: batch size x largest structure).
        shuffle: new random order every epoch (``set_epoch``; without it every new iteration
            moves on to the next epoch's order). Without shuffle the order is 0..S-1.
        seed: base seed of the per-epoch shuffles (None: drawn once from torch's global RNG).
        drop_last: drop the final, partly filled batch of each epoch.
        padded: count the padded size (batch size x most atoms) instead of the atom sum.
        bucket_size: sort runs of this many shuffled structures by size before packing (less
            padding); the batches are then shuffled. Default: 16 budgets' worth of the
            typical structure when ``padded`` and shuffling, else no sorting.
        max_batch_size: at most this many structures per batch (None: no limit).
        oversized: 'own_batch' (default: a structure over the budget is batched alone, with a
            warning) or 'error' (ValueError at construction, naming the structures).
    """

    def __init__(
        self,
        natoms: Sequence[int] | np.ndarray,
        max_atoms_per_batch: int,
        *,
        shuffle: bool = True,
        seed: Optional[int] = None,
        drop_last: bool = False,
        padded: bool = False,
        bucket_size: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        oversized: str = "own_batch",
    ) -> None:
        self.natoms = np.asarray(natoms, dtype=np.int64).reshape(-1)
        if (self.natoms < 0).any():
            raise ValueError("natoms must be non-negative")
        self.max_atoms_per_batch = _check_budget(max_atoms_per_batch)
        if oversized not in OVERSIZED_POLICIES:
            raise ValueError(f"oversized must be one of {OVERSIZED_POLICIES}, got {oversized!r}")
        if max_batch_size is not None and int(max_batch_size) < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.padded = bool(padded)
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.oversized = oversized
        if seed is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        self.seed = int(seed)
        if bucket_size is None and self.padded and self.shuffle and len(self.natoms):
            typical = max(int(np.median(self.natoms)), 1)
            bucket_size = 16 * max(self.max_atoms_per_batch // typical, 1)
        self.bucket_size = None if bucket_size is None else int(bucket_size)
        self._check_oversized()
        self._init_epochs()

    @classmethod
    def from_dataset(cls, dataset, max_atoms_per_batch: int, **kwargs) -> "AtomBudgetBatchSampler":
        """Sampler over ``dataset`` reading its atom counts with ``dataset.natoms_array()``."""
        return cls(dataset_natoms(dataset), max_atoms_per_batch, **kwargs)

    def _check_oversized(self) -> None:
        big = np.flatnonzero(self.natoms > self.max_atoms_per_batch)
        if len(big) == 0:
            return
        listed = ", ".join(f"{int(i)} ({int(self.natoms[i])} atoms)" for i in big[:5])
        more = f" and {len(big) - 5} more" if len(big) > 5 else ""
        if self.oversized == "error":
            raise ValueError(
                f"{len(big)} structure(s) exceed max_atoms_per_batch={self.max_atoms_per_batch}: "
                f"{listed}{more}; raise the budget or pass oversized='own_batch'"
            )
        warnings.warn(
            f"{len(big)} structure(s) exceed max_atoms_per_batch={self.max_atoms_per_batch} and will each "
            f"be batched alone: {listed}{more}",
            OversizedStructureWarning,
            stacklevel=3,
        )

    # -- epochs ----------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """The index order of ``epoch`` (before packing)."""
        n = len(self.natoms)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(n).astype(np.int64)

    def _make_batches(self, epoch: int) -> list[np.ndarray]:
        order = self.order(epoch)
        if self.bucket_size:
            order = bucket_by_size(order, self.natoms, self.bucket_size)
        packed = pack_by_atoms(
            order, self.natoms, self.max_atoms_per_batch, padded=self.padded, max_batch_size=self.max_batch_size
        )
        if self.drop_last and packed and not self._is_full(packed[-1]):
            packed = packed[:-1]
        if self.shuffle and self.bucket_size:  # sorted buckets: shuffle the batch order
            perm = np.random.default_rng([self.seed, epoch, 1]).permutation(len(packed))
            packed = [packed[i] for i in perm]
        return packed

    def _is_full(self, batch: np.ndarray) -> bool:
        sizes = np.maximum(self.natoms[batch], 1)
        cost = int(sizes.max()) * len(batch) if self.padded else int(sizes.sum())
        full_count = self.max_batch_size is not None and len(batch) >= self.max_batch_size
        return cost >= self.max_atoms_per_batch or full_count

    def __repr__(self) -> str:
        return (
            f"AtomBudgetBatchSampler(n={len(self.natoms)}, max_atoms_per_batch={self.max_atoms_per_batch}, "
            f"padded={self.padded}, shuffle={self.shuffle}, seed={self.seed})"
        )
