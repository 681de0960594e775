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
from torch.utils.data import get_worker_info

from .structure import LABEL_NAMES, Structure

#: float dtypes converted with numpy (exactly as torch rounds them); others (float16, bfloat16)
#: are converted by torch, as ``MolecularDataset.to_sample`` does
_NUMPY_FLOAT = {torch.float32: np.float32, torch.float64: np.float64}


@dataclass
class LabelColumn:
    """One label over a batch: ``values`` ([B] energy, [T, 3] forces, [B, 3, 3] stress) and
    ``present`` [B] bool. Rows of structures without the label are zero (the batch contract's
    zero-fill; the ``present`` flags become the batch's ``<label>_mask``)."""

    values: np.ndarray
    present: np.ndarray


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

    def neighbors(self, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """Full neighbor lists of every structure within ``cutoff`` Å, computed with vesin (one
        thread) in float64: ``edge_index`` [2, E] int64 offset by ``ptr`` and integer ``shifts``
        [E, 3], edges sorted by (i, j, shift) exactly as ``neighbors.batch_neighbors`` gives them."""
        import vesin

        from .neighbors import _batch_edges, _check_cutoff

        _check_cutoff(cutoff)
        positions = np.ascontiguousarray(self.positions, dtype=np.float64)
        cells = np.ascontiguousarray(self.cell, dtype=np.float64)
        pbc = np.asarray(self.pbc, dtype=bool)
        bad = pbc & ~np.any(cells != 0.0, axis=2)
        if bad.any():
            b = int(np.flatnonzero(bad.any(axis=1))[0])
            raise ValueError(
                f"structure {int(self.indices[b])}: pbc is True along axis {np.flatnonzero(bad[b]).tolist()} "
                f"but the cell vector there is zero; a periodic direction needs a lattice vector"
            )
        calculator = vesin.NeighborList(cutoff=cutoff, full_list=True, n_threads=1)

        def on_error(b: int, exc: Exception) -> ValueError:
            return ValueError(f"structure {int(self.indices[b])}: vesin could not build the neighbor list: {exc}")

        return _batch_edges(calculator, positions, cells, pbc, self.ptr, on_error)

    # -- collate helpers ---------------------------------------------------------------------
    def _common(self, dtype: torch.dtype, batch: dict) -> None:
        """Per-structure keys and labels (atom-level labels on the caller's layout)."""
        batch["cell"] = _float(self.cell, dtype)
        batch["pbc"] = _tensor(self.pbc, _BOOL)
        batch["natoms"] = _tensor(self.natoms, _INT64)
        batch["idx"] = _tensor(self.indices, _INT64)
        labels = self.labels
        for name in ("energy", "stress"):
            column = labels.get(name)
            if column is not None:
                batch[name] = _float(column.values, dtype)
                batch[f"{name}_mask"] = _tensor(column.present, _BOOL)

    def _collate_graph(self, dtype: torch.dtype, with_edges: bool) -> dict:
        ptr = self.ptr
        n = self.natoms.shape[0]
        batch = {
            "positions": _float(self.positions, dtype),
            "species": _tensor(self.numbers, _INT64),
            "batch": torch.from_numpy(_arange(n).repeat(self.natoms)),
            "ptr": torch.from_numpy(ptr),
        }
        self._common(dtype, batch)
        forces = self.labels.get("forces")
        if forces is not None:
            batch["forces"] = _float(forces.values, dtype)
            batch["forces_mask"] = _tensor(forces.present, _BOOL)
        batch["total_atoms"] = ptr.item(n)
        if with_edges:
            if self.edge_index is None:
                raise ValueError("this batch carries no stored neighbor lists")
            offsets = ptr[:-1].repeat(self.num_edges)
            batch["edge_index"] = torch.from_numpy(np.add(self.edge_index, offsets, dtype=np.int64))
            batch["shifts"] = _tensor(self.shifts, _INT64)
        return batch

    def _collate_padded(self, dtype: torch.dtype) -> dict:
        n = self.natoms.shape[0]
        m = int(self.natoms.max()) if n else 0
        ptr = self.ptr
        # flat row of each atom in the [B * M] padded layout
        rows = (_arange(n) * m - ptr[:-1]).repeat(self.natoms)
        rows += _arange(ptr.item(n))
        batch = {
            "positions": _scatter(self.positions, rows, (n, m, 3), dtype),
            "species": _scatter(self.numbers, rows, (n, m), torch.int64),
            "mask": torch.from_numpy(_arange(m) < self.natoms[:, None]),
        }
        self._common(dtype, batch)
        forces = self.labels.get("forces")
        if forces is not None:
            batch["forces"] = _scatter(forces.values, rows, (n, m, 3), dtype)
            batch["forces_mask"] = _tensor(forces.present, _BOOL)
        batch["max_atoms"] = m
        return batch


_INT64 = np.dtype(np.int64)
_BOOL = np.dtype(bool)
_ARANGE = np.arange(0, dtype=np.int64)


def _arange(n: int) -> np.ndarray:
    """A read-only view of ``arange(n)`` int64 (a shared buffer, grown on demand)."""
    global _ARANGE
    if n > _ARANGE.shape[0]:
        _ARANGE = np.arange(max(n, 1024), dtype=np.int64)
        _ARANGE.flags.writeable = False
    return _ARANGE[:n]


def _concat(parts: list, empty_shape: tuple) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty_shape)


