"""Collate: a batch of structures -> one padded batch or one graph (concatenated) batch.

Padded batch (``molecular_collate_fn``), B structures, M = most atoms in the batch:
    positions [B, M, 3] Å, species [B, M] int64 (0 = padding), mask [B, M] bool (True = real atom),
    per-atom keys [B, M, ...] (forces eV/Å, energies eV, hvp [B, M, K, 3] eV/Å²...), per-structure keys
    [B, ...] (energy [B] eV, stress [B, 3, 3] eV/Å³, cell [B, 3, 3] Å, pbc [B, 3], natoms [B], idx [B]),
    string keys as lists of B, max_atoms (int).
Graph batch (``molecular_collate_fn_no_padding``), T atoms in all:
    positions [T, 3], species [T], per-atom keys [T, ...], batch [T] int64 (structure of each atom),
    ptr [B + 1] int64 (first atom of each structure), total_atoms (int), per-structure keys as above;
    per-edge keys (``edge_index`` [2, E] offset by ``ptr``, ``shifts`` [E, 3], ...) concatenated.

Every key is batched by its declared kind (``keys.py``). Labels (``energy``, ``forces``, ``stress``,
``energies``, ``hvp``, ``hvp_directions``...) always come with a presence mask ``<label>_mask`` [B]
bool; any other key gets one when some structures of the batch lack it. Missing entries are zero
(None in lists) and False in the mask. A key absent from every structure is absent from the batch.

There is one implementation: :func:`collate_columns` builds both layouts from a
``StructureBatch`` (columns of concatenated arrays). Sample dicts are first turned into columns
(``StructureBatch.from_samples``), a dataset's lazy ``SampleList`` supplies its columns directly,
so a batch is the same whichever way its structures arrived. Neighbor lists (``cutoff=``) are
computed from the batch's own positions, in the batch's dtype (``neighbors.batch_edges``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .keys import ATOM, DEFAULT_KEYS, EDGE, LIST, KeyRegistry, registry_of
from .structure_batch import StructureBatch
from .transfer import encode_batch

__all__ = [
    "molecular_collate_fn",
    "molecular_collate_fn_no_padding",
    "collate_columns",
    "Collater",
    "PADDED_EDGE_ERROR",
]

PADDED_EDGE_ERROR = (
    "neighbor lists need graph batching (use_padding=False): sample key {key!r} is per-edge and a "
    "padded batch has no place for it"
)

#: float dtypes converted with numpy (exactly as torch rounds them); others (float16, bfloat16)
#: are converted by torch, exactly as a sample tensor is built
_NUMPY_FLOAT = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_INT64 = np.dtype(np.int64)
_BOOL = np.dtype(bool)


# ----------------------------------------------------------------------------- array helpers
class _Aranges:
    """Read-only views of ``arange(n)`` int64 from one buffer grown on demand."""

    def __init__(self) -> None:
        self._buffer = np.zeros(0, dtype=np.int64)

    def __call__(self, n: int) -> np.ndarray:
        if n > self._buffer.shape[0]:
            self._buffer = np.arange(max(n, 2 * self._buffer.shape[0], 1024), dtype=np.int64)
            self._buffer.flags.writeable = False
        return self._buffer[:n]


arange = _Aranges()


def _tensor(array: np.ndarray, cast: Optional[torch.dtype] = None, view: Optional[torch.dtype] = None) -> torch.Tensor:
    """A tensor sharing ``array``'s memory when it is writeable and contiguous (else of a copy),
    reinterpreted as ``view`` (bfloat16 bits) and converted by torch to ``cast`` when given."""
    flags = array.flags
    if not (flags.c_contiguous and flags.writeable):
        array = np.array(array, order="C")
    out = torch.from_numpy(array)
    if view is not None:
        out = out.view(view)
    return out if cast is None else out.to(cast)


def _pad(values: np.ndarray, rows: np.ndarray, b: int, m: int, cast, view, np_dtype=None) -> torch.Tensor:
    """Zeros [B, M, ...] with ``values`` [T, ...] (converted to ``np_dtype`` when given) placed at
    flat rows ``rows`` of [B * M].

    The padded tensor comes from torch's allocator and is filled with one ``index_copy_``: with
    numpy's, consecutive batches kept alive by a training loop made glibc hand out fresh pages
    (measured: ~30 page faults, +50 µs per padded batch), depending on the allocation history."""
    flat = _tensor(values if np_dtype is None else values.astype(np_dtype), cast, view)
    out = torch.zeros((b, m) + tuple(flat.shape[1:]), dtype=flat.dtype)
    out.view((b * m,) + tuple(flat.shape[1:])).index_copy_(0, torch.from_numpy(rows), flat)
    return out


# ----------------------------------------------------------------------------- the one implementation
def collate_columns(
    batch: StructureBatch,
    use_padding: bool,
    dtype: Optional[torch.dtype] = None,
    keys: KeyRegistry = DEFAULT_KEYS,
) -> dict:
    """The padded (``use_padding``) or graph batch dict of ``batch``'s columns.

    dtype: float dtype of float keys (declared ``dtype='float'``, and undeclared floating
    columns); None keeps the columns' own dtypes. Integer and bool keys keep theirs. Float32 and
    float64 conversions run in numpy (exactly as torch rounds); float16/bfloat16 in torch.
    """
    n = len(batch)
    natoms = batch.natoms
    ptr = batch.ptr
    total = int(ptr[-1]) if n else 0
    np_float = None if dtype is None else _NUMPY_FLOAT.get(dtype)
    out: dict[str, Any] = {}
    rows = None
    m = 0
    if use_padding:
        m = int(natoms.max()) if n else 0
        # flat row of each atom in the [B * M] padded layout
        rows = (arange(n) * m - ptr[:-1]).repeat(natoms)
        rows += arange(total)
    labels = keys.label_set
    get = keys.get
    for name, column in batch.columns.items():
        kind = column.kind
        values = column.values
        if kind == LIST:
            out[name] = list(values)
        else:
            cast = convert = None
            if dtype is not None:
                key = get(name)
                if key.dtype == "float" if key is not None else values.dtype.kind == "f":
                    if np_float is None or column.torch_dtype is not None:
                        cast = dtype
                    elif values.dtype != np_float:
                        convert = np_float
            if kind == ATOM and use_padding:
                out[name] = _pad(values, rows, n, m, cast, column.torch_dtype, convert)
                values = None
            elif convert is not None:
                values = values.astype(convert)
            if values is None:
                pass
            elif kind == EDGE:
                if use_padding:
                    raise ValueError(PADDED_EDGE_ERROR.format(key=name))
                key = get(name)
                if key is not None and key.atom_index:
                    values = np.add(values, ptr[:-1].repeat(batch.num_edges), dtype=np.int64)
                out[name] = _tensor(values, cast, column.torch_dtype)
            else:
                out[name] = _tensor(values, cast, column.torch_dtype)
        if column.present is not None:
            out[f"{name}_mask"] = torch.from_numpy(np.array(column.present, dtype=bool))
        elif name in labels:
            out[f"{name}_mask"] = torch.ones(n, dtype=torch.bool)
        if name == "species":
            if use_padding:
                out["mask"] = torch.from_numpy(arange(m) < natoms[:, None])
            else:
                out["batch"] = torch.from_numpy(arange(n).repeat(natoms))
                out["ptr"] = _tensor(np.asarray(ptr, dtype=np.int64))
    if "natoms" not in out:
        out["natoms"] = _tensor(np.asarray(natoms, dtype=np.int64))
    if "idx" not in out and batch.indices is not None and "idx" not in batch.columns:
        out["idx"] = _tensor(np.asarray(batch.indices, dtype=np.int64))
    if use_padding:
        out["max_atoms"] = m
    else:
        out["total_atoms"] = total
    return out


def _collate(samples: Any, use_padding: bool, keys: Optional[KeyRegistry]) -> dict:
    collate = getattr(samples, "collate", None)
    if callable(collate) and hasattr(samples, "batch"):  # a dataset's lazy SampleList
        return collate(use_padding)
    fast = getattr(samples, "collate_fast", None)
    if callable(fast):  # a user sequence that batches itself
        return fast(use_padding)
    keys = registry_of(keys)
    return collate_columns(StructureBatch.from_samples(samples, keys), use_padding, None, keys)


def molecular_collate_fn(samples: Sequence[dict], keys: Optional[KeyRegistry] = None) -> dict:
    """Padded batch of ``samples`` (see module docstring): positions [B, M, 3], mask [B, M], ...

    keys: the registry declaring the samples' keys (default: ``keys.DEFAULT_KEYS``)."""
    return _collate(samples, True, keys)


