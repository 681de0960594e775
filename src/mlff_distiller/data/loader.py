"""``MolecularDataLoader`` (a torch ``DataLoader`` with molecular batching) and ``create_dataloaders``.

Examples (``dataset`` is a ``MolecularDataset``)::

    loader = MolecularDataLoader(dataset, batch_size=32, shuffle=True)             # padded batches
    loader = MolecularDataLoader(dataset, use_padding=False, cutoff=5.0)           # graphs + edges
    loader = MolecularDataLoader(dataset, max_atoms_per_batch=4096, shuffle=True)  # size-aware

Workers: datasets open their files lazily once per process (readers drop their handle when pickled
and reopen it after ``fork``), so ``num_workers > 0`` works with ``fork`` and ``spawn`` for every
format. With ``seed=`` the batches are the same whatever ``num_workers`` and ``persistent_workers``
are (the shuffle has its own generator); with ``generator=``, whatever ``num_workers`` is.

Random transforms (torch's global RNG) are reproducible for a ``seed=`` and a given ``num_workers``,
and differ between epochs: workers are seeded by torch from the loader's generator, and with
``num_workers=0`` the main process gets the same treatment: every epoch a base seed is drawn from
the loader's generator, and each batch is fetched with torch's global RNG swapped to that stream
and back, so the user's own draws between batches (dropout, ...) neither shift nor are shifted by
the loader's. The draws differ between worker counts.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
try:  # torch internals used by the lean main-process iterator; without them torch's own is used
    from torch.utils.data.dataloader import _DatasetKind, _SingleProcessDataLoaderIter
except ImportError:  # pragma: no cover - a future torch
    _DatasetKind = _SingleProcessDataLoaderIter = None

from .collate import Collater
from .samplers import AtomBudgetBatchSampler

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


def _check_return_atoms(dataset: Dataset) -> None:
    root = _root_dataset(dataset)
    if not hasattr(root, "atoms_in_batches"):
        raise ValueError(
            f"return_atoms=True needs a MolecularDataset (got {type(root).__name__}): it builds the Atoms for batches"
        )
    if not getattr(root, "return_atoms", True):
        raise ValueError("return_atoms=True needs a dataset created with return_atoms=True")


def _root_dataset(dataset: Dataset) -> Dataset:
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
        seed: seed of the loader's ``torch.Generator`` (shuffling, worker seeds): identical batches
            for a seed, whatever ``num_workers``; random transforms reproducible for a seed and a
            ``num_workers`` (with 0, the main process fetches on its own torch RNG stream).
            Mutually exclusive with ``generator=``.
        max_atoms_per_batch: size-aware batching with ``AtomBudgetBatchSampler`` (atoms per graph
            batch, or batch size x largest structure per padded batch); a structure over the budget
            is batched alone with a warning.
        cutoff: (graph batches only) add ``edge_index`` [2, E] and ``shifts`` [E, 3] computed per
            batch for this cutoff in Å.
        return_atoms: batches carry ``atoms``, a list of ``ase.Atoms`` (needs a dataset with
            ``return_atoms=True``); off by default so no Atoms are built.
        distributed: give this rank its share of every epoch (``DistributedBatchSampler``);
            None: when a ``torch.distributed`` process group with several ranks is initialised.
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
        **kwargs: Any,
    ) -> None:
        collate_fn = kwargs.pop("collate_fn", None)
        if collate_fn is None:
            collate_fn = Collater(use_padding=use_padding, cutoff=cutoff)
        elif cutoff is not None:
            raise ValueError("cutoff= is applied by the loader's own collate function; do not pass collate_fn too")
        shuffle_seed: Optional[int] = None
        if seed is not None:
            if kwargs.get("generator") is not None:
                raise ValueError("pass either seed= or generator=, not both")
            # two independent streams: the shuffle order depends on (seed, epoch) only, not on how
            # many worker seeds torch drew (which changes with num_workers / persistent_workers)
            shuffle_seed, worker_seed = (int(x) for x in np.random.SeedSequence(int(seed)).generate_state(2))
            kwargs["generator"] = torch.Generator().manual_seed(worker_seed)
        self.use_padding = bool(use_padding)
        self.cutoff = cutoff
        self.seed = seed
        self.return_atoms = bool(return_atoms)
        self.max_atoms_per_batch = max_atoms_per_batch
        #: what the caller asked for; ``self.pin_memory`` is what is used on this machine
        self.pin_memory_requested = bool(pin_memory)
        if self.return_atoms:
            _check_return_atoms(dataset)
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

    def _get_iterator(self):
        if self.num_workers == 0 and self._lean_fetch_ok():
            it = _LeanSingleProcessIterator(self)
            if all(hasattr(it, name) for name in _LeanSingleProcessIterator.NEEDS):
                return it
        return super()._get_iterator()

    def _lean_fetch_ok(self) -> bool:
        """Whether main-process batches may be fetched as ``collate_fn(dataset.__getitems__(batch))``
        (a map-style dataset with ``__getitems__``, batched sampling): exactly what torch's
        fetcher does then."""
        if _SingleProcessDataLoaderIter is None:
            return False
        kind = getattr(self, "_dataset_kind", None)
        return (
            kind == _DatasetKind.Map
            and getattr(self, "_auto_collation", False)
            and bool(getattr(self.dataset, "__getitems__", None))
        )

    def __iter__(self):
        root = _root_dataset(self.dataset)
        if hasattr(root, "atoms_in_batches"):
            # the flag is read where samples are built: in this process, or in workers forked/spawned now
            root.atoms_in_batches = self.return_atoms
        if self.seed is None or self.num_workers > 0:
            return super().__iter__()
        # main process: a per-epoch torch RNG stream of its own, drawn like torch's worker base seed
        base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item())
        return _OwnRngIterator(super().__iter__(), base_seed)


class _LeanSingleProcessIterator(_SingleProcessDataLoaderIter or object):
    """torch's main-process iterator with the per-batch fetch inlined.

    Batches are the same: the next index list from the batch sampler, ``dataset.__getitems__``
    and the collate function, pinned when asked. What is skipped is bookkeeping that costs
    ~10-20 µs per batch (comparable to collating a packed batch): torch's fetcher indirection
    and the profiler's ``record_function`` — which is kept whenever a profiler is running, so
    profiles still show the ``DataLoader`` spans. It relies on torch internals (``NEEDS``); the
    loader checks them on every new iterator and uses torch's own iterator when one is missing.
    """

    NEEDS = ("_sampler_iter", "_collate_fn", "_dataset", "_pin_memory", "_num_yielded")

    def __next__(self) -> Any:
        if self._sampler_iter is None or torch.autograd._profiler_enabled():
            return super().__next__()
        data = self._collate_fn(self._dataset.__getitems__(next(self._sampler_iter)))
        if self._pin_memory:
            data = _pin_memory(data, getattr(self, "_pin_memory_device", None))
        self._num_yielded += 1
        return data


def _pin_memory(data: Any, device: Optional[str]) -> Any:
    from torch.utils.data._utils.pin_memory import pin_memory

    return pin_memory(data, device)


class _OwnRngIterator:
    """A main-process ``DataLoader`` iterator whose batches are fetched with torch's global RNG set
    to a private stream seeded by ``seed`` (and restored afterwards), so random transforms are
    reproducible and independent of the caller's RNG use between batches."""

    def __init__(self, inner: Iterator, seed: int) -> None:
        self._inner = inner
        self._rng_state = torch.Generator().manual_seed(seed).get_state()

    def __iter__(self) -> "_OwnRngIterator":
        return self

    def __next__(self) -> Any:
        user_state = torch.get_rng_state()
        torch.set_rng_state(self._rng_state)
        try:
            return next(self._inner)
        finally:
            self._rng_state = torch.get_rng_state()
            torch.set_rng_state(user_state)

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str) -> Any:  # the wrapped iterator's attributes (_num_yielded, ...)
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


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
