"""``MolecularDataLoader`` (a torch ``DataLoader`` plus the molecular collate) and ``create_dataloaders``.

Examples (``dataset`` is a ``MolecularDataset``)::

    loader = MolecularDataLoader(dataset, batch_size=32, shuffle=True)             # padded batches
    loader = MolecularDataLoader(dataset, use_padding=False, cutoff=5.0)           # graphs + edges
    loader = MolecularDataLoader(dataset, max_atoms_per_batch=4096, shuffle=True)  # size-aware

The loader is torch's ``DataLoader`` with a :class:`~mlff_distiller.data.collate.Collater` as its
collate function; everything a loader asks for (padding, ``cutoff``, ``return_atoms``, the random
stream of transforms) lives in that collate object, never in the dataset, so several loaders can
share one dataset. Workers: datasets open their files lazily once per process (readers drop their
handle when pickled and reopen it after ``fork``), so ``num_workers > 0`` works with ``fork`` and
``spawn`` for every format; key declarations travel with the dataset and the collate object.

With ``seed=`` the batches are the same whatever ``num_workers`` and ``persistent_workers`` are (the
shuffle has its own generator). Random transforms then draw from a generator of the collate
function (``Transform.apply(sample, generator)``), never from torch's global RNG: in the main process
one stream seeded from ``seed`` that goes on from epoch to epoch; in a worker a stream seeded from
``seed`` and the worker's torch seed (``torch.utils.data.get_worker_info().seed``, drawn by torch
from the loader's generator every epoch, or once for persistent workers). The draws are
reproducible for a ``seed`` and ``num_workers``, differ between epochs, and differ between worker
counts.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .collate import Collater
from .keys import registry_of
from .samplers import AtomBudgetBatchSampler
from .transfer import decode_batch

__all__ = ["MolecularDataLoader", "create_dataloaders", "pin_memory_available"]


def pin_memory_available() -> bool:
    """Whether pinned host memory helps here (a CUDA-like accelerator; not CPU-only, not MPS)."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        if not accelerator.is_available():
            return False
        current = accelerator.current_accelerator()
        return current is not None and current.type != "mps"
    return torch.cuda.is_available()


def _use_distributed(distributed: Optional[bool]) -> bool:
    """``distributed=`` resolved (None: a process group with several ranks is up)."""
    if distributed is False:
        return False
    if distributed is None:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return False
    from .distributed import use_distributed

    return use_distributed(distributed)


def root_dataset(dataset: Dataset) -> Dataset:
    """The dataset at the bottom of a chain of subsets (``.dataset`` attributes)."""
    for _ in range(64):
        inner = getattr(dataset, "__dict__", {}).get("dataset")
        if inner is None:
            break
        dataset = inner
    return dataset


