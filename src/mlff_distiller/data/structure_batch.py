"""A batch of structures as concatenated numpy arrays, and its vectorised collate.

``StructureBatch`` is what a batched reader (``PackedReader.read_batch``, the in-memory cache)
returns for B dataset indices: per-atom arrays concatenated over the batch ([T, ...], T = sum of
atom counts) and per-structure arrays stacked ([B, ...]), with a presence mask per label.
``collate`` turns it into exactly the batch dict ``molecular_collate_fn`` (padded) or
``molecular_collate_fn_no_padding`` (graph) builds from the per-sample dicts, with whole-batch
numpy/torch operations and no per-atom or per-structure Python.

``SampleList`` is the lazy sequence ``MolecularDataset.__getitems__`` returns on the fast path: a
user collate function can still index it (each sample dict is built on access), while the
project's collate functions call ``collate_fast`` and never build the per-sample dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .structure import LABEL_NAMES, Structure

#: dtype of every float array in samples and batches -> the numpy dtype used for the conversion
_NUMPY_FLOAT = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


@dataclass
class LabelColumn:
    """One label over a batch: ``values`` ([B] energy, [T, 3] forces, [B, 3, 3] stress) and
    ``present`` [B] bool. Rows of structures without the label are zero (the batch contract's
    zero-fill; the ``present`` flags become the batch's ``<label>_mask``)."""

    values: np.ndarray
    present: np.ndarray

    @property
    def all_present(self) -> bool:
        return bool(self.present.all())


class StructureBatch:
    """B structures as concatenated arrays (units eV/Å, the file's dtypes).

    indices:   [B] int64 dataset index of each structure (the samples' ``idx``)
    natoms:    [B] int64
    positions: [T, 3] Å, numbers: [T] int64 (structure b owns rows ptr[b]:ptr[b+1])
    cell:      [B, 3, 3] Å, pbc: [B, 3] bool
    labels:    label name -> LabelColumn, only for labels at least one structure carries
    edge_index: [2, E] per-structure-local (source, target), shifts: [E, 3] and
    num_edges: [B] int64 — stored neighbor lists, or None
    ptr:       [B + 1] int64 (computed from ``natoms`` when not given)
    """

    def __init__(
        self,
        indices: np.ndarray,
        natoms: np.ndarray,
        positions: np.ndarray,
        numbers: np.ndarray,
        cell: np.ndarray,
        pbc: np.ndarray,
        labels: Optional[dict[str, LabelColumn]] = None,
        edge_index: Optional[np.ndarray] = None,
        shifts: Optional[np.ndarray] = None,
        num_edges: Optional[np.ndarray] = None,
        ptr: Optional[np.ndarray] = None,
    ) -> None:
        self.indices, self.natoms, self.positions, self.numbers = indices, natoms, positions, numbers
        self.cell, self.pbc = cell, pbc
        self.labels: dict[str, LabelColumn] = {} if labels is None else labels
        self.edge_index, self.shifts, self.num_edges = edge_index, shifts, num_edges
        self._ptr = ptr

    @classmethod
    def from_structures(cls, structures: Sequence[Structure], indices) -> "StructureBatch":
        """Concatenate the arrays of ``structures`` (dataset indices ``indices``) into one batch."""
        natoms = np.array([len(s.numbers) for s in structures], dtype=np.int64)
        labels = {}
        for name in LABEL_NAMES:
            values = [getattr(s, name) for s in structures]
            present = np.array([v is not None for v in values], dtype=bool)
            if not present.any():
                continue
            dtype = np.result_type(*[np.asarray(v).dtype for v in values if v is not None])
            if name == "forces":
                filled = [v if v is not None else np.zeros((n, 3), dtype) for v, n in zip(values, natoms)]
                labels[name] = LabelColumn(np.concatenate(filled).astype(dtype, copy=False), present)
            else:
                shape = () if name == "energy" else (3, 3)
                filled = [np.asarray(v) if v is not None else np.zeros(shape, dtype) for v in values]
                labels[name] = LabelColumn(np.stack(filled).astype(dtype, copy=False), present)
        return cls(
            indices=np.asarray(indices, dtype=np.int64).reshape(-1),
            natoms=natoms,
            positions=_concat([s.positions for s in structures], (0, 3)),
            numbers=_concat([np.asarray(s.numbers, dtype=np.int64) for s in structures], (0,)).astype(np.int64),
            cell=np.stack([np.asarray(s.cell) for s in structures]) if structures else np.zeros((0, 3, 3)),
            pbc=np.stack([np.asarray(s.pbc, dtype=bool) for s in structures]) if structures else np.zeros((0, 3), bool),
            labels=labels,
        )

    def __len__(self) -> int:
        return int(self.natoms.shape[0])

    @property
    def ptr(self) -> np.ndarray:
        """[B + 1] int64 first atom of each structure (and T at the end)."""
        if self._ptr is None:
            ptr = np.zeros(len(self) + 1, dtype=np.int64)
            np.cumsum(self.natoms, out=ptr[1:])
            self._ptr = ptr
        return self._ptr

    def structure(self, k: int) -> Structure:
        """Structure ``k`` of the batch (copies of its rows)."""
        ptr = self.ptr
        a, b = int(ptr[k]), int(ptr[k + 1])
        labels = {}
        for name, column in self.labels.items():
            if column.present[k]:
                value = column.values[a:b] if name == "forces" else column.values[k]
                labels[name] = np.array(value)
        return Structure(
            positions=self.positions[a:b].copy(),
            numbers=self.numbers[a:b].copy(),
            cell=self.cell[k].copy(),
            pbc=self.pbc[k].copy(),
            **labels,
        )

    def collate(self, use_padding: bool, dtype: torch.dtype = torch.float32, with_edges: bool = False) -> dict:
        """The padded or graph batch dict (see DESIGN.md), floats in ``dtype``.

        ``with_edges`` adds the stored neighbor lists to a graph batch (``edge_index`` offset by
        ``ptr``, ``shifts``); it needs ``edge_index`` in this batch.
        """
        if with_edges and use_padding:
            raise ValueError("stored neighbor lists need graph batching (use_padding=False)")
        if use_padding:
            return self._collate_padded(dtype)
        return self._collate_graph(dtype, with_edges)

    # -- collate helpers ---------------------------------------------------------------------
    def _common(self, dtype: torch.dtype, batch: dict) -> None:
        """Per-structure keys and labels (atom-level labels on the caller's layout)."""
        batch["cell"] = _float(self.cell, dtype)
        batch["pbc"] = _tensor(self.pbc, bool)
        batch["natoms"] = _tensor(self.natoms, np.int64)
        batch["idx"] = _tensor(self.indices, np.int64)
        for name in ("energy", "stress"):
            column = self.labels.get(name)
            if column is not None:
                batch[name] = _float(column.values, dtype)
                batch[f"{name}_mask"] = _tensor(column.present, bool)

    def _collate_graph(self, dtype: torch.dtype, with_edges: bool) -> dict:
        ptr = self.ptr
        batch = {
            "positions": _float(self.positions, dtype),
            "species": _tensor(self.numbers, np.int64),
            "batch": torch.from_numpy(np.repeat(np.arange(len(self), dtype=np.int64), self.natoms)),
            "ptr": torch.from_numpy(ptr),
        }
        self._common(dtype, batch)
        forces = self.labels.get("forces")
        if forces is not None:
            batch["forces"] = _float(forces.values, dtype)
            batch["forces_mask"] = _tensor(forces.present, bool)
        batch["total_atoms"] = int(ptr[-1])
        if with_edges:
            if self.edge_index is None:
                raise ValueError("this batch carries no stored neighbor lists")
            offsets = np.repeat(ptr[:-1], self.num_edges)
            batch["edge_index"] = torch.from_numpy(self.edge_index.astype(np.int64) + offsets)
            batch["shifts"] = _tensor(self.shifts, np.int64)
        return batch

    def _collate_padded(self, dtype: torch.dtype) -> dict:
        n = len(self)
        m = int(self.natoms.max()) if n else 0
        ptr = self.ptr
        # flat row of each atom in the [B * M] padded layout
        rows = np.arange(ptr[-1], dtype=np.int64) + np.repeat(np.arange(0, n * m, m, dtype=np.int64) - ptr[:-1], self.natoms)
        np_float = _NUMPY_FLOAT[dtype]
        batch = {
            "positions": _scatter(self.positions, rows, (n, m, 3), np_float),
            "species": _scatter(self.numbers, rows, (n, m), np.int64),
            "mask": torch.from_numpy(np.arange(m, dtype=np.int64) < self.natoms[:, None]),
        }
        self._common(dtype, batch)
        forces = self.labels.get("forces")
        if forces is not None:
            batch["forces"] = _scatter(forces.values, rows, (n, m, 3), np_float)
            batch["forces_mask"] = _tensor(forces.present, bool)
        batch["max_atoms"] = m
        return batch


def _concat(parts: list, empty_shape: tuple) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty_shape)


