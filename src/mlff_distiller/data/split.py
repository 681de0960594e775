"""Train/validation/test splits: random, group-aware (no leakage between splits), saved to JSON.

``train_test_split`` returns three ``MolecularSubset`` views whose ``.indices`` are positions in the
given dataset: disjoint, covering every index, the same for the same ``random_seed``. Split sizes
are ``ratio x len`` rounded by largest remainder (they always add up to ``len``).

``group_train_test_split`` keeps every structure of a group in the same split: by default a group is
a chemical composition (e.g. all conformers of C2H6O), so a model is never tested on a molecule it
was trained on. Sizes are then as close to the ratios as whole groups allow.

``groups`` may also name a per-structure property the structures carry (``'config_type'``,
``'sample_group'``, ``'head'``...): structures sharing its value share a group.

Isolated-atom frames (MACE's ``config_type=IsolatedAtom``, see ``stats``) are reference data,
not training structures: ``exclude_isolated_atoms=True`` leaves them out of every split.

``save_split`` / ``load_split`` write and read the indices as JSON (with the dataset's length and a
fingerprint of its atom counts), so a run can be reproduced on the same data.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from .dataset import MolecularSubset
from .indices import subset_root
from .publish import write_atomic
from .readers.base import chunks, scan
from .stats import ISOLATED_CONFIG_TYPES, is_isolated_atom

__all__ = [
    "train_test_split", "group_train_test_split", "composition_groups", "property_groups", "isolated_atom_indices",
    "save_split", "load_split",
]

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FILE_FORMAT = "mlff_distiller.split"
SPLIT_FILE_VERSION = 1


def _check_ratios(train_ratio: float, val_ratio: float, test_ratio: float) -> np.ndarray:
    ratios = np.array([train_ratio, val_ratio, test_ratio], dtype=np.float64)
    if not np.all(np.isfinite(ratios)) or (ratios < 0).any():
        raise ValueError(
            "split ratios must be finite and non-negative, got "
            f"train={train_ratio}, val={val_ratio}, test={test_ratio}"
        )
    if not math.isclose(float(ratios.sum()), 1.0, rel_tol=0.0, abs_tol=1e-6):
        raise ValueError(
            f"split ratios must sum to 1, got train={train_ratio} + val={val_ratio} + test={test_ratio} "
            f"= {ratios.sum():.6g}"
        )
    return ratios


def split_sizes(n: int, ratios: Sequence[float]) -> np.ndarray:
    """Integer sizes summing to ``n``, proportional to ``ratios`` (largest remainder, ties to the first)."""
    exact = np.asarray(ratios, dtype=np.float64) * n
    sizes = np.floor(exact + 1e-9).astype(np.int64)
    remainder = int(n - sizes.sum())
    if remainder > 0:
        order = np.argsort(-(exact - sizes), kind="stable")
        sizes[order[:remainder]] += 1
    return sizes


def isolated_atom_indices(dataset, config_types: Sequence[str] = ISOLATED_CONFIG_TYPES) -> np.ndarray:
    """[K] int64 indices of the isolated-atom frames of ``dataset`` (one atom, ``config_type`` in
    ``config_types``). Only the one-atom structures are read (atom counts come from the index)."""
    single = np.flatnonzero(np.asarray(dataset.natoms_array()) == 1)
    if single.size == 0:
        return np.zeros(0, dtype=np.int64)
    found = []
    for chunk, structures in zip(chunks(single.tolist()), _structure_chunks(dataset, single)):
        found.extend(i for i, s in zip(chunk, structures) if is_isolated_atom(s, config_types))
    return np.asarray(found, dtype=np.int64)


def _candidates(dataset, exclude_isolated_atoms: bool) -> np.ndarray:
    """Indices a split distributes: all, or all but the isolated-atom frames."""
    n = len(dataset)
    if not exclude_isolated_atoms:
        return np.arange(n, dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    keep[isolated_atom_indices(dataset)] = False
    return np.flatnonzero(keep).astype(np.int64)


def train_test_split(
    dataset,
    train_ratio: float = 0.8,
    val_ratio: float = 0.1,
    test_ratio: float = 0.1,
    shuffle: bool = True,
    random_seed: Optional[int] = 42,
    exclude_isolated_atoms: bool = False,
) -> tuple[MolecularSubset, MolecularSubset, MolecularSubset]:
    """Random split of ``dataset`` into (train, val, test) ``MolecularSubset`` views.

    ValueError when a ratio is negative or they do not sum to 1. With ``shuffle=False`` the
    splits are consecutive runs of indices. ``random_seed=None`` gives a different split each call.
    ``exclude_isolated_atoms``: isolated-atom frames go to no split (``isolated_atom_indices``).
    """
    ratios = _check_ratios(train_ratio, val_ratio, test_ratio)
    pool = _candidates(dataset, exclude_isolated_atoms)
    n = len(pool)
    order = pool[np.random.default_rng(random_seed).permutation(n)] if shuffle else pool
    bounds = np.cumsum(split_sizes(n, ratios))
    parts = np.split(order, bounds[:-1])
    return tuple(MolecularSubset(dataset, part.tolist()) for part in parts)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- groups


def _species_chunks(dataset, indices: np.ndarray):
    """Atomic numbers of ``dataset[indices]``, chunk by chunk, without building samples or Atoms."""
    dataset, indices = subset_root(dataset, indices)
    get_structures = getattr(dataset, "get_structures", None)
    if get_structures is not None:
        for structures in scan(get_structures, indices.tolist()):
            yield [np.asarray(s.numbers, dtype=np.int64) for s in structures]
        return
    for chunk in chunks(indices.tolist()):
        yield [np.asarray(dataset[i]["species"], dtype=np.int64) for i in chunk]


def _structure_chunks(dataset, indices: np.ndarray):
    """Raw structures of ``dataset[indices]``, chunk by chunk (a subset asks its parent)."""
    dataset, indices = subset_root(dataset, indices)
    get_structures = getattr(dataset, "get_structures", None)
    if get_structures is None:
        raise TypeError(f"{type(dataset).__name__} gives no raw structures (get_structures); group by a list instead")
    yield from scan(get_structures, np.asarray(indices).tolist())


def property_groups(dataset, name: str) -> np.ndarray:
    """[S] the value of the per-structure property ``name`` (``config_type``, ``sample_group``,
    ``head``...) of every structure, as read by the dataset. ValueError naming the structures
    that lack it (and the properties they have)."""
    values: list = []
    missing: list[int] = []
    have: set = set()
    for structures in _structure_chunks(dataset, np.arange(len(dataset), dtype=np.int64)):
        for s in structures:
            value = s.extras.get(name)
            if value is None:
                missing.append(len(values))
                have.update(s.extras)
            elif isinstance(value, np.ndarray):
                if value.ndim:
                    raise ValueError(f"groups={name!r}: structure {len(values)} holds an array of shape "
                                     f"{list(value.shape)}, not one value per structure")
                value = value.item()
            values.append(value)
    if missing:
        raise ValueError(f"groups={name!r}: {len(missing)} of {len(values)} structures do not carry {name!r} "
                         f"(first: {missing[:5]}); they carry {sorted(have) or 'no extras'} — read it with "
                         f"properties=[{name!r}] or give one label per structure")
    return np.asarray(values, dtype=object if any(isinstance(v, str) for v in values) else None)


def composition_groups(dataset) -> tuple[np.ndarray, list[str]]:
    """Group id [S] of every structure by chemical composition, and the formula of each group.

    Two structures share a group when they have the same number of atoms of every element
    (e.g. 'C2H6O': ethanol and dimethyl ether conformers). Formulas are in Hill order.
    """
    n = len(dataset)
    numbers_list: list[np.ndarray] = []
    for chunk in _species_chunks(dataset, np.arange(n, dtype=np.int64)):
        numbers_list.extend(chunk)
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    counts = np.array([len(z) for z in numbers_list], dtype=np.int64)
    flat = np.concatenate(numbers_list) if counts.sum() else np.zeros(0, dtype=np.int64)
    elements, z_index = np.unique(flat, return_inverse=True)
    structure = np.repeat(np.arange(n), counts)
    composition = np.zeros((n, len(elements)), dtype=np.int64)
    np.add.at(composition, (structure, z_index), 1)
    unique_rows, group = np.unique(composition, axis=0, return_inverse=True)
    formulas = [_hill_formula(elements, row) for row in unique_rows]
    return group.reshape(-1).astype(np.int64), formulas


def _hill_formula(elements: np.ndarray, counts: np.ndarray) -> str:
    from ase.data import chemical_symbols

    symbols = {chemical_symbols[int(z)]: int(c) for z, c in zip(elements, counts) if c > 0}
    if "C" in symbols:
        order = ["C"] + (["H"] if "H" in symbols else []) + sorted(k for k in symbols if k not in ("C", "H"))
    else:
        order = sorted(symbols)
    return "".join(f"{s}{symbols[s] if symbols[s] > 1 else ''}" for s in order) or "(empty)"


def _assign_groups(group_order: np.ndarray, sizes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Split (0, 1, 2) of every group, taking the groups in ``group_order``.

    While there are at least as many groups left as splits with a non-zero target and none yet,
    the next group goes to such an empty split; otherwise to the split with the largest relative
    shortfall ``(target - filled) / target`` (ties to the first: train, val, test). Relative, not
    absolute: with the absolute one a large train target wins every group and val/test may end up
    empty. Splits with a zero target never get a group. One step per group, not per structure.
    """
    filled = np.zeros(len(targets))
    allowed = targets > 0
    safe_targets = np.where(allowed, targets, 1.0)
    out = np.zeros(len(sizes), dtype=np.int64)
    for position, g in enumerate(group_order.tolist()):
        empty = allowed & (filled == 0)
        left = len(group_order) - position
        if empty.any() and left >= int(empty.sum()):
            candidates = empty
        else:
            candidates = allowed
        shortfall = np.where(candidates, (targets - filled) / safe_targets, -np.inf)
        k = int(np.argmax(shortfall))
        out[g] = k
        filled[k] += sizes[g]
    return out