def molecular_collate_fn_no_padding(samples: Sequence[dict], keys: Optional[KeyRegistry] = None) -> dict:
    """Graph batch of ``samples``: atoms concatenated, ``batch`` [T], ``ptr`` [B + 1], edges offset."""
    return _collate(samples, False, keys)


class Collater:
    """The loader's collate function (picklable: works under ``spawn``).

    use_padding: padded or graph batches. cutoff (Å, graph batches only): add ``edge_index``
    [2, E] and ``shifts`` [E, 3] computed from the batch's positions (stored lists when a packed
    file holds them for this cutoff and they are exact for the batch's values).
    keys: extra key declarations (a ``KeyRegistry`` or Keys) for samples that are plain dicts;
    a dataset's samples bring their dataset's registry. return_atoms: batches carry ``atoms``, a
    list of ``ase.Atoms`` (built from the raw structures, then transformed with the samples).
    seed: random transforms draw from a generator of this collate function (see ``loader.py``):
    seeded from ``seed`` in the main process (one stream that goes on from epoch to epoch), from
    ``seed`` and the worker's torch seed in a DataLoader worker. None: they use their own or
    torch's global RNG.
    transfer: in a DataLoader worker, return the batch in the compact transfer format
    (``transfer.encode_batch``; ``MolecularDataLoader`` decodes it).
    """

    def __init__(
        self,
        use_padding: bool = True,
        cutoff: Optional[float] = None,
        *,
        keys=None,
        return_atoms: bool = False,
        seed: Optional[int] = None,
        transfer: bool = False,
    ) -> None:
        if cutoff is not None:
            from .neighbors import check_cutoff, require_graph_mode

            require_graph_mode(use_padding, cutoff)
            check_cutoff(cutoff)
        self.use_padding = bool(use_padding)
        self.cutoff = None if cutoff is None else float(cutoff)
        self.keys = registry_of(keys)
        self.return_atoms = bool(return_atoms)
        self.seed = None if seed is None else int(seed)
        self.transfer = bool(transfer)
        self._generator: Optional[torch.Generator] = None
        self._owner: Optional[tuple] = None

    def generator(self) -> Optional[torch.Generator]:
        """The generator random transforms draw from in this process (None without ``seed``)."""
        if self.seed is None:
            return None
        info = get_worker_info()
        owner = (os.getpid(), None if info is None else info.seed)
        if self._generator is None or self._owner != owner:
            entropy = [self.seed] if info is None else [self.seed, info.seed % 2**63]
            state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
            self._generator = torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))
            self._owner = owner
        return self._generator

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_generator"] = None
        state["_owner"] = None
        return state

    @property
    def collate_fn(self) -> Callable[[Sequence[dict]], dict]:
        return molecular_collate_fn if self.use_padding else molecular_collate_fn_no_padding

    def __call__(self, samples: Sequence[dict]) -> Any:
        collate = getattr(samples, "collate", None)
        fast = getattr(samples, "collate_fast", None)
        if callable(collate) and hasattr(samples, "batch"):  # a dataset's lazy SampleList
            batch = collate(self.use_padding, cutoff=self.cutoff, with_atoms=self.return_atoms,
                            generator=self.generator())
        elif callable(fast):  # a user sequence that batches itself
            batch = fast(self.use_padding) if self.cutoff is None else fast(self.use_padding, cutoff=self.cutoff)
        else:
            batch = collate_columns(StructureBatch.from_samples(samples, self.keys), self.use_padding, None, self.keys)
            if self.cutoff is not None:
                from .neighbors import add_edges

                add_edges(batch, self.cutoff)
        if self.transfer and get_worker_info() is not None:
            return encode_batch(batch)
        return batch

    def __repr__(self) -> str:
        return f"Collater(use_padding={self.use_padding}, cutoff={self.cutoff}, return_atoms={self.return_atoms})"
