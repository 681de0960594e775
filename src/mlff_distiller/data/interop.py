"""Hand a graph batch to PyTorch Geometric (optional extra: ``pip install mlff_distiller[pyg]``).

``to_pyg_batch`` turns our graph batch (a dict of tensors, see DESIGN.md) into a
``torch_geometric.data.Batch`` with PyG's usual names: ``positions`` -> ``pos`` and
``species`` -> ``z`` (override with ``key_map``); every other key keeps its name. Keys are split by
their kind in the key registry (``keys.py``): per-structure tensors (``energy``, ``cell`` [B, 3, 3],
``stress``, ``natoms``, masks, ...) keep a leading B axis, per-atom ones (``forces``, ``hvp``...)
are split by atom, per-edge tensors (``edge_index``, ``shifts``, ``edge_vectors``, ...) stay per
edge, strings are one per structure, and PyG rebuilds ``batch`` and ``ptr`` (checked against ours),
so ``Batch.to_data_list()`` and indexing work.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from .keys import KeyRegistry, registry_of

__all__ = ["to_pyg_batch", "PYG_KEY_MAP"]

PYG_KEY_MAP = {"positions": "pos", "species": "z"}

_DROPPED = {"batch", "ptr", "total_atoms", "max_atoms"}  # PyG derives these itself


def _import_pyg():
    try:
        from torch_geometric.data import Batch, Data
    except ImportError as exc:
        raise ImportError(
            "to_pyg_batch needs PyTorch Geometric: pip install torch_geometric "
            "(or pip install 'mlff_distiller[pyg]')"
        ) from exc
    return Batch, Data


def _kind(key: str, value: Any, n_atoms: int, n_structures: int, n_edges: Optional[int], keys: KeyRegistry) -> str:
    """'atom', 'structure', 'edge' or 'list' (one object per structure) of a batch entry: its
    declaration in the key registry, else the one leading size it matches (an error otherwise)."""
    if key.endswith("_mask"):
        return "structure"
    declared = keys.get(key)
    if declared is not None:
        return declared.kind
    if isinstance(value, (list, tuple)) and len(value) == n_structures:
        return "list"
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        matches = [
            kind for kind, size in (("atom", n_atoms), ("structure", n_structures), ("edge", n_edges))
            if size is not None and value.shape[0] == size
        ]
        if len(matches) == 1:
            return matches[0]
    raise ValueError(
        f"to_pyg_batch cannot tell whether batch key {key!r} is per atom ({n_atoms}), per structure "
        f"({n_structures}) or per edge ({n_edges}); declare it (keys=[Key({key!r}, ...)]), drop it or rename it"
    )


def to_pyg_batch(batch: Mapping[str, Any], *, key_map: Optional[Mapping[str, str]] = None, keys=None):
    """Convert a graph batch (``use_padding=False``) into a ``torch_geometric.data.Batch``.

    ``key_map`` renames keys (default :data:`PYG_KEY_MAP`: positions -> pos, species -> z);
    e.g. ``{"species": "atomic_numbers"}`` for fairchem-style names. Edge indices are made local
    per structure and re-offset by PyG, so the result's ``edge_index`` equals ours. ``keys``: extra
    key declarations (a ``KeyRegistry``, Keys or a dataset); every other key is classified by the
    built-in registry (``keys.DEFAULT_KEYS``).
    """
    registry = registry_of(keys)
    Batch, Data = _import_pyg()
    names = dict(PYG_KEY_MAP, **(key_map or {}))
    ptr = batch["ptr"] if "ptr" in batch else torch.cat(
        [torch.zeros(1, dtype=torch.long), torch.cumsum(batch["natoms"].long(), 0)]
    )
    ptr = ptr.long().cpu()
    n_structures, n_atoms = len(ptr) - 1, int(ptr[-1])
    edge_index = batch.get("edge_index")
    edge_ptr = None
    edge_order = None
    if edge_index is not None:
        edge_graph = torch.bucketize(edge_index[0].cpu(), ptr[1:], right=True)  # structure of each edge
        if not bool((edge_graph[1:] >= edge_graph[:-1]).all()):
            edge_order = torch.argsort(edge_graph, stable=True)
            edge_graph = edge_graph[edge_order]
        counts = torch.bincount(edge_graph, minlength=n_structures)
        edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    n_edges = None if edge_index is None else edge_index.shape[1]

    per_key = {}
    for key, value in batch.items():
        if key in _DROPPED:
            continue
        kind = _kind(key, value, n_atoms, n_structures, n_edges, registry)
        if kind == "edge" and edge_index is None:
            raise ValueError(f"batch has per-edge key {key!r} but no 'edge_index'")
        if kind == "edge" and edge_order is not None:
            value = value[:, edge_order] if key == "edge_index" else value[edge_order]
        per_key[key] = (kind, value)

    data_list = []
    for b in range(n_structures):
        fields = {}
        a0, a1 = int(ptr[b]), int(ptr[b + 1])
        for key, (kind, value) in per_key.items():
            if kind == "atom":
                item = value[a0:a1]
            elif kind == "structure":
                item = value[b : b + 1]
            elif kind == "list":
                item = value[b]
            else:
                e0, e1 = int(edge_ptr[b]), int(edge_ptr[b + 1])
                item = value[:, e0:e1] - a0 if key == "edge_index" else value[e0:e1]
            fields[names.get(key, key)] = item
        data_list.append(Data(num_nodes=a1 - a0, **fields))
    out = Batch.from_data_list(data_list)
    if "batch" in batch and not torch.equal(out.batch.cpu(), batch["batch"].long().cpu()):
        raise ValueError("graph batch 'batch' vector disagrees with its 'ptr'")
    return out