def _float(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of ``array`` in ``dtype`` (no copy when the array already has that dtype)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=_NUMPY_FLOAT[dtype]))


def _tensor(array: np.ndarray, np_dtype) -> torch.Tensor:
    """A tensor sharing ``array``'s memory when it already is contiguous ``np_dtype``."""
    if array.dtype != np_dtype or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=np_dtype)
    return torch.from_numpy(array)


def _scatter(values: np.ndarray, rows: np.ndarray, shape: tuple, np_dtype) -> torch.Tensor:
    """Zeros of ``shape`` with ``values`` placed at flat rows ``rows`` of its leading two dims."""
    out = np.zeros(shape, dtype=np_dtype)
    flat = out.reshape((shape[0] * shape[1],) + shape[2:])
    flat[rows] = values
    return torch.from_numpy(out)


def sample_dict(structure: Structure, index: int, dtype: torch.dtype) -> dict:
    """The sample dict of ``structure`` exactly as ``MolecularDataset.to_sample`` builds it
    without transform and atoms (fresh tensors)."""
    sample = {
        "positions": torch.tensor(np.asarray(structure.positions), dtype=dtype),
        "species": torch.tensor(np.asarray(structure.numbers), dtype=torch.int64),
        "cell": torch.tensor(np.asarray(structure.cell), dtype=dtype),
        "pbc": torch.tensor(np.asarray(structure.pbc), dtype=torch.bool),
        "natoms": torch.tensor(structure.natoms, dtype=torch.int64),
        "idx": torch.tensor(index, dtype=torch.int64),
    }
    for label in LABEL_NAMES:
        value = getattr(structure, label)
        if value is not None:
            sample[label] = torch.tensor(np.asarray(value), dtype=dtype)
    return sample


