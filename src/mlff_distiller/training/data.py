"""Training data: the dataset, its train/val/test split, training-split statistics and the loaders.

``TrainingData.prepare(config)`` opens the data, splits it (``split``: random, grouped by the
per-structure provenance key ``sample_group``, or by composition; ``auto`` groups when every
structure has a ``sample_group``), and computes the statistics of the **training split only**
(E0s, scale, loss scales). ``StudentDataModule`` serves graph batches (``cutoff`` = the model's
cutoff) through ``DistributedBatchSampler``: each rank takes every W-th batch of one global,
seeded plan that depends only on (seed, epoch), so

* a run is reproducible and a resumed run sees the same batches as an uninterrupted one;
* W ranks x ``batch_size`` b see, step for step, the structures one process sees with
  ``batch_size`` W·b whenever the epoch's ceil(n_train / b) batches are a multiple of W (e.g. when
  n_train is a multiple of W·b); otherwise the sampler splits its largest batches to give every
  rank the same count and the last steps differ.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..data.dataset import MolecularDataset, MolecularSubset
from ..data.distributed import DistributedBatchSampler
from ..data.loader import MolecularDataLoader
from ..data.split import group_train_test_split, load_split, save_split, train_test_split
from .config import TrainConfig
from .losses import LossScales
from .rundir import SPLIT_FILE

try:  # Lightning is a dependency; the data preparation itself does not need it
    from lightning.pytorch import LightningDataModule
except ImportError:  # pragma: no cover
    LightningDataModule = object  # type: ignore[assignment,misc]

__all__ = ["TrainingData", "StudentDataModule", "sample_groups", "label_rms", "average_neighbors", "SPLIT_FILE"]

_CHUNK = 256


class TrainingWarning(UserWarning):
    """Something about the training data the user should know (element missing from the training split...)."""


def _open(path, config: TrainConfig) -> MolecularDataset:
    return MolecularDataset(
        path, format=config.format, cache=config.cache, return_atoms=False, dtype=getattr(torch, config.dtype)
    )


def sample_groups(dataset) -> Optional[list[str]]:
    """The ``sample_group`` of every structure, None when no structure has one.

    ValueError naming the first structure without one when only some have it.
    """
    n = len(dataset)
    groups: list = []
    missing: Optional[int] = None
    for start in range(0, n, _CHUNK):
        for k, s in enumerate(dataset.get_structures(range(start, min(start + _CHUNK, n)))):
            value = (s.extras or {}).get("sample_group")
            if value is None:
                if missing is None:
                    missing = start + k
                groups.append(None)
            else:
                groups.append(str(value.item() if isinstance(value, np.ndarray) else value))
    present = n - groups.count(None)
    if present == 0:
        return None
    if missing is not None:
        raise ValueError(
            f"structure {missing} has no 'sample_group' while {present} of {n} structures have one; "
            "a grouped split needs it on every structure (or use split='random')"
        )
    return groups


def label_rms(dataset, key: str) -> Optional[float]:
    """RMS over all entries of the per-structure array ``key`` (e.g. 'hvp') of ``dataset``'s
    structures (read through the dataset, labels in ``Structure.extras``); None when absent."""
    total, count = 0.0, 0
    get_structures = getattr(dataset, "get_structures", None)
    n = len(dataset)
    for start in range(0, n, _CHUNK):
        idx = range(start, min(start + _CHUNK, n))
        structures = get_structures(idx) if get_structures is not None else [dataset.get_structure(i) for i in idx]
        for s in structures:
            value = getattr(s, key, None)
            if value is None:
                value = (s.extras or {}).get(key)
            if value is None:
                continue
            arr = np.asarray(value, dtype=np.float64)
            total += float(np.vdot(arr.ravel(), arr.ravel()))
            count += arr.size
    return math.sqrt(total / count) if count else None


def _subset_get_structures(subset: MolecularSubset):
    parent = subset.dataset
    return lambda idx: parent.get_structures([subset.indices[i] for i in idx])


class _SubsetReader:
    """``get_structures`` over a subset's own indices (for ``label_rms``)."""

    def __init__(self, subset: MolecularSubset) -> None:
        self.subset = subset
        self.get_structures = _subset_get_structures(subset)

    def __len__(self) -> int:
        return len(self.subset)


