"""The one index check: structure indices of a file, dataset, subset or batch.

``check_index`` takes one index (int-like; ``2.5`` is never read as structure 2), ``check_indices`` a
batch of them (a list, array or tensor; vectorised). Negative indices count from the end; an index
outside ``[0, n)`` is an IndexError naming ``where`` (the file, or "a dataset") and ``n``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

_INT64 = np.dtype(np.int64)


def _out_of_range(index: Any, n: int, where: str) -> IndexError:
    return IndexError(f"{where}: index {index} out of range for {n} structures")


def check_index(index: Any, n: int, where: str) -> int:
    """``index`` as an int in ``[0, n)`` (negative: from the end); TypeError for a non-integer."""
    if hasattr(index, "item") and not isinstance(index, (int, np.integer)):  # a 0-d tensor or array
        if getattr(index, "ndim", 0) != 0:
            raise TypeError(f"{where}: index must be an integer, got an array of shape {tuple(index.shape)}")
        index = index.item()
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer, float, np.floating)):
        raise TypeError(f"{where}: index must be an integer, got {type(index).__name__}")
    i = int(index)
    if i != index:
        raise TypeError(f"{where}: index must be an integer, got {index!r}")
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise _out_of_range(index, n, where)
    return i


def check_indices(indices: Any, n: int, where: str) -> np.ndarray:
    """[B] int64 indices in ``[0, n)`` (negative ones wrapped), vectorised; errors as ``check_index``.

    A list of Python ints in range (what a DataLoader passes) costs one conversion and one reduction."""
    if hasattr(indices, "detach"):  # a tensor
        indices = indices.detach().cpu().numpy()
    arr = np.asarray(indices)
    if arr.dtype is not _INT64:
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.dtype.kind not in "iu":
            return np.array([check_index(i, n, where) for i in arr.reshape(-1).tolist()], dtype=np.int64)
        arr = arr.astype(np.int64)
    arr = arr.reshape(-1)
    if arr.shape[0] and arr.view(np.uint64).max() >= n:  # negative or too large (one reduction)
        wrapped = np.where(arr < 0, arr + n, arr)
        bad = (wrapped < 0) | (wrapped >= n)
        if bad.any():
            raise _out_of_range(int(arr[bad][0]), n, where)
        return wrapped
    return arr


__all__ = ["check_index", "check_indices"]


def subset_root(dataset: Any, indices: Optional[np.ndarray] = None) -> tuple[Any, Optional[np.ndarray]]:
    """The dataset under a chain of subsets and ``indices`` [K] int64 mapped into it. A subset is a
    view with its own ``dataset`` and ``indices`` (``MolecularSubset``, torch's ``Subset``);
    ``indices=None`` stands for all of ``dataset`` (and comes back None when it is no subset)."""
    while True:
        inner = getattr(dataset, "__dict__", {}).get("dataset")
        if inner is None or not hasattr(dataset, "indices"):
            return dataset, indices
        own = np.asarray(dataset.indices, dtype=np.int64)
        dataset, indices = inner, (own if indices is None else own[indices])
