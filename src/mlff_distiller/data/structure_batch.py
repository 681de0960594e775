"""A batch of B structures as columns: one concatenated array per key, plus presence flags.

``StructureBatch`` is the one intermediate form every batch goes through. Readers that serve a
batch at once (``PackedStore.read_batch``, the in-memory cache) return it directly; other readers'
structures are concatenated by :meth:`StructureBatch.from_structures`; sample dicts (after a
transform) by :meth:`StructureBatch.from_samples`. ``collate.collate_columns`` then builds the
padded or graph batch from it — the same code for all three.

Columns are named with the sample keys (``positions``, ``species``, ``cell``, ``pbc``, ``energy``,
``forces``, ``hvp``, ``config_type``...) and laid out by the key's kind (``keys.py``):
per-atom [T, ...] (T = sum of atom counts; structure b owns rows ``ptr[b]:ptr[b+1]``),
per-structure [B, ...], per-edge [E, ...] (``edge_index`` [2, E], local to each structure, with
``num_edges`` [B]), list: a Python list of B values. ``Column.present`` [B] bool (None: every
structure has the key); rows of structures without the key are zero (None in a list).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from .errors import format_error
from .keys import (
    ATOM, BATCH_KEYS, DEFAULT_KEYS, EDGE, LIST, REQUIRED_KEYS, STRUCTURAL_KEYS, STRUCTURE, STRUCTURE_LABELS, KeyRegistry,
    infer_kind,
)
from .structure import Structure

_INT64 = np.dtype(np.int64)


class Column:
    """Values of one key over a batch (see module docstring), their kind and presence flags."""

    __slots__ = ("values", "present", "kind", "torch_dtype")

    def __init__(
        self, values: Any, present: Optional[np.ndarray] = None, kind: str = STRUCTURE, torch_dtype=None
    ) -> None:
        self.values = values
        self.present = present
        self.kind = kind
        #: a torch dtype numpy lacks (bfloat16): ``values`` hold its bits as int16
        self.torch_dtype = torch_dtype

    def __repr__(self) -> str:
        shape = getattr(self.values, "shape", len(self.values) if isinstance(self.values, list) else None)
        return f"Column({self.kind}, shape={shape}, partial={self.present is not None})"


def concat(parts: list, empty_shape: tuple, dtype=np.float64, axis: int = 0) -> np.ndarray:
    """``np.concatenate(parts, axis)``, or zeros of ``empty_shape`` when there are no parts."""
    return np.concatenate(parts, axis=axis) if parts else np.zeros(empty_shape, dtype=dtype)


class StructureBatch:
    """B structures as columns (units eV/Å; the file's dtypes).

    indices:   [B] int64 dataset index of each structure, or None (samples without ``idx``)
    natoms:    [B] int64
    columns:   key -> Column; always ``positions`` [T, 3], ``species`` [T] int64, and for batches
               of structures ``cell`` [B, 3, 3], ``pbc`` [B, 3]
    num_edges: [B] int64 when some column is per-edge (NeighborList samples) or edges are stored
    stored_edges: (edge_index [2, E] per-structure-local, shifts [E, 3]) stored neighbor lists of a
               packed file (not columns: a batch carries them only when asked for their cutoff)
    edges_cutoff: cutoff (Å) of ``stored_edges``
    edges_exact: [B] bool, structure b's stored edges are also exact for float32 positions (None: unknown)
    """

    def __init__(
        self,
        indices: Optional[np.ndarray],
        natoms: np.ndarray,
        columns: dict[str, Column],
        *,
        num_edges: Optional[np.ndarray] = None,
        ptr: Optional[np.ndarray] = None,
        stored_edges: Optional[tuple] = None,
        edges_cutoff: Optional[float] = None,
        edges_exact: Optional[np.ndarray] = None,
    ) -> None:
        self.indices = indices
        self.natoms = natoms
        self._n = int(natoms.shape[0])
        self.columns = columns
        self.num_edges = num_edges
        self.stored_edges = stored_edges
        self.edges_cutoff = edges_cutoff
        self.edges_exact = edges_exact
        self._ptr = ptr

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_structures(
        cls, structures: Sequence[Structure], indices, keys: KeyRegistry = DEFAULT_KEYS, path: str = "<structures>"
    ) -> "StructureBatch":
        """Concatenate the arrays of ``structures`` (dataset indices ``indices``) into one batch.

        ``Structure.extras`` become columns of their declared kind (an undeclared extra is a
        KeyError naming it); labels and extras some structures lack are zero-filled with flags."""
        natoms = np.array([len(s.numbers) for s in structures], dtype=np.int64)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        columns = {
            "positions": Column(concat([np.asarray(s.positions) for s in structures], (0, 3)), kind=ATOM),
            "species": Column(concat([np.asarray(s.numbers, dtype=np.int64) for s in structures], (0,), np.int64)
                              .astype(np.int64, copy=False), kind=ATOM),
            "cell": Column(concat([np.asarray(s.cell)[None] for s in structures], (0, 3, 3)), kind=STRUCTURE),
            "pbc": Column(concat([np.asarray(s.pbc, dtype=bool)[None] for s in structures], (0, 3), bool),
                          kind=STRUCTURE),
        }
        for name in STRUCTURE_LABELS:
            values = [getattr(s, name) for s in structures]
            if any(v is not None for v in values):
                columns[name] = _column(keys[name], values, natoms, path, idx)
        extra_names: dict[str, None] = {}
        for s in structures:
            extra_names.update(dict.fromkeys(s.extras))
        for name in extra_names:
            key = keys.require(name, where=path)
            columns[name] = _column(key, [s.extras.get(name) for s in structures], natoms, path, idx)
        return cls(idx, natoms, columns)

    @classmethod
    def from_samples(cls, samples: Sequence[dict], keys: KeyRegistry = DEFAULT_KEYS) -> "StructureBatch":
        """Columns of sample dicts (tensors, numpy arrays, numbers, strings, objects), checked:
        positions [N, 3] and species [N] in every sample, ``natoms`` equal to the row counts,
        structural keys in all samples or none, per-atom keys with N rows, one trailing shape per key.
        Undeclared tensor keys get the kind their shapes show unambiguously (``keys.infer_kind``)."""
        import torch

        if isinstance(samples, dict) or len(samples) == 0:
            raise ValueError("collate needs a non-empty list of sample dicts")
        for b, s in enumerate(samples):
            missing = [k for k in REQUIRED_KEYS if k not in s]
            if missing:
                raise KeyError(f"{_where(s, b)}: sample lacks required key(s) {missing}; it has {sorted(s)}")
            reserved = [k for k in s if k in BATCH_KEYS or k.endswith("_mask")]
            if reserved:
                raise ValueError(f"{_where(s, b)}: sample key(s) {reserved} are reserved for batch-level masks/indices")
        n = len(samples)
        counts = _natoms(samples)
        natoms = np.array(counts, dtype=np.int64)
        names: dict[str, None] = {}
        for s in samples:
            names.update(dict.fromkeys(s))
        columns: dict[str, Column] = {}
        num_edges: Optional[list[int]] = None
        for name in names:
            b_idx = [b for b, s in enumerate(samples) if name in s]
            values = [_as_array(name, samples[b][name], samples[b], b) for b in b_idx]
            torch_dtype = None
            if any(isinstance(samples[b][name], torch.Tensor) and samples[b][name].dtype == torch.bfloat16
                   for b in b_idx):
                torch_dtype = torch.bfloat16
                values = [_bfloat16_bits(name, samples[b][name], samples[b], b) for b in b_idx]
            shapes = [v.shape if isinstance(v, np.ndarray) else None for v in values]
            key = keys.get(name)
            kind = key.kind if key is not None else infer_kind(name, shapes, [counts[b] for b in b_idx])
            if key is not None and kind != LIST:
                for shape, b in zip(shapes, b_idx):
                    if shape is not None:
                        try:
                            key.row_shape(shape, natoms=counts[b])
                        except ValueError as exc:
                            raise ValueError(f"{_where(samples[b], b)}: key {name!r} {exc}") from None
            partial = len(b_idx) < n
            if partial and (name in STRUCTURAL_KEYS or kind == EDGE):
                lacking = next(b for b in range(n) if name not in samples[b])
                raise ValueError(
                    f"sample key {name!r} is in some structures of the batch but not in "
                    f"{_where(samples[lacking], lacking)}; it must be in all or none"
                )
            present = None
            if partial:
                present = np.zeros(n, dtype=bool)
                present[b_idx] = True
            if kind == LIST:
                full: list = [None] * n
                for b, v in zip(b_idx, values):
                    full[b] = v
                columns[name] = Column(full, present, LIST)
                continue
            if any(shape is None for shape in shapes):
                b = b_idx[shapes.index(None)]
                raise ValueError(f"{_where(samples[b], b)}: key {name!r} holds a {type(values[0]).__name__}, "
                                 f"but it is declared per {kind}")
            if kind == ATOM:
                for shape, b in zip(shapes, b_idx):
                    if not shape or shape[0] != counts[b]:
                        raise ValueError(
                            f"{_where(samples[b], b)}: per-atom key {name!r} has shape {list(shape)}, "
                            f"expected first dimension {counts[b]} (the atom count)"
                        )
                trailing = _trailing(name, shapes, 1)
                flat = _cat(name, values, 0)
                if partial:
                    filled = np.zeros((int(natoms.sum()),) + trailing, dtype=flat.dtype)
                    filled[np.repeat(present, natoms)] = flat
                    flat = filled
                columns[name] = Column(flat, present, ATOM, torch_dtype)
            elif kind == STRUCTURE:
                trailing = _trailing(name, shapes, 0)
                stacked = _cat(name, [v[None] for v in values], 0)
                if partial:
                    filled = np.zeros((n,) + trailing, dtype=stacked.dtype)
                    filled[present] = stacked
                    stacked = filled
                columns[name] = Column(stacked, present, STRUCTURE, torch_dtype)
            else:  # EDGE
                axis = key.axis if key is not None else 0
                for shape, b in zip(shapes, b_idx):
                    if len(shape) <= axis or (axis == 1 and shape[0] != 2):
                        raise ValueError(f"{_where(samples[b], b)}: per-edge key {name!r} has shape {list(shape)}")
                sizes = [shape[axis] for shape in shapes]
                if num_edges is None:
                    num_edges = sizes
                elif sizes != num_edges:
                    raise ValueError(f"per-edge key {name!r} has edge counts {sizes}, others have {num_edges}")
                if axis == 0:
                    _trailing(name, shapes, 1)
                columns[name] = Column(_cat(name, values, axis), None, EDGE, torch_dtype)
        indices = None
        if "idx" in columns:
            indices = np.asarray(columns["idx"].values, dtype=np.int64).reshape(-1)
        edges = None if num_edges is None else np.array(num_edges, dtype=np.int64)
        return cls(indices, natoms, columns, num_edges=edges)

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def ptr(self) -> np.ndarray:
        """[B + 1] int64 first atom of each structure (and T at the end)."""
        if self._ptr is None:
            ptr = np.zeros(len(self) + 1, dtype=np.int64)
            np.cumsum(self.natoms, out=ptr[1:])
            self._ptr = ptr
        return self._ptr

    @property
    def positions(self) -> np.ndarray:
        return self.columns["positions"].values

    @property
    def numbers(self) -> np.ndarray:
        return self.columns["species"].values

    @property
    def cell(self) -> np.ndarray:
        return self.columns["cell"].values

    @property
    def pbc(self) -> np.ndarray:
        return self.columns["pbc"].values

    @property
    def edge_index(self) -> Optional[np.ndarray]:
        """[2, E] per-structure-local stored edges (or per-edge column), None without edges."""
        if self.stored_edges is not None:
            return self.stored_edges[0]
        column = self.columns.get("edge_index")
        return None if column is None else column.values

    @property
    def shifts(self) -> Optional[np.ndarray]:
        if self.stored_edges is not None:
            return self.stored_edges[1]
        column = self.columns.get("shifts")
        return None if column is None else column.values

    def where(self, b: int) -> str:
        """How structure b is named in messages."""
        return f"structure {int(self.indices[b])}" if self.indices is not None else f"batch entry {b}"

    def structure(self, k: int) -> Structure:
        """Structure ``k`` of the batch (copies of its rows; labels and extras it carries)."""
        ptr = self.ptr
        a, b = int(ptr[k]), int(ptr[k + 1])
        fields: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for name, column in self.columns.items():
            if name in ("positions", "species", "cell", "pbc") or column.kind == EDGE:
                continue
            if column.present is not None and not column.present[k]:
                continue
            if column.kind == LIST:
                value = column.values[k]
            elif column.kind == ATOM:
                value = np.array(column.values[a:b])
            else:
                value = np.array(column.values[k])
            if name in STRUCTURE_LABELS:
                fields[name] = value
            else:
                extras[name] = value
        return Structure(
            positions=self.positions[a:b].copy(),
            numbers=self.numbers[a:b].copy(),
            cell=self.cell[k].copy(),
            pbc=self.pbc[k].copy(),
            extras=extras,
            **fields,
        )

    def structures(self) -> list[Structure]:
        return [self.structure(k) for k in range(len(self))]

    def __repr__(self) -> str:
        return f"StructureBatch(n={len(self)}, atoms={int(self.natoms.sum())}, keys={list(self.columns)})"


# ----------------------------------------------------------------------------- helpers


def _column(key, values: list, natoms: np.ndarray, path: str, idx: np.ndarray) -> Column:
    """Column of one key from per-structure values (None = absent), zero-filled where absent."""
    present = np.array([v is not None for v in values], dtype=bool)
    flags = None if present.all() else present
    if key.kind == LIST:
        return Column(list(values), flags, LIST)
    arrays = [None if v is None else np.asarray(v) for v in values]
    first = next(a for a in arrays if a is not None)
    if key.kind == ATOM:
        row = first.shape[1:]
        dtype = np.result_type(*[a.dtype for a in arrays if a is not None])
        parts = []
        for b, (a, n) in enumerate(zip(arrays, natoms)):
            if a is None:
                a = np.zeros((int(n),) + row, dtype)
            elif a.shape != (int(n),) + row:
                raise format_error(path, int(idx[b]) if b < len(idx) else b, key.name,
                                   f"has shape {list(a.shape)}, expected {[int(n)] + list(row)} "
                                   "(the same row shape in every structure)")
            parts.append(a)
        return Column(concat(parts, (0,) + row, dtype).astype(dtype, copy=False), flags, ATOM)
    if key.kind == STRUCTURE:
        shape = first.shape
        dtype = np.result_type(*[a.dtype for a in arrays if a is not None])
        for b, a in enumerate(arrays):
            if a is not None and a.shape != shape:
                raise format_error(path, int(idx[b]) if b < len(idx) else b, key.name,
                                   f"has shape {list(a.shape)}, other structures {list(shape)}")
        filled = [a if a is not None else np.zeros(shape, dtype) for a in arrays]
        return Column(np.stack(filled).astype(dtype, copy=False), flags, STRUCTURE)
    raise ValueError(f"key {key.name!r}: per-edge values cannot come from Structure.extras")


def _as_array(name: str, value: Any, sample: dict, b: int) -> Any:
    """A sample value as a numpy array (tensors: CPU, no grad), or the value itself (str, objects)."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:
            return None  # replaced by its bits (``_bfloat16_bits``)
        if value.device.type != "cpu":
            raise ValueError(f"{_where(sample, b)}: key {name!r} is on {value.device}; collate works on CPU samples")
        if value.requires_grad:
            raise ValueError(f"{_where(sample, b)}: key {name!r} requires grad; samples must not carry autograd graphs")
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bool, int, float, np.generic)) and not isinstance(value, (str, bytes)):
        return np.asarray(value)
    return value