def _positive(*values: Optional[float], default: float = 1.0) -> float:
    for v in values:
        if v is not None and math.isfinite(v) and v > 0:
            return float(v)
    return default


@dataclass
class TrainingData:
    """The datasets of a run and what the training split says about them."""

    dataset: MolecularDataset
    train: MolecularSubset
    val: MolecularSubset
    test: Optional[MolecularSubset]
    statistics: dict  # of the training split
    species: list[int]  # every element of train/val/test
    scales: LossScales
    split_kind: str
    labels: set = field(default_factory=set)  # labels of the training split (energies: only when weighted)
    val_dataset: Optional[MolecularDataset] = None

    @classmethod
    def prepare(cls, config: TrainConfig, out_dir: Optional[Path] = None, *, write: bool = True) -> "TrainingData":
        """Open, split and summarise the data of ``config``.

        With ``out_dir`` the split is saved to ``out_dir/split.json`` (``write``: this process
        writes files) and, when ``config.resume``, read back from it instead of being drawn again.
        """
        dataset = _open(config.data, config)
        if len(dataset) == 0:
            raise ValueError(f"{config.data}: no structures to train on")
        split_path = None if out_dir is None else Path(out_dir) / SPLIT_FILE
        val_dataset = None
        if config.resume and split_path is not None and split_path.exists():
            parts = load_split(split_path, dataset)
            kind = "saved"
            if isinstance(config.val, str):
                train, test = parts
                val_dataset = _open(config.val, config)
                val = MolecularSubset(val_dataset, range(len(val_dataset)))
            else:
                train, val, test = parts
        else:
            train, val, test, kind = _split(dataset, config)
            if isinstance(config.val, str):
                val_dataset = _open(config.val, config)
                val = MolecularSubset(val_dataset, range(len(val_dataset)))
            if split_path is not None and write:
                splits = {"train": train, "test": test} if isinstance(config.val, str) else {
                    "train": train, "val": val, "test": test}
                save_split(split_path, splits, overwrite=True)
        if len(train) == 0:
            raise ValueError(f"{config.data}: the training split is empty ({len(dataset)} structures)")
        if val is None or len(val) == 0:
            raise ValueError(
                f"{config.data}: the validation split is empty ({len(dataset)} structures, val={config.val}); "
                "use more data or a larger validation fraction"
            )
        if test is not None and len(test) == 0:
            test = None
        stats = train.get_statistics()
        species = set(stats["elements"])
        for part in (val, test):
            if part is not None:
                species |= set(part.get_statistics()["elements"])
        unseen = sorted(species - set(stats["elements"]))
        if unseen:
            warnings.warn(
                f"element(s) {unseen} occur in the validation/test data but not in the training split: "
                "their reference energies are 0 and the student has not learned them",
                TrainingWarning,
                stacklevel=2,
            )
        hvp_rms = label_rms(_SubsetReader(train), "hvp")
        # per-atom teacher energies: looked for only when they would be trained on
        has_energies = config.weights.energies > 0 and label_rms(_SubsetReader(train), "energies") is not None
        labels = {
            name
            for name, present in (
                ("energy", stats.get("num_with_energy", 0) > 0),
                ("forces", stats.get("num_with_forces", 0) > 0),
                ("stress", stats.get("num_with_stress", 0) > 0),
                ("hvp", hvp_rms is not None),
                ("energies", has_energies),
            )
            if present
        }
        e_std = stats.get("energy_per_atom_residual_std")
        scales = LossScales(
            energy=_positive(e_std, stats.get("energy_per_atom_std"), default=1.0),
            forces=_positive(stats.get("forces_rms"), default=1.0),
            stress=_positive(stats.get("stress_rms"), default=1.0),
            hvp=_positive(hvp_rms, default=1.0),
            energies=_positive(e_std, stats.get("energy_per_atom_std"), default=1.0),
        )
        return cls(
            dataset=dataset, train=train, val=val, test=test, statistics=stats, species=sorted(species),
            scales=scales, split_kind=kind, labels=labels, val_dataset=val_dataset,
        )

    def normalisation(self) -> tuple[dict[int, float], float, float]:
        """(E0s {Z: eV}, scale eV, shift eV) for ``model.set_reference_energies`` / ``set_scale_shift``.

        scale: the force RMS of the training split (else the per-atom energy std); shift 0 (the
        least-squares E0s already centre the per-atom energies).
        """
        stats = self.statistics
        e0 = {int(z): float(e) for z, e in (stats.get("reference_energies") or {}).items()}
        scale = _positive(stats.get("forces_rms"), stats.get("energy_per_atom_residual_std"), default=1.0)
        return e0, scale, 0.0