class SampleList(Sequence):
    """The samples of a ``StructureBatch`` as a read-only sequence of dicts, built on access.

    ``collate_fast(use_padding)`` gives the batch dict straight from the concatenated arrays;
    the project's collate functions call it, any other collate function just indexes the list.
    """

    def __init__(
        self, batch: StructureBatch, dtype: torch.dtype = torch.float32, edges_cutoff: Optional[float] = None
    ) -> None:
        self.batch = batch
        self.dtype = dtype
        #: cutoff (Å) of the neighbor lists stored with these structures (None: none stored)
        self.edges_cutoff = edges_cutoff

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        n = len(self)
        k = int(k)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"sample {k} out of range for a batch of {n}")
        return sample_dict(self.batch.structure(k), int(self.batch.indices[k]), self.dtype)

    def collate_fast(self, use_padding: bool, cutoff: Optional[float] = None) -> dict:
        """The padded (``use_padding``) or graph batch dict of these samples.

        ``cutoff`` (Å, graph batches only) adds ``edge_index`` [2, E] and ``shifts`` [E, 3]:
        the stored neighbor lists when they were stored for this cutoff, else computed per
        structure with ``neighbors.batch_neighbors`` on the stored (file-precision) coordinates.
        """
        if cutoff is None:
            return self.batch.collate(use_padding, self.dtype)
        from .neighbors import batch_neighbors, require_graph_mode

        require_graph_mode(use_padding, cutoff)
        if self.edges_cutoff is not None and float(cutoff) == float(self.edges_cutoff):
            return self.batch.collate(False, self.dtype, with_edges=True)
        out = self.batch.collate(False, self.dtype)
        raw = {
            "positions": torch.from_numpy(np.ascontiguousarray(self.batch.positions, dtype=np.float64)),
            "cell": torch.from_numpy(np.ascontiguousarray(self.batch.cell, dtype=np.float64)),
            "pbc": out["pbc"], "ptr": out["ptr"], "idx": out["idx"],
        }
        out.update(batch_neighbors(raw, float(cutoff)))
        return out

    def __repr__(self) -> str:
        return f"SampleList(n={len(self)}, atoms={int(self.batch.natoms.sum())})"


__all__ = ["LabelColumn", "StructureBatch", "SampleList", "sample_dict"]