class MolecularDataLoader(DataLoader):
    """A torch ``DataLoader`` that batches molecular samples (see ``collate`` for the batch layout).

    Args:
        dataset: a ``MolecularDataset``, ``MolecularSubset`` or any map-style dataset of sample dicts.
        batch_size: structures per batch (ignored with ``max_atoms_per_batch``).
        shuffle: reshuffle every epoch.
        use_padding: padded batches ([B, M, ...] + ``mask``) or graph batches ([T, ...] + ``batch``).
        num_workers: worker processes (0: load in the main process).
        pin_memory: pin batches for faster host-to-GPU copies; silently off without an accelerator.
        drop_last: drop the final incomplete batch.
        seed: seed of the loader's ``torch.Generator`` (shuffling, worker seeds) and of the random
            stream of transforms: identical batches for a seed, whatever ``num_workers``; random
            transforms reproducible for a seed and a ``num_workers``, without touching torch's global
            RNG. Mutually exclusive with ``generator=``.
        max_atoms_per_batch: size-aware batching with ``AtomBudgetBatchSampler`` (atoms per graph
            batch, or batch size x largest structure per padded batch); a structure over the budget
            is batched alone with a warning.
        cutoff: (graph batches only) add ``edge_index`` [2, E] and ``shifts`` [E, 3] for this cutoff
            in Å, found from each batch's positions (stored lists of a packed file when they fit).
        return_atoms: batches carry ``atoms``, a list of ``ase.Atoms`` (needs a ``MolecularDataset``);
            off by default so no Atoms are built.
        distributed: give this rank its share of every epoch (``DistributedBatchSampler``);
            None: when a ``torch.distributed`` process group with several ranks is initialised.
        keys: key declarations for samples of datasets that are not ``MolecularDataset``s (whose
            own ``key_registry`` is used otherwise).
        **kwargs: any further ``DataLoader`` argument (sampler, batch_sampler, generator,
            worker_init_fn, persistent_workers, prefetch_factor, multiprocessing_context, timeout...).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 32,
        shuffle: bool = False,
        use_padding: bool = True,
        num_workers: int = 0,
        pin_memory: bool = True,
        drop_last: bool = False,
        *,
        seed: Optional[int] = None,
        max_atoms_per_batch: Optional[int] = None,
        cutoff: Optional[float] = None,
        return_atoms: bool = False,
        distributed: Optional[bool] = None,
        keys=None,
        **kwargs: Any,
    ) -> None:
        collate_fn = kwargs.pop("collate_fn", None)
        root = root_dataset(dataset)
        if return_atoms and not hasattr(root, "key_registry"):
            raise ValueError(
                f"return_atoms=True needs a MolecularDataset (got {type(root).__name__}): it builds the Atoms for batches"
            )
        shuffle_seed: Optional[int] = None
        transform_seed: Optional[int] = None
        if seed is not None:
            if kwargs.get("generator") is not None:
                raise ValueError("pass either seed= or generator=, not both")
            # independent streams: the shuffle order depends on (seed, epoch) only, not on how many
            # worker seeds torch drew (which changes with num_workers / persistent_workers)
            shuffle_seed, worker_seed, transform_seed = (
                int(x) for x in np.random.SeedSequence(int(seed)).generate_state(3)
            )
            kwargs["generator"] = torch.Generator().manual_seed(worker_seed)
        if collate_fn is None:
            collate_fn = Collater(
                use_padding=use_padding, cutoff=cutoff, keys=registry_of(keys, registry_of(root)),
                return_atoms=return_atoms, seed=transform_seed, transfer=num_workers > 0,
            )
        elif cutoff is not None or return_atoms:
            raise ValueError("cutoff= and return_atoms= are applied by the loader's own collate function; "
                             "do not pass collate_fn too")
        self.use_padding = bool(use_padding)
        self.cutoff = cutoff
        self.seed = seed
        self.return_atoms = bool(return_atoms)
        self.max_atoms_per_batch = max_atoms_per_batch
        #: what the caller asked for; ``self.pin_memory`` is what is used on this machine
        self.pin_memory_requested = bool(pin_memory)
        common = dict(
            num_workers=num_workers, pin_memory=pin_memory and pin_memory_available(), collate_fn=collate_fn
        )
        user_sampling = kwargs.get("sampler") is not None or kwargs.get("batch_sampler") is not None
        if max_atoms_per_batch is not None and user_sampling:
            raise ValueError("max_atoms_per_batch builds its own batch sampler; do not pass sampler/batch_sampler")

        if not user_sampling and _use_distributed(distributed):
            from .distributed import DistributedBatchSampler

            kwargs["batch_sampler"] = DistributedBatchSampler.from_dataset(
                dataset,
                max_atoms_per_batch,
                batch_size=None if max_atoms_per_batch is not None else batch_size,
                shuffle=shuffle,
                seed=0 if shuffle_seed is None else shuffle_seed,  # identical on every rank
                drop_last=drop_last,
                padded=use_padding,
            )
            super().__init__(dataset, **common, **kwargs)
            return
        if max_atoms_per_batch is not None:
            if shuffle_seed is None and kwargs.get("generator") is not None:
                shuffle_seed = int(torch.empty((), dtype=torch.int64).random_(generator=kwargs["generator"]).item())
            kwargs["batch_sampler"] = AtomBudgetBatchSampler.from_dataset(
                dataset, max_atoms_per_batch, shuffle=shuffle, seed=shuffle_seed, drop_last=drop_last,
                padded=use_padding,
            )
            super().__init__(dataset, **common, **kwargs)
            return
        if shuffle and shuffle_seed is not None and not user_sampling:
            kwargs["sampler"] = RandomSampler(dataset, generator=torch.Generator().manual_seed(shuffle_seed))
            shuffle = False
        if kwargs.get("batch_sampler") is not None:
            # torch refuses batch_size/shuffle/drop_last beside a batch sampler; ours are defaults here
            if shuffle or drop_last:
                raise ValueError("batch_sampler is mutually exclusive with shuffle and drop_last")
            batch_size = 1
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **common, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Forward ``set_epoch`` to the (batch) sampler when it has one (size-aware, distributed)."""
        for s in (self.batch_sampler, self.sampler):
            if hasattr(s, "set_epoch"):
                s.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        """torch's iterator; batches from workers are decoded from the compact transfer format."""
        iterator = super().__iter__()
        collate = self.collate_fn
        if self.num_workers > 0 and isinstance(collate, Collater) and collate.transfer:
            return _Decoded(iterator)
        return iterator


class _Decoded:
    """Batches of a worker iterator decoded from their compact transfer format (``transfer.py``)."""

    def __init__(self, inner: Iterator) -> None:
        self._inner = inner

    def __iter__(self) -> "_Decoded":
        return self

    def __next__(self) -> Any:
        return decode_batch(next(self._inner))

    def __len__(self) -> int:
        return len(self._inner)


def create_dataloaders(
    train_dataset: Dataset,
    val_dataset: Optional[Dataset] = None,
    test_dataset: Optional[Dataset] = None,
    batch_size: int = 32,
    num_workers: int = 0,
    use_padding: bool = True,
    pin_memory: bool = True,
    *,
    drop_last: bool = False,
    seed: Optional[int] = None,
    eval_batch_size: Optional[int] = None,
    **kwargs: Any,
) -> dict[str, Optional[MolecularDataLoader]]:
    """Loaders ``{'train', 'val', 'test'}``: only train is shuffled (and may ``drop_last``).

    A split given as None gets None. ``eval_batch_size`` (default ``batch_size``) sizes the val/test
    batches; further keyword arguments (``max_atoms_per_batch``, ``cutoff``,
    ``persistent_workers``, ...) go to every ``MolecularDataLoader``.
    """
    common = dict(num_workers=num_workers, use_padding=use_padding, pin_memory=pin_memory, **kwargs)
    loaders: dict[str, Optional[MolecularDataLoader]] = {
        "train": MolecularDataLoader(
            train_dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=seed, **common
        )
    }
    for name, ds in (("val", val_dataset), ("test", test_dataset)):
        loaders[name] = (
            None
            if ds is None
            else MolecularDataLoader(ds, batch_size=eval_batch_size or batch_size, shuffle=False, seed=seed, **common)
        )
    return loaders
