"""Neighbor lists (graph edges) for message-passing models, built with vesin.

Conventions are ASE's (``ase.neighborlist.neighbor_list('ijS')``): an edge ``(i, j, S)`` with
``edge_index = (i, j) = (source, target)`` and integer cell shifts ``S`` has the edge vector

    D = positions[j] - positions[i] + S @ cell        (Å)

and ``|D| < cutoff``. Lists are *full*: both ``(i, j, S)`` and ``(j, i, -S)`` are present. A pair
``(i, i, 0)`` is never an edge, but an atom's own periodic images (``i == j``, ``S != 0``) are.
Partial periodicity (a slab with pbc ``(T, T, F)``), triclinic cells and cells smaller than the
cutoff (many images of one pair) are handled by vesin; a molecule has a zero cell and pbc all False.

One implementation, :func:`batch_edges`, finds every list (single structures, graph batches, the
``NeighborList`` transform, the loader's ``cutoff=``, the lists a packed file stores). The search
runs on the values the sample or batch holds, widened exactly to float64, so a float32 batch gets
the edges of its float32 positions whichever way it was built; a pair whose distance equals the
cutoff to within float64 rounding may fall on either side, as in ASE. Edge lengths recomputed in
float32 can exceed the cutoff by float32 rounding. Edges are sorted by ``(i, j, S)``.

Neighbor lists need graph batching: a padded batch has no place for per-structure edges, so
:func:`require_graph_mode` rejects ``cutoff`` together with ``use_padding=True``.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Mapping, NamedTuple, Optional

import numpy as np
import torch
import vesin

from .transforms import Transform

__all__ = [
    "Edges",
    "compute_neighbors",
    "compute_edge_vectors",
    "NeighborList",
    "batch_neighbors",
    "batch_edges",
    "add_edges",
    "check_cutoff",
    "require_graph_mode",
]


class Edges(NamedTuple):
    """One structure's neighbor list (numpy, float64).

    edge_index: [2, E] int64 (source i, target j); shifts: [E, 3] int64 cell shifts;
    vectors: [E, 3] Å and distances: [E] Å when asked for, else None.
    """

    edge_index: np.ndarray
    shifts: np.ndarray
    vectors: Optional[np.ndarray] = None
    distances: Optional[np.ndarray] = None


def check_cutoff(cutoff: float) -> None:
    is_number = isinstance(cutoff, numbers.Real) and not isinstance(cutoff, bool)
    if not (is_number and math.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a finite positive number of Å, got {cutoff!r}")


def _check_inputs(positions, cell, pbc, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {list(positions.shape)}")
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape [3, 3], got {list(cell.shape)}")
    if pbc.shape == ():
        pbc = np.repeat(pbc, 3)
    if pbc.shape != (3,):
        raise ValueError(f"pbc must have shape [3], got {list(pbc.shape)}")
    check_cutoff(cutoff)
    zero = pbc & ~np.any(cell != 0.0, axis=1)
    if zero.any():
        axes = [int(k) for k in np.flatnonzero(zero)]
        raise ValueError(
            f"pbc is True along axis {axes} but the cell vector there is zero; "
            f"a periodic direction needs a lattice vector (cell={cell.tolist()}, pbc={pbc.tolist()})"
        )
    return positions, cell, pbc


#: largest |shift| component sorted through a lookup table of shift vectors (15^3 rows)
_TABLE_RANGE = 7
_SHIFT_TABLES: dict[int, np.ndarray] = {}


def _shift_table(r: int) -> np.ndarray:
    """[(2r+1)^3, 3] int64: every shift with components in [-r, r], in (S0, S1, S2) order."""
    table = _SHIFT_TABLES.get(r)
    if table is None:
        axis = np.arange(-r, r + 1, dtype=np.int64)
        table = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
        table.flags.writeable = False
        _SHIFT_TABLES[r] = table
    return table


def _sorted_edges(i: np.ndarray, j: np.ndarray, shifts: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """``edge_index`` [2, E] and ``shifts`` [E, 3] (int64, fresh arrays) sorted by
    (i, j, S0, S1, S2); (i, j, S) triples are unique, so the order is fully determined.

    Usual case (|S| <= 7 and indices that fit): one int64 key (i, j, row of S in a table of
    shifts) is sorted and decoded, the shifts by one gather from the table; every pass writes
    straight into the outputs (fresh large arrays cost page faults). Otherwise the shifts are
    bit-packed into the key, or, when even that does not fit, lexsorted.
    """
    if len(i) == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    if shifts.dtype.itemsize < 4:  # room for the table row below
        shifts = shifts.astype(np.int32)
    r = max(-int(shifts.min()), int(shifts.max()))
    nb = max(int(n_atoms - 1).bit_length(), 1)
    if r > _TABLE_RANGE or 2 * nb + 12 > 62:
        i, j, shifts = _sort_edges_general(i.astype(np.int64, copy=False), j.astype(np.int64, copy=False),
                                           shifts.astype(np.int64, copy=False), n_atoms)
        return np.stack([i, j]), np.ascontiguousarray(shifts)
    w = 2 * r + 1
    sb = max(int(w**3 - 1).bit_length(), 1)
    code = shifts[:, 0] * (w * w)  # row of S in _shift_table(r), in the shifts' own int dtype (< 2^12)
    code += shifts[:, 1] * w
    code += shifts[:, 2]
    code += r * (w * w + w + 1)
    edge_index = np.empty((2, len(i)), dtype=np.int64)
    key = np.left_shift(i, nb + sb, dtype=np.int64, casting="unsafe")
    key |= np.left_shift(j, sb, out=edge_index[1], dtype=np.int64, casting="unsafe")
    key |= code
    key.sort()
    np.right_shift(key, nb + sb, out=edge_index[0])
    np.right_shift(key, sb, out=edge_index[1])
    edge_index[1] &= (1 << nb) - 1
    key &= (1 << sb) - 1
    return edge_index, _shift_table(r).take(key, axis=0)


def batch_edges(
    positions: np.ndarray,
    cells: np.ndarray,
    pbc: np.ndarray,
    ptr: np.ndarray,
    cutoff: float,
    *,
    n_threads: int = 1,
    where: Optional[Callable[[int], str]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Full neighbor lists of B concatenated structures — the one neighbor-list implementation
    (``compute_neighbors``, ``batch_neighbors``, the ``NeighborList`` transform, the loader's
    ``cutoff=`` and packed files' stored lists all call it).

    positions [T, 3] (any float dtype; the search runs on these values widened exactly to
    float64), cells [B, 3, 3], pbc [B, 3] bool, ptr [B + 1] int64. Returns ``edge_index`` [2, E]
    int64 offset by ``ptr`` and ``shifts`` [E, 3] int64, sorted by (i, j, S) (so grouped by
    structure in batch order). ``where(b)`` names structure b in errors (default "batch entry b").
    Each structure's key (i, j, row of S in the shift table) is built and sorted while vesin's
    output is still in cache; any |S| > 7 takes the general path (``_sorted_edges``).
    """
    check_cutoff(cutoff)
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cells = np.ascontiguousarray(cells, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    ptr = np.asarray(ptr, dtype=np.int64)
    where = where or (lambda b: f"batch entry {b}")

    def name(b: int) -> str:
        text = where(b)
        return f"{text}: " if text else ""

    n, total = len(cells), int(ptr[-1])
    if len(ptr) != n + 1 or total != len(positions) or pbc.shape != (n, 3):
        raise ValueError(f"inconsistent batch: ptr {ptr.tolist()[:8]} for {len(positions)} atoms and {n} cells")
    bad = pbc & ~np.any(cells != 0.0, axis=2)
    if bad.any():
        b = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(
            f"{name(b)}pbc is True along axis {np.flatnonzero(bad[b]).tolist()} but the cell vector there is "
            "zero; a periodic direction needs a lattice vector"
        )
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True, n_threads=n_threads)

    def compute(b: int):
        try:  # copy=False: views of vesin's buffers, read before the next compute
            return calculator.compute(positions[ptr[b] : ptr[b + 1]], cells[b], pbc[b], quantities="ijS", copy=False)
        except RuntimeError as exc:
            raise ValueError(f"{name(b)}vesin could not build the neighbor list: {exc}") from exc

    nb = max((total - 1).bit_length(), 1)
    r = _TABLE_RANGE
    w = 2 * r + 1
    sb = max(int(w**3 - 1).bit_length(), 1)
    keys: Optional[list] = []
    if 2 * nb + sb <= 62:
        for b in range(n):
            start = int(ptr[b])
            i, j, s = compute(b)
            if s.shape[0] and (s.min() < -r or s.max() > r):
                keys = None  # a shift beyond the table: general path
                break
            code = s[:, 0] * (w * w)
            code += s[:, 1] * w
            code += s[:, 2]
            code += r * (w * w + w + 1)
            key = np.left_shift(i, nb + sb, dtype=np.int64, casting="unsafe")
            key |= np.left_shift(j, sb, dtype=np.int64, casting="unsafe")
            key |= code
            key += (start << (nb + sb)) + (start << sb)  # both indices offset by the structure's first atom
            key.sort()  # structures' keys are increasing blocks: sorted blocks make a sorted whole
            keys.append(key)
        if keys is not None:
            key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
            edge_index = np.empty((2, len(key)), dtype=np.int64)
            np.right_shift(key, nb + sb, out=edge_index[0])
            np.right_shift(key, sb, out=edge_index[1])
            edge_index[1] &= (1 << nb) - 1
            key &= (1 << sb) - 1
            return edge_index, _shift_table(r).take(key, axis=0)
    sources, targets, shifts = [], [], []
    for b in range(n):
        start = int(ptr[b])
        i, j, s = compute(b)
        sources.append(np.add(i, start, dtype=np.int64, casting="unsafe"))
        targets.append(np.add(j, start, dtype=np.int64, casting="unsafe"))
        shifts.append(s.reshape(-1, 3).copy())
    if not sources:
        return np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)
    return _sorted_edges(np.concatenate(sources), np.concatenate(targets), np.concatenate(shifts), total)