def _bfloat16_bits(name: str, value: Any, sample: dict, b: int) -> np.ndarray:
    """A bfloat16 tensor's bits as int16 (numpy has no bfloat16); other values are refused."""
    import torch

    if not (isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16):
        raise ValueError(f"{_where(sample, b)}: key {name!r} mixes bfloat16 and other values across samples")
    return _as_array(name, value.view(torch.int16), sample, b)


def _where(sample: dict, b: int) -> str:
    if "idx" in sample:
        return f"structure {int(sample['idx'])} (batch entry {b})"
    return f"batch entry {b}"


def _natoms(samples: Sequence[dict]) -> list[int]:
    """Atom count of every sample, checked against ``positions``, ``species`` and ``natoms``."""
    counts = []
    for b, s in enumerate(samples):
        shape = tuple(s["positions"].shape)
        if len(shape) != 2 or shape[1] != 3:
            raise ValueError(f"{_where(s, b)}: positions must have shape [N, 3], got {list(shape)}")
        if tuple(s["species"].shape) != (shape[0],):
            raise ValueError(f"{_where(s, b)}: species has shape {list(s['species'].shape)}, expected [{shape[0]}]")
        counts.append(shape[0])
    if all("natoms" in s for s in samples):
        declared = [int(s["natoms"]) if np.asarray(s["natoms"]).size == 1 else -1 for s in samples]
        if declared != counts:
            b = next(k for k, (d, c) in enumerate(zip(declared, counts)) if d != c)
            natoms = samples[b]["natoms"]
            shown = natoms.tolist() if hasattr(natoms, "tolist") else natoms
            raise ValueError(f"{_where(samples[b], b)}: natoms={shown} but positions has {counts[b]} rows")
    return counts


def _trailing(name: str, shapes: list[tuple], lead: int) -> tuple:
    """The shape after ``lead`` dimensions, the same for every value (else ValueError)."""
    trailing = {shape[lead:] for shape in shapes}
    if len(trailing) != 1:
        raise ValueError(f"cannot batch sample key {name!r}: inconsistent shapes {sorted(map(list, set(shapes)))[:4]}")
    return trailing.pop()


def _cat(name: str, values: list[np.ndarray], axis: int) -> np.ndarray:
    try:
        return np.concatenate(values, axis=axis)
    except ValueError as exc:
        raise ValueError(f"cannot batch sample key {name!r}: {exc}") from exc


__all__ = ["Column", "StructureBatch", "concat"]