def group_train_test_split(
    dataset,
    groups: Union[str, Sequence, np.ndarray, None] = "composition",
    train_ratio: float = 0.8,
    val_ratio: float = 0.1,
    test_ratio: float = 0.1,
    shuffle: bool = True,
    random_seed: Optional[int] = 42,
    exclude_isolated_atoms: bool = False,
) -> tuple[MolecularSubset, MolecularSubset, MolecularSubset]:
    """Split so that every group lies wholly in one of (train, val, test).

    groups: 'composition' (or None) to group by chemical formula, the name of a per-structure
    property the structures carry ('config_type', 'sample_group', 'head'...; see
    ``property_groups``), or a label per structure (length ``len(dataset)``: molecule name,
    trajectory id, ...). ``exclude_isolated_atoms``: isolated-atom frames go to no split.
    Whole groups are assigned in
    a (shuffled) order: first one to each split with a non-zero ratio, then each to the split
    furthest below its target size relative to that target, so every split gets a group when
    there are enough and split sizes approximate the ratios as closely as whole groups allow
    (each split overshoots its target by less than one group); with fewer groups than splits a
    split gets none (warned).
    """
    ratios = _check_ratios(train_ratio, val_ratio, test_ratio)
    n = len(dataset)
    if groups is None or (isinstance(groups, str) and groups == "composition"):
        group_id, _ = composition_groups(dataset)
    else:
        if isinstance(groups, str):
            labels = property_groups(dataset, groups)
        else:
            labels = np.asarray(groups)
            if labels.ndim != 1 or len(labels) != n:
                raise ValueError(f"groups has shape {list(labels.shape)}; expected one label per structure ({n})")
        if labels.dtype == object:
            labels = np.asarray([str(v) for v in labels])
        _, group_id = np.unique(labels, return_inverse=True)
        group_id = group_id.reshape(-1)
    pool = _candidates(dataset, exclude_isolated_atoms)
    if len(pool) != n:  # isolated-atom frames left out: split the rest as a dataset of its own
        inner = group_train_test_split(_Pool(dataset, pool), group_id[pool], train_ratio, val_ratio, test_ratio,
                                       shuffle=shuffle, random_seed=random_seed)
        return tuple(MolecularSubset(dataset, pool[np.asarray(part.indices, dtype=np.int64)].tolist())
                     for part in inner)  # type: ignore[return-value]
    n_groups = int(group_id.max()) + 1 if n else 0
    if shuffle:
        group_order = np.random.default_rng(random_seed).permutation(n_groups)
    else:  # groups in order of first appearance
        _, first = np.unique(group_id, return_index=True)
        group_order = np.argsort(first, kind="stable")
    sizes = np.bincount(group_id, minlength=n_groups)
    split_of_group = _assign_groups(group_order, sizes, ratios * n)
    split_of_structure = split_of_group[group_id] if n else np.zeros(0, dtype=np.int64)
    parts = []
    rank = np.empty(n_groups, dtype=np.int64)
    rank[group_order] = np.arange(n_groups)
    for k, name in enumerate(SPLIT_NAMES):
        members = np.flatnonzero(split_of_structure == k)
        # order: by (shuffled) group, structures of a group in dataset order
        members = members[np.argsort(rank[group_id[members]], kind="stable")]
        if len(members) == 0 and ratios[k] > 0:
            warnings.warn(
                f"group split: {name} gets no structure ({n_groups} groups for ratios {ratios.tolist()})",
                stacklevel=2,
            )
        parts.append(MolecularSubset(dataset, members.tolist()))
    return tuple(parts)  # type: ignore[return-value]


