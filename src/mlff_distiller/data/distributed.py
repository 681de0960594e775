"""Batches for data-parallel training (``torch.distributed`` / DDP): each rank gets its share.

>>> # doctest: +SKIP
>>> sampler = DistributedBatchSampler.from_dataset(dataset, max_atoms_per_batch=4096, seed=0)
>>> loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=molecular_collate_fn)
>>> for epoch in range(epochs):
...     sampler.set_epoch(epoch)          # or MolecularDataLoader(..., distributed=True).set_epoch
...     for batch in loader: ...

How an epoch is split (no communication between ranks: every rank computes the same plan):

1. Every rank builds the same *global* list of batches from ``seed`` and the epoch: the shuffled
   order packed by atom budget (``AtomBudgetBatchSampler``) or cut into ``batch_size`` chunks.
2. DDP needs the same number of batches on every rank (a rank that stops early leaves the others
   waiting in the gradient all-reduce for ever). With ``drop_last=False`` (default) the batch
   count is raised to the next multiple of the world size by **splitting** the largest batches in
   two (halves never exceed the budget), so every structure is seen exactly once per epoch.
   Only when there are too few structures to split into (fewer structures than
   ``world_size x batches per rank``, e.g. 3 structures on 2 ranks with ``batch_size=1``), the
   missing batches repeat structures from the start of the epoch, as torch's
   ``DistributedSampler`` pads, with a ``DistributedPaddingWarning``.
   With ``drop_last=True`` the final partial batch is dropped and then the trailing batches that
   do not fill a round of ranks: never a repeat, but those structures are not seen this epoch.
3. Rank ``r`` takes batches ``r, r + W, r + 2W, ...`` of the global list.

The order changes with the epoch: call ``set_epoch(epoch)`` before each epoch (as with torch's
``DistributedSampler``); without it each new iteration moves on to the next epoch. ``seed``
defaults to 0 (like torch's) because every rank must use the same one.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .samplers import AtomBudgetBatchSampler, EpochBatchSampler, dataset_natoms

__all__ = [
    "DistributedBatchSampler",
    "DistributedPaddingWarning",
    "distributed_world",
    "use_distributed",
    "even_out_batches",
]


class DistributedPaddingWarning(UserWarning):
    """Too few structures to give every rank the same number of batches: some are repeated."""


def distributed_world() -> tuple[int, int]:
    """(world size, rank) of the initialised default process group, or (1, 0) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def use_distributed(distributed: Optional[bool]) -> bool:
    """Resolve ``distributed=``: None means "when a process group with several ranks is up".

    ``True`` without an initialised process group is a RuntimeError (it would silently train
    every rank on the whole dataset otherwise).
    """
    world, _ = distributed_world()
    if distributed is None:
        return world > 1
    if distributed and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(
            "distributed=True needs an initialised torch.distributed process group "
            "(call torch.distributed.init_process_group first)"
        )
    return bool(distributed)


def _split_largest(batches: list[np.ndarray], count: int) -> list[np.ndarray]:
    """``batches`` with the largest ones split in two (in place in the order) until ``count`` batches.

    Stops early when every batch holds a single structure.
    """
    batches = list(batches)
    while len(batches) < count:
        sizes = np.fromiter((len(b) for b in batches), dtype=np.int64, count=len(batches))
        k = int(np.argmax(sizes)) if len(sizes) else -1
        if k < 0 or sizes[k] < 2:
            break
        half = (int(sizes[k]) + 1) // 2
        batches[k : k + 1] = [batches[k][:half], batches[k][half:]]
    return batches


