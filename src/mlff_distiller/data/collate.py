"""Collate functions: a list of samples -> one padded batch or one graph (concatenated) batch.

Padded batch (``molecular_collate_fn``), B structures, M = most atoms in the batch:
    positions [B, M, 3] Å, species [B, M] int64 (0 = padding), mask [B, M] bool (True = real atom),
    forces [B, M, 3] eV/Å, energy [B] eV, stress [B, 3, 3] eV/Å³, natoms [B], idx [B],
    cell [B, 3, 3] Å, pbc [B, 3], max_atoms (int).
Graph batch (``molecular_collate_fn_no_padding``), T atoms in all:
    positions [T, 3], species [T], forces [T, 3], batch [T] int64 (structure of each atom),
    ptr [B + 1] int64 (first atom of each structure), total_atoms (int), per-structure keys as above;
    per-edge keys (``edge_index`` [2, E] offset by ``ptr``, ``shifts`` [E, 3], ``edge_vectors``,
    ``edge_lengths``) concatenated.

Labels some samples lack (``energy``, ``forces``, ``stress``) are zero-filled for those samples and a
presence mask ``<label>_mask`` [B] bool says which structures carry them; the mask is present
whenever the label is. A key absent from every sample is absent from the batch. Other keys are
batched by kind: per-atom (first dimension = the structure's atom count), per-structure or per-edge,
from the registry below (``register_key`` adds a name) or, for unregistered tensors, by shape; a key
that fits no kind raises ValueError naming it. Non-tensor values (``atoms``, strings) become lists.
Everything is vectorised over atoms: one ``torch.cat`` per key plus one ``index_copy_`` into the
padded tensor (the real atoms' slots are found once per batch).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "molecular_collate_fn",
    "molecular_collate_fn_no_padding",
    "Collater",
    "register_key",
    "key_kind",
    "LABEL_KEYS",
    "PADDED_EDGE_ERROR",
]

ATOM, STRUCTURE, EDGE, LIST = "atom", "structure", "edge", "list"

#: labels that may be missing from some structures (zero-filled + ``<label>_mask``)
LABEL_KEYS = ("energy", "forces", "stress")
#: keys every sample must have
REQUIRED_KEYS = ("positions", "species")
#: structural keys that must be in every sample or in none
STRUCTURAL_KEYS = ("cell", "pbc", "natoms", "idx")
#: keys made by the collate itself
BATCH_KEYS = ("mask", "max_atoms", "batch", "ptr", "total_atoms")

_KINDS: dict[str, str] = {
    # per-atom
    "positions": ATOM, "species": ATOM, "forces": ATOM, "numbers": ATOM, "charges": ATOM,
    "initial_charges": ATOM, "magmoms": ATOM, "initial_magmoms": ATOM, "masses": ATOM,
    "momenta": ATOM, "velocities": ATOM, "tags": ATOM,
    # per-structure
    "energy": STRUCTURE, "stress": STRUCTURE, "cell": STRUCTURE, "pbc": STRUCTURE, "natoms": STRUCTURE,
    "idx": STRUCTURE, "free_energy": STRUCTURE, "dipole": STRUCTURE, "virial": STRUCTURE,
    "charge": STRUCTURE, "total_charge": STRUCTURE, "magmom": STRUCTURE, "spin": STRUCTURE,
    "weight": STRUCTURE, "energy_weight": STRUCTURE, "forces_weight": STRUCTURE, "stress_weight": STRUCTURE,
    # per-edge (from ``neighbors.NeighborList``)
    "edge_index": EDGE, "shifts": EDGE, "edge_vectors": EDGE, "edge_lengths": EDGE,
    # python objects
    "atoms": LIST,
}

PADDED_EDGE_ERROR = (
    "neighbor lists need graph batching (use_padding=False): sample key {key!r} is per-edge and a "
    "padded batch has no place for it"
)


def register_key(name: str, kind: str) -> None:
    """Declare how an extra sample key is batched: 'atom', 'structure', 'edge' or 'list'.

    Needed only for unregistered tensors whose shape is ambiguous, e.g. a per-structure
    vector whose length equals the atom count: ``register_key('my_vector', 'structure')``.
    """
    if kind not in (ATOM, STRUCTURE, EDGE, LIST):
        raise ValueError(f"kind must be one of 'atom', 'structure', 'edge', 'list'; got {kind!r}")
    if name in REQUIRED_KEYS + STRUCTURAL_KEYS + LABEL_KEYS + BATCH_KEYS or name.endswith("_mask"):
        raise ValueError(f"{name!r} is a reserved batch key")
    _KINDS[name] = kind


def key_kind(name: str) -> Optional[str]:
    """The registered kind of ``name`` (None when unregistered)."""
    return _KINDS.get(name)


# ----------------------------------------------------------------------------- helpers


def _as_tensor(key: str, value: Any) -> Any:
    """Tensors stay; numpy arrays and numbers become tensors; anything else is returned as is."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, complex):
        return torch.tensor(value)
    return value