def _float(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of ``array`` in ``dtype`` (no copy when the array already has that dtype)."""
    np_dtype = _NUMPY_FLOAT.get(dtype)
    if np_dtype is None:
        return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np_dtype))


def _tensor(array: np.ndarray, np_dtype: np.dtype) -> torch.Tensor:
    """A tensor sharing ``array``'s memory when it already is a writeable contiguous ``np_dtype``."""
    if array.dtype is not np_dtype or not array.flags.c_contiguous or not array.flags.writeable:
        array = np.array(array, dtype=np_dtype, order="C")
    return torch.from_numpy(array)


def _scatter(values: np.ndarray, rows: np.ndarray, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """Zeros of ``shape`` with ``values`` placed at flat rows ``rows`` of its leading two dims."""
    np_dtype = _INT64 if dtype == torch.int64 else _NUMPY_FLOAT.get(dtype)
    if np_dtype is None:
        out = torch.zeros(shape, dtype=dtype)
        out.view((shape[0] * shape[1],) + shape[2:])[torch.from_numpy(rows)] = _float(values, dtype)
        return out
    out = np.zeros(shape, dtype=np_dtype)
    flat = out.reshape((shape[0] * shape[1],) + shape[2:])
    if values.dtype is np_dtype:
        flat[rows] = values
    else:  # cast first: numpy's casting assignment through a fancy index is slow
        flat[rows] = values.astype(np_dtype)
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
        the stored neighbor lists when they were stored for this cutoff, else computed with
        vesin on the stored (file-precision) coordinates, as ``neighbors.batch_neighbors`` does.
        """
        if cutoff is None:
            out = self.batch.collate(use_padding, self.dtype)
        else:
            from .neighbors import require_graph_mode

            require_graph_mode(use_padding, cutoff)
            if self.edges_cutoff is not None and float(cutoff) == float(self.edges_cutoff):
                out = self.batch.collate(False, self.dtype, with_edges=True)
            else:
                out = self.batch.collate(False, self.dtype)
                edge_index, shifts = self.batch.neighbors(float(cutoff))
                out["edge_index"], out["shifts"] = torch.from_numpy(edge_index), torch.from_numpy(shifts)
        if get_worker_info() is not None:
            return WorkerBatch(out)
        return out

    def __repr__(self) -> str:
        return f"SampleList(n={len(self)}, atoms={int(self.batch.natoms.sum())})"


class WorkerBatch(dict):
    """A batch dict that leaves a DataLoader worker as ONE byte buffer.

    torch sends every tensor of a batch through its own shared-memory segment, which costs
    far more than the batch itself for the ~15 small tensors of a molecular batch (measured
    on a 2-core VM: ~5.8 ms per batch for 15 tensors, ~0.15 ms for one 100 kB buffer). This
    dict pickles as a single buffer plus a small header; the receiving process gets a plain
    dict whose tensors are views of that buffer. Non-tensor values are pickled as usual.
    """

    def __reduce__(self):
        return (_unpack_batch, _pack_batch(self))


_ALIGN = 64


def _pack_batch(batch: dict) -> tuple[list, bytearray, dict, list]:
    specs, others, offset = [], {}, 0
    tensors = []
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.requires_grad:
            array = value.contiguous().numpy()
            specs.append((key, str(value.dtype).removeprefix("torch."), tuple(value.shape), offset, array.nbytes))
            tensors.append(array)
            offset += -(-array.nbytes // _ALIGN) * _ALIGN
        else:
            others[key] = value
    buffer = bytearray(offset)
    view = np.frombuffer(buffer, dtype=np.uint8)
    for (_, _, _, start, nbytes), array in zip(specs, tensors):
        view[start : start + nbytes] = array.reshape(-1).view(np.uint8)
    return specs, buffer, others, list(batch)


def _unpack_batch(specs: list, buffer: bytearray, others: dict, order: list) -> dict:
    storage = torch.frombuffer(buffer, dtype=torch.uint8) if len(buffer) else torch.empty(0, dtype=torch.uint8)
    values = dict(others)
    for key, dtype, shape, start, nbytes in specs:
        values[key] = storage[start : start + nbytes].view(getattr(torch, dtype)).view(shape)
    return {key: values[key] for key in order}


__all__ = ["LabelColumn", "StructureBatch", "SampleList", "WorkerBatch", "sample_dict"]