def _sort_edges_general(i: np.ndarray, j: np.ndarray, shifts: np.ndarray, n_atoms: int):
    """``_sort_edges`` for any shifts: bit-packed int64 key when the bits fit, else lexsort."""
    s = np.ascontiguousarray(shifts.T)  # [3, E]: column reductions are slow on [E, 3]
    lo = s.min(axis=1)
    bits = [int(v).bit_length() for v in (s.max(axis=1) - lo)]
    nb = max(int(n_atoms - 1).bit_length(), 1)
    if 2 * nb + sum(bits) > 62:  # would overflow int64: general (slower) sort
        order = np.lexsort((s[2], s[1], s[0], j, i))
        return i[order], j[order], shifts[order]
    b12, b2 = bits[1] + bits[2], bits[2]
    key = i << (nb + sum(bits))
    key |= j << sum(bits)
    key |= (s[0] - lo[0]) << b12
    key |= (s[1] - lo[1]) << b2
    key |= s[2] - lo[2]
    key.sort()
    out = np.empty((len(key), 3), dtype=np.int64)
    out[:, 2] = (key & ((1 << bits[2]) - 1)) + lo[2]
    out[:, 1] = ((key >> b2) & ((1 << bits[1]) - 1)) + lo[1]
    out[:, 0] = ((key >> b12) & ((1 << bits[0]) - 1)) + lo[0]
    j_sorted = (key >> sum(bits)) & ((1 << nb) - 1)
    i_sorted = key >> (nb + sum(bits))
    return i_sorted, j_sorted, out