def _natoms(samples: Sequence[dict]) -> list[int]:
    """Atom count of every sample, checked against ``positions``, ``species`` and ``natoms``."""
    pos_shapes = [tuple(s["positions"].shape) for s in samples]
    counts = [shape[0] if shape else -1 for shape in pos_shapes]
    for b, (s, shape) in enumerate(zip(samples, pos_shapes)):
        if len(shape) != 2 or shape[1] != 3:
            raise ValueError(f"{_where(s, b)}: positions must have shape [N, 3], got {list(shape)}")
        if tuple(s["species"].shape) != (counts[b],):
            raise ValueError(f"{_where(s, b)}: species has shape {list(s['species'].shape)}, expected [{counts[b]}]")
    if all("natoms" in s for s in samples):
        declared = [int(s["natoms"]) if s["natoms"].numel() == 1 else -1 for s in samples]
        if declared != counts:
            b = next(k for k, (d, c) in enumerate(zip(declared, counts)) if d != c)
            raise ValueError(
                f"{_where(samples[b], b)}: natoms={samples[b]['natoms'].tolist()} but positions has {counts[b]} rows"
            )
    return counts


def _where(sample: dict, b: int) -> str:
    if "idx" in sample:
        return f"structure {int(sample['idx'])} (batch entry {b})"
    return f"batch entry {b}"


def _classify(key: str, values: list, shapes: list, counts: list[int]) -> str:
    """Kind of a key from the registry, else from the shapes of its (present) values."""
    kind = _KINDS.get(key)
    if kind is not None:
        return kind
    if any(shape is None for shape in shapes):
        return LIST
    if all(len(shape) >= 1 and shape[0] == n for shape, n in zip(shapes, counts)):
        return ATOM
    if len(set(shapes)) == 1:
        return STRUCTURE
    raise ValueError(
        f"cannot batch sample key {key!r}: its shapes {[list(x) for x in shapes[:4]]} are neither per-atom "
        f"(first dimension = atom count {counts[:4]}) nor per-structure (one shape); declare it with "
        f"mlff_distiller.data.collate.register_key({key!r}, 'atom' | 'structure' | 'edge' | 'list')"
    )


def _check_trailing(key: str, shapes: list[tuple], lead_dims: int) -> tuple:
    """The shape after ``lead_dims`` dimensions, the same for every value (else ValueError)."""
    trailing = {shape[lead_dims:] for shape in shapes}
    if len(trailing) != 1:
        raise ValueError(f"cannot batch sample key {key!r}: inconsistent shapes {sorted(map(list, set(shapes)))[:4]}")
    return trailing.pop()