class _Pool:
    """The length of ``indices`` of a dataset (what a group split of a selection needs)."""

    def __init__(self, dataset, indices: np.ndarray) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)


# ----------------------------------------------------------------------------- saving


def _natoms_fingerprint(dataset) -> Optional[str]:
    natoms_array = getattr(dataset, "natoms_array", None)
    if natoms_array is None:
        return None
    natoms = np.ascontiguousarray(np.asarray(natoms_array(), dtype="<i8"))
    return hashlib.sha256(natoms.tobytes()).hexdigest()


def _dataset_path(dataset) -> Optional[str]:
    reader = getattr(dataset, "reader", None)
    path = getattr(reader, "display_path", None) or getattr(dataset, "data_path", None)
    return None if path is None else str(path)


def save_split(
    path: Union[str, os.PathLike],
    splits: Union[Sequence[MolecularSubset], Mapping[str, MolecularSubset]],
    *,
    overwrite: bool = False,
) -> Path:
    """Write the indices of ``splits`` (train, val, test subsets of one dataset) to JSON.

    The file records the dataset's path, length and a SHA-256 of its atom counts, so
    ``load_split`` can refuse a different dataset. An existing file is kept unless ``overwrite``.
    """
    path = Path(path)
    named = dict(splits) if isinstance(splits, Mapping) else dict(zip(SPLIT_NAMES, splits))
    if not isinstance(splits, Mapping) and len(splits) != len(SPLIT_NAMES):
        raise ValueError(f"expected {len(SPLIT_NAMES)} splits (train, val, test), got {len(splits)}")
    parents = {id(s.dataset) for s in named.values()}
    if len(parents) != 1:
        raise ValueError("all splits must be subsets of the same dataset")
    dataset = next(iter(named.values())).dataset
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    document = {
        "format": SPLIT_FILE_FORMAT,
        "version": SPLIT_FILE_VERSION,
        "dataset": {
            "path": _dataset_path(dataset),
            "length": len(dataset),
            "natoms_sha256": _natoms_fingerprint(dataset),
        },
        "counts": {name: len(s.indices) for name, s in named.items()},
        "splits": {name: [int(i) for i in s.indices] for name, s in named.items()},
    }
    return write_atomic(path, json.dumps(document, indent=1), overwrite=overwrite)