def compute_neighbors(
    positions,
    cell,
    pbc,
    cutoff: float,
    *,
    with_vectors: bool = False,
    n_threads: int = 1,
) -> Edges:
    """Full neighbor list of one structure within ``cutoff`` Å, matching ASE's ``'ijS'``.

    positions: [N, 3] Å; cell: [3, 3] Å (rows are lattice vectors; zero for a molecule);
    pbc: [3] bool (or one bool). ``n_threads`` is vesin's thread count (1 keeps DataLoader
    workers from oversubscribing the CPU; 0 means all cores).

    >>> import numpy as np
    >>> e = compute_neighbors(np.zeros((1, 3)), 2.5 * np.eye(3), [True, True, True], 3.0)
    >>> e.edge_index.shape, e.shifts.tolist()[:2]   # one atom: its 6 nearest images
    ((2, 6), [[-1, 0, 0], [0, -1, 0]])
    """
    positions, cell, pbc = _check_inputs(positions, cell, pbc, cutoff)
    edge_index, shifts = batch_edges(
        positions, cell[None], pbc[None], np.array([0, len(positions)]), cutoff, n_threads=n_threads,
        where=lambda b: "",
    )
    i, j = edge_index
    if not with_vectors:
        return Edges(edge_index, shifts)
    vectors = positions[j] - positions[i] + shifts.astype(np.float64) @ cell
    return Edges(edge_index, shifts, vectors, np.linalg.norm(vectors, axis=1))