def _cat(key: str, values: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    try:
        return torch.cat(values, dim=dim)
    except RuntimeError as exc:
        raise ValueError(f"cannot batch sample key {key!r}: {exc}") from exc


def _stack_structure(
    key: str, values: list[torch.Tensor], shapes: list[tuple], present: Optional[torch.Tensor], batch_size: int
) -> torch.Tensor:
    """[B, ...] from per-structure values; rows of absent structures are zero."""
    trailing = _check_trailing(key, shapes, 0)
    if present is None:
        return torch.stack(values)
    out = torch.zeros((batch_size,) + trailing, dtype=values[0].dtype, device=values[0].device)
    out[present] = torch.stack(values)
    return out


def _atom_rows(key: str, shapes: list[tuple], counts: list[int], b_idx: list[int], samples) -> tuple:
    """Trailing shape of a per-atom key; ValueError when a value's first dimension is not its atom count."""
    for shape, b in zip(shapes, b_idx):
        if not shape or shape[0] != counts[b]:
            raise ValueError(
                f"{_where(samples[b], b)}: per-atom key {key!r} has shape {list(shape)}, "
                f"expected first dimension {counts[b]} (the atom count)"
            )
    return _check_trailing(key, shapes, 1)


# ----------------------------------------------------------------------------- main routine


def _collate(samples: Sequence[dict], use_padding: bool) -> dict:
    if isinstance(samples, dict) or len(samples) == 0:
        raise ValueError("collate needs a non-empty list of sample dicts")
    samples = [{k: _as_tensor(k, v) for k, v in s.items()} for s in samples]
    for b, s in enumerate(samples):
        missing = [k for k in REQUIRED_KEYS if k not in s]
        if missing:
            raise KeyError(f"{_where(s, b)}: sample lacks required key(s) {missing}; it has {sorted(s)}")
        reserved = [k for k in s if k in BATCH_KEYS or k.endswith("_mask")]
        if reserved:
            raise ValueError(f"{_where(s, b)}: sample key(s) {reserved} are reserved for batch-level masks/indices")
    n_struct = len(samples)
    device = samples[0]["positions"].device
    counts = _natoms(samples)
    counts_t = torch.tensor(counts, dtype=torch.int64, device=device)
    total = int(sum(counts))
    out: dict[str, Any] = {}

    if use_padding:
        max_atoms = max(counts) if counts else 0
        mask = torch.arange(max_atoms, device=device).unsqueeze(0) < counts_t.unsqueeze(1)  # [B, M]
        out["mask"] = mask
    else:
        ptr = torch.zeros(n_struct + 1, dtype=torch.int64, device=device)
        torch.cumsum(counts_t, dim=0, out=ptr[1:])
        out["batch"] = torch.repeat_interleave(torch.arange(n_struct, dtype=torch.int64, device=device), counts_t)
        out["ptr"] = ptr

    keys: list[str] = []
    for s in samples:
        keys.extend(k for k in s if k not in keys)

    edge_counts: Optional[list[int]] = None
    slots: Optional[torch.Tensor] = None
    for key in keys:
        b_idx = [b for b, s in enumerate(samples) if key in s]
        values = [samples[b][key] for b in b_idx]
        shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else None for v in values]
        partial = len(b_idx) < n_struct
        kind = _classify(key, values, shapes, [counts[b] for b in b_idx])
        if partial and (key in STRUCTURAL_KEYS or kind in (EDGE, LIST)):
            lacking = [b for b in range(n_struct) if key not in samples[b]]
            raise ValueError(
                f"sample key {key!r} is in some structures of the batch but not in "
                f"{_where(samples[lacking[0]], lacking[0])}; it must be in all or none"
            )
        present = None
        if partial or key in LABEL_KEYS:
            if partial:
                present = torch.zeros(n_struct, dtype=torch.bool, device=device)
                present[b_idx] = True
            else:
                present = torch.ones(n_struct, dtype=torch.bool, device=device)
            out[f"{key}_mask"] = present
        present_rows = present if partial else None

        if kind == LIST:
            out[key] = values
        elif kind == STRUCTURE:
            out[key] = _stack_structure(key, values, shapes, present_rows, n_struct)
        elif kind == ATOM:
            trailing = _atom_rows(key, shapes, counts, b_idx, samples)
            flat = _cat(key, values)  # [T_present, ...]
            if use_padding:
                if present_rows is None:
                    if slots is None:  # flat positions of the real atoms in [B * M], shared by all keys
                        slots = torch.nonzero(out["mask"].reshape(-1)).squeeze(1)
                    where = slots
                else:
                    where = torch.nonzero((out["mask"] & present_rows.unsqueeze(1)).reshape(-1)).squeeze(1)
                padded = torch.zeros((n_struct * max_atoms,) + trailing, dtype=flat.dtype, device=device)
                padded.index_copy_(0, where, flat)
                out[key] = padded.reshape((n_struct, max_atoms) + trailing)
            elif present_rows is None:
                out[key] = flat
            else:
                full = torch.zeros((total,) + trailing, dtype=flat.dtype, device=device)
                full[torch.repeat_interleave(present_rows, counts_t)] = flat
                out[key] = full
        else:  # EDGE
            if use_padding:
                raise ValueError(PADDED_EDGE_ERROR.format(key=key))
            axis = 1 if key == "edge_index" else 0
            for shape, b in zip(shapes, b_idx):
                if key == "edge_index" and (len(shape) != 2 or shape[0] != 2) or not shape:
                    raise ValueError(f"{_where(samples[b], b)}: per-edge key {key!r} has shape {list(shape)}")
            sizes = [shape[axis] for shape in shapes]
            if edge_counts is None:
                edge_counts = sizes
            elif sizes != edge_counts:
                raise ValueError(f"per-edge key {key!r} has edge counts {sizes}, others have {edge_counts}")
            if key == "edge_index":
                n_edges = torch.tensor(sizes, dtype=torch.int64, device=device)
                offsets = torch.repeat_interleave(out["ptr"][:-1], n_edges)
                out[key] = _cat(key, values, dim=1) + offsets.unsqueeze(0)
            else:
                _check_trailing(key, shapes, 1)
                out[key] = _cat(key, values)

    if use_padding:
        out["max_atoms"] = int(max_atoms)
    else:
        out["total_atoms"] = total
    if "natoms" not in out:
        out["natoms"] = counts_t
    return out