def load_split(path: Union[str, os.PathLike], dataset) -> tuple[MolecularSubset, ...]:
    """The subsets saved by ``save_split``, on ``dataset``, in the saved order (train, val, test).

    ValueError when the file is not a split file, when ``dataset`` has another length or other
    atom counts than the dataset the split was made on, or when indices are out of range or repeated.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a split file (invalid JSON: {exc})") from exc
    if not isinstance(document, dict) or document.get("format") != SPLIT_FILE_FORMAT:
        raise ValueError(f"{path}: not a split file (key 'format' is not {SPLIT_FILE_FORMAT!r})")
    if document.get("version") != SPLIT_FILE_VERSION:
        raise ValueError(f"{path}: split file version {document.get('version')!r} is not supported")
    info = document.get("dataset", {})
    n = len(dataset)
    if info.get("length") != n:
        raise ValueError(
            f"{path}: key 'dataset.length': the split was made on a dataset of {info.get('length')} structures, "
            f"this dataset has {n}"
        )
    saved_fp = info.get("natoms_sha256")
    current_fp = _natoms_fingerprint(dataset)
    if saved_fp is not None and current_fp is not None and saved_fp != current_fp:
        raise ValueError(
            f"{path}: key 'dataset.natoms_sha256': the atom counts of this dataset differ from those of the "
            f"dataset the split was made on ({info.get('path')})"
        )
    splits = document.get("splits")
    if not isinstance(splits, dict):
        raise ValueError(f"{path}: key 'splits' is missing or not a mapping")
    seen = np.zeros(n, dtype=bool)
    out = []
    for name, indices in splits.items():
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise ValueError(f"{path}: key 'splits.{name}' must be a list of integers")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{path}: key 'splits.{name}' has indices outside 0..{n - 1}")
        if len(np.unique(idx)) != len(idx) or seen[idx].any():
            raise ValueError(f"{path}: key 'splits.{name}' repeats an index (splits must be disjoint)")
        seen[idx] = True
        out.append(MolecularSubset(dataset, idx.tolist()))
    return tuple(out)