def compute_edge_vectors(
    positions: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    cell: torch.Tensor,
    batch: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Edge vectors ``pos[j] - pos[i] + shifts @ cell`` in the dtype of ``positions`` (Å, [E, 3]).

    Differentiable in ``positions`` and ``cell``, so a model can call it inside its forward pass
    to get forces (and stress) by autograd. For a graph batch pass ``cell`` [B, 3, 3] and the atom
    to structure map ``batch`` [T]; for one structure ``cell`` is [3, 3] and ``batch`` is None.
    """
    i, j = edge_index[0], edge_index[1]
    s = shifts.to(positions.dtype)
    if batch is None:
        offsets = s @ cell.to(positions.dtype)
    else:
        edge_cell = cell.to(positions.dtype)[batch[i]]  # [E, 3, 3]
        offsets = torch.bmm(s.unsqueeze(1), edge_cell).squeeze(1)
    return positions[j] - positions[i] + offsets


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


class NeighborList(Transform):
    """Per-sample transform adding ``edge_index`` [2, E] int64 and ``shifts`` [E, 3] int64.

    With ``with_vectors=True`` it also adds ``edge_vectors`` [E, 3] Å and ``edge_lengths`` [E] Å
    in the sample's float dtype. Edges are computed from the sample's current ``positions``,
    ``cell`` and ``pbc``, so place it after any rotation or noise transform. The input sample
    and its tensors are not modified; a new dict is returned. Indices are local to the structure;
    the graph collate offsets them by the structure's first atom.

    >>> import torch
    >>> sample = {"positions": torch.tensor([[0.0, 0, 0], [1.0, 0, 0]]),
    ...           "cell": torch.zeros(3, 3), "pbc": torch.zeros(3, dtype=torch.bool)}
    >>> NeighborList(cutoff=1.5)(sample)["edge_index"].tolist()
    [[0, 1], [1, 0]]
    """

    def __init__(self, cutoff: float, with_vectors: bool = False, n_threads: int = 1) -> None:
        check_cutoff(cutoff)
        self.cutoff = float(cutoff)
        self.with_vectors = bool(with_vectors)
        self.n_threads = int(n_threads)

    def __call__(self, sample: Mapping[str, torch.Tensor]) -> dict:
        for key in ("positions", "cell", "pbc"):
            if key not in sample:
                raise KeyError(f"NeighborList needs sample key {key!r}; sample has {sorted(sample)}")
        positions = sample["positions"]
        try:
            edges = compute_neighbors(
                _to_numpy(positions), _to_numpy(sample["cell"]), _to_numpy(sample["pbc"]),
                self.cutoff, n_threads=self.n_threads,
            )
        except ValueError as exc:
            where = f"structure {int(sample['idx'])}: " if "idx" in sample else ""
            raise ValueError(f"{where}{exc}") from exc
        out = dict(sample)
        out["edge_index"] = torch.from_numpy(edges.edge_index).to(positions.device)
        out["shifts"] = torch.from_numpy(edges.shifts).to(positions.device)
        if self.with_vectors:
            vectors = compute_edge_vectors(positions, out["edge_index"], out["shifts"], sample["cell"])
            out["edge_vectors"] = vectors
            out["edge_lengths"] = torch.linalg.vector_norm(vectors, dim=1)
        return out

    def __repr__(self) -> str:
        return f"NeighborList(cutoff={self.cutoff}, with_vectors={self.with_vectors})"


def batch_neighbors(
    batch: Mapping[str, torch.Tensor],
    cutoff: float,
    *,
    with_vectors: bool = False,
    n_threads: int = 1,
) -> dict[str, torch.Tensor]:
    """Edges of every structure of a graph batch, with indices offset by ``ptr``.

    Reads ``positions`` [T, 3], ``cell`` [B, 3, 3], ``pbc`` [B, 3] and ``ptr`` [B + 1] (or
    ``natoms`` [B]); returns ``edge_index`` [2, E] int64 and ``shifts`` [E, 3] int64, edges
    grouped by structure in batch order (plus ``edge_vectors`` [E, 3] and ``edge_lengths`` [E]
    in the positions' dtype when ``with_vectors``), found from the batch's own positions (in its
    dtype, widened exactly). Merge into the batch with ``batch.update``.
    """
    positions = batch["positions"]
    if "ptr" in batch:
        ptr = _to_numpy(batch["ptr"]).astype(np.int64)
    else:
        ptr = np.concatenate([[0], np.cumsum(_to_numpy(batch["natoms"]))]).astype(np.int64)
    cells = batch["cell"]
    idx = _to_numpy(batch["idx"]) if "idx" in batch else None
    edge_index, shifts = batch_edges(
        _to_numpy(positions), _to_numpy(cells), _to_numpy(batch["pbc"]), ptr, cutoff, n_threads=n_threads,
        where=(lambda b: f"structure {int(idx[b])}") if idx is not None else None,
    )
    out = {
        "edge_index": torch.from_numpy(edge_index).to(positions.device),
        "shifts": torch.from_numpy(shifts).to(positions.device),
    }
    if with_vectors:
        atom_batch = batch.get("batch")
        if atom_batch is None:
            counts = torch.from_numpy(np.diff(ptr)).to(positions.device)
            atom_batch = torch.repeat_interleave(torch.arange(len(cells), device=positions.device), counts)
        vectors = compute_edge_vectors(positions, out["edge_index"], out["shifts"], cells, atom_batch)
        out["edge_vectors"] = vectors
        out["edge_lengths"] = torch.linalg.vector_norm(vectors, dim=1)
    return out


def add_edges(batch: dict, cutoff: float) -> dict:
    """``batch`` (a graph batch dict) with ``edge_index`` and ``shifts`` for ``cutoff`` added in
    place (see :func:`batch_neighbors`); an error when it already carries edges."""
    if "edge_index" in batch:
        raise ValueError(
            "samples already carry edges (a NeighborList transform) and the loader was given "
            "cutoff= too; use one of the two"
        )
    batch.update(batch_neighbors(batch, cutoff))
    return batch


def require_graph_mode(use_padding: bool, cutoff: Optional[float]) -> None:
    """Raise when a neighbor list (``cutoff``) is asked for together with padded batching.

    Edges are a graph concept: concatenated atoms with globally offset indices. A padded batch
    [B, M] has no such layout, so the loader refuses the combination instead of guessing one.
    """
    if use_padding and cutoff is not None:
        raise ValueError(
            f"neighbor lists (cutoff={cutoff}) need graph batching: pass use_padding=False "
            "to get edge_index [2, E] and shifts [E, 3] in each batch"
        )