def _split(dataset, config: TrainConfig):
    """(train, val, test, kind) for a fresh run."""
    kind = config.split
    groups = None
    if kind in ("auto", "group"):
        groups = sample_groups(dataset)
        if groups is None:
            if kind == "group":
                raise ValueError(
                    f"{config.data}: split='group' needs a 'sample_group' on every structure; none has one "
                    "(use split='random' or 'composition')"
                )
            kind = "random"
        else:
            kind = "group"
    test = float(config.test_fraction)
    val = 0.0 if isinstance(config.val, str) else float(config.val)
    train_ratio = 1.0 - val - test
    if kind == "random":
        train, val_part, test_part = train_test_split(dataset, train_ratio, val, test, random_seed=config.seed)
    else:
        how = "composition" if kind == "composition" else groups
        with warnings.catch_warnings():
            warnings.simplefilter("ignore" if isinstance(config.val, str) else "default")
            train, val_part, test_part = group_train_test_split(
                dataset, how, train_ratio, val, test, random_seed=config.seed
            )
    if isinstance(config.val, str):
        val_part = None
    return train, val_part, test_part, kind


def average_neighbors(subset, cutoff: float, *, max_structures: int = 1000, batch_size: int = 64) -> Optional[float]:
    """Mean number of neighbours within ``cutoff`` per atom (edges / atoms) over the first
    ``max_structures`` structures of ``subset`` (the training split), from the loader's own
    neighbour lists; None when there are no atoms."""
    count = min(len(subset), max_structures)
    if count == 0:
        return None
    head = MolecularSubset(subset, range(count)) if count < len(subset) else subset
    loader = MolecularDataLoader(head, batch_size=batch_size, use_padding=False, cutoff=float(cutoff))
    edges = atoms = 0
    for batch in loader:
        edges += int(batch["edge_index"].shape[1])
        atoms += int(batch["positions"].shape[0])
    return edges / atoms if atoms else None


class StudentDataModule(LightningDataModule):
    """Graph batches of the train/val/test splits for Lightning (one plan for all ranks, see module doc)."""

    def __init__(self, data: TrainingData, config: TrainConfig, cutoff: float) -> None:
        super().__init__()
        self.data = data
        self.config = config
        self.cutoff = float(cutoff)

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def loader(self, subset, *, train: bool, world: Optional[tuple[int, int]] = None) -> MolecularDataLoader:
        """Graph-batch loader over ``subset`` for this rank (``world``: (size, rank), default from the trainer)."""
        cfg = self.config
        size, rank = world or self._world()
        batch_size = cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size)
        sampler = DistributedBatchSampler.from_dataset(
            subset,
            cfg.max_atoms_per_batch,
            batch_size=batch_size,
            num_replicas=size,
            rank=rank,
            shuffle=train,
            seed=cfg.seed,
            drop_last=False,
        )
        return MolecularDataLoader(
            subset,
            batch_sampler=sampler,
            use_padding=False,
            cutoff=self.cutoff,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
        )

    def train_dataloader(self) -> MolecularDataLoader:
        return self.loader(self.data.train, train=True)

    def val_dataloader(self) -> MolecularDataLoader:
        return self.loader(self.data.val, train=False)

    def test_dataloader(self) -> MolecularDataLoader:
        if self.data.test is None:
            return []  # type: ignore[return-value]
        return self.loader(self.data.test, train=False)