def even_out_batches(
    batches: Sequence[np.ndarray], num_replicas: int, drop_last: bool = False
) -> tuple[list[np.ndarray], int]:
    """The global batch list made divisible by ``num_replicas`` (see the module docstring).

    Returns (batches, number of repeated structures added as padding).
    """
    batches = list(batches)
    nb = len(batches)
    if drop_last:
        return batches[: (nb // num_replicas) * num_replicas], 0
    target = math.ceil(nb / num_replicas) * num_replicas
    if target == 0:  # an empty dataset: every rank gets nothing
        return [], 0
    batches = _split_largest(batches, target)
    missing = target - len(batches)
    if missing:
        flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        repeat = [flat[i % len(flat) : i % len(flat) + 1] for i in range(missing)]
        batches = batches + repeat
    return batches, missing


class DistributedBatchSampler(EpochBatchSampler):
    """This rank's batches of dataset indices: size-aware (atom budget) or fixed size.

    Args:
        natoms: [S] atom count of every structure (``dataset.natoms_array()``), or just the
            number of structures S when batching by ``batch_size``.
        max_atoms_per_batch: atom budget of a batch (see ``AtomBudgetBatchSampler``); None:
            fixed ``batch_size`` batches.
        batch_size: structures per batch when ``max_atoms_per_batch`` is None.
        num_replicas, rank: world size and this rank (default: from the process group).
        shuffle: a new order every epoch; seed: the base seed, identical on every rank.
        drop_last: see the module docstring (False: every structure exactly once per epoch).
        padded, bucket_size, max_batch_size, oversized: as ``AtomBudgetBatchSampler``.
    """

    def __init__(
        self,
        natoms: Union[Sequence[int], np.ndarray, int],
        max_atoms_per_batch: Optional[int] = None,
        *,
        batch_size: Optional[int] = None,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        padded: bool = False,
        bucket_size: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        oversized: str = "own_batch",
    ) -> None:
        if num_replicas is None or rank is None:
            world, own_rank = distributed_world()
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise RuntimeError("pass num_replicas= and rank=, or initialise torch.distributed first")
            num_replicas = world if num_replicas is None else num_replicas
            rank = own_rank if rank is None else rank
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"invalid rank {rank} for num_replicas={num_replicas}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.max_atoms_per_batch = max_atoms_per_batch
        self._budget: Optional[AtomBudgetBatchSampler] = None
        if max_atoms_per_batch is not None:
            if isinstance(natoms, (int, np.integer)):
                raise TypeError("max_atoms_per_batch needs the atom count of every structure, not their number")
            self._budget = AtomBudgetBatchSampler(
                natoms, max_atoms_per_batch, shuffle=shuffle, seed=self.seed, drop_last=drop_last,
                padded=padded, bucket_size=bucket_size, max_batch_size=max_batch_size, oversized=oversized,
            )
            self.num_samples = len(self._budget.natoms)
            self.batch_size = None
        else:
            if batch_size is None or isinstance(batch_size, bool) or int(batch_size) < 1:
                raise ValueError(f"batch_size must be a positive integer without max_atoms_per_batch, got {batch_size!r}")
            self.batch_size = int(batch_size)
            self.num_samples = int(natoms) if isinstance(natoms, (int, np.integer)) else len(natoms)
        self._init_epochs()
        self._warned = False

    @classmethod
    def from_dataset(
        cls, dataset, max_atoms_per_batch: Optional[int] = None, **kwargs
    ) -> "DistributedBatchSampler":
        """Sampler over ``dataset`` (atom counts from ``dataset.natoms_array()`` with a budget)."""
        if max_atoms_per_batch is None:
            return cls(len(dataset), None, **kwargs)
        return cls(dataset_natoms(dataset), max_atoms_per_batch, **kwargs)

    # -- epochs --------------------------------------------------------------------------
    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """Every rank's batches of ``epoch``, before sharding (identical on all ranks)."""
        if self._budget is not None:
            return list(self._budget.batches(epoch))
        n = self.num_samples
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n).astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        return [order[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def _make_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` (the same count on every rank)."""
        batches, repeated = even_out_batches(self.global_batches(epoch), self.num_replicas, self.drop_last)
        if repeated and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.num_samples} structures cannot fill the same number of batches on "
                f"{self.num_replicas} ranks: {repeated} structure(s) are repeated this epoch",
                DistributedPaddingWarning,
                stacklevel=3,
            )
        return batches[self.rank :: self.num_replicas]

    def rank_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch``."""
        return self.batches(epoch)

    def __repr__(self) -> str:
        how = (f"max_atoms_per_batch={self.max_atoms_per_batch}" if self._budget is not None
               else f"batch_size={self.batch_size}")
        return (f"DistributedBatchSampler(n={self.num_samples}, {how}, rank={self.rank}/{self.num_replicas}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")