def _fast_path(samples: Any, use_padding: bool) -> Optional[dict]:
    fast = getattr(samples, "collate_fast", None)
    if callable(fast):
        return fast(use_padding)
    return None


def molecular_collate_fn(samples: Sequence[dict]) -> dict:
    """Padded batch of ``samples`` (see module docstring): positions [B, M, 3], mask [B, M], ..."""
    fast = _fast_path(samples, True)
    return fast if fast is not None else _collate(samples, use_padding=True)


def molecular_collate_fn_no_padding(samples: Sequence[dict]) -> dict:
    """Graph batch of ``samples``: atoms concatenated, ``batch`` [T], ``ptr`` [B + 1], edges offset."""
    fast = _fast_path(samples, False)
    return fast if fast is not None else _collate(samples, use_padding=False)


class Collater:
    """Picklable collate function (works under the ``spawn`` start method).

    use_padding: padded or graph batches. cutoff (Å, graph batches only): add ``edge_index``
    [2, E] and ``shifts`` [E, 3] to every batch with ``neighbors.batch_neighbors``.
    """

    def __init__(self, use_padding: bool = True, cutoff: Optional[float] = None) -> None:
        if cutoff is not None:
            from .neighbors import _check_cutoff, require_graph_mode

            require_graph_mode(use_padding, cutoff)
            _check_cutoff(cutoff)
        self.use_padding = bool(use_padding)
        self.cutoff = None if cutoff is None else float(cutoff)

    @property
    def collate_fn(self) -> Callable[[Sequence[dict]], dict]:
        return molecular_collate_fn if self.use_padding else molecular_collate_fn_no_padding

    def __call__(self, samples: Sequence[dict]) -> dict:
        fast = getattr(samples, "collate_fast", None)
        if callable(fast):
            # a batch of concatenated arrays collates itself (and adds its edges: stored ones
            # when they match this cutoff, else computed)
            return fast(self.use_padding) if self.cutoff is None else fast(self.use_padding, cutoff=self.cutoff)
        batch = self.collate_fn(samples)
        if self.cutoff is not None:
            if "edge_index" in batch:
                raise ValueError(
                    "samples already carry edges (a NeighborList transform) and the loader was given "
                    "cutoff= too; use one of the two"
                )
            from .neighbors import batch_neighbors

            batch.update(batch_neighbors(batch, self.cutoff))
        return batch

    def __repr__(self) -> str:
        return f"Collater(use_padding={self.use_padding}, cutoff={self.cutoff})"
