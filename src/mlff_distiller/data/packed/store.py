"""``PackedStore``: packed arrays (memory-mapped or in RAM) served one structure or one batch at a time."""

from __future__ import annotations

import mmap
from typing import Optional, Sequence

import numpy as np

from ..indices import check_indices
from ..keys import ATOM, DEFAULT_KEYS, LIST, Key, KeyRegistry
from ..readers.checks import check_packed_batch, check_string_codes
from ..structure import Structure
from ..structure_batch import Column, StructureBatch
from .layout import PRESENT

_INT64 = np.dtype(np.int64)


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` for every pair, vectorised."""
    ends = np.cumsum(counts)
    if ends.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(ends[-1], dtype=np.int64) + np.repeat(starts - (ends - counts), counts)


def _take_numpy(array: np.ndarray, rows: np.ndarray, axis: int = 0) -> np.ndarray:
    """``array.take(rows, axis)`` (rows already checked to be in range)."""
    return array.take(rows, axis, None, "clip")


def _take_h5(array, rows: np.ndarray, axis: int = 0) -> np.ndarray:
    """Rows ``rows`` of ``array`` along ``axis`` (numpy: one gather; h5py dataset: sorted read)."""
    if isinstance(array, np.ndarray):
        return array.take(rows, axis=axis)
    unique, inverse = np.unique(rows, return_inverse=True)
    if unique.size == 0:
        shape = list(array.shape)
        shape[axis] = 0
        return np.zeros(shape, dtype=array.dtype)
    selection = (slice(None),) * axis + (unique,)
    return np.take(array[selection], inverse, axis=axis)


class PackedStore:
    """Packed arrays of S structures (numpy arrays, memory maps or h5py datasets) with gathers.

    ``arrays`` maps the dataset names of the layout (``layout.py``) to arrays; ``keys`` declares
    the stored keys besides positions/numbers/cell/pbc; ``strings`` holds the distinct values of
    each string key. ``read_batch(indices)`` builds the atom index of the batch with
    ``cumsum``/``repeat`` and reads each array with one ``take``. When the arrays are views of a
    read-only memory map ``mm`` of the file, the data lives in the OS page cache: shared by every
    process reading the file (DataLoader workers do not copy it) and reclaimable by the OS, so the
    process's private memory stays flat while it iterates a file larger than RAM. The mapped pages
    do count in the process's VmRSS (as RssFile); ``release()`` unmaps them from this process.
    """

    def __init__(
        self,
        arrays: dict,
        *,
        keys: Optional[dict[str, Key]] = None,
        strings: Optional[dict[str, list[str]]] = None,
        units: Optional[dict] = None,
        metadata: Optional[dict] = None,
        cutoff: Optional[float] = None,
        path: str = "<memory>",
        mm: Optional[mmap.mmap] = None,
        h5file=None,
    ) -> None:
        self.arrays = arrays
        self.keys: dict[str, Key] = dict(keys or {})
        self.strings = {name: list(values) for name, values in (strings or {}).items()}
        self._vocab = {name: np.array(values + [None], dtype=object) for name, values in self.strings.items()}
        self.units = dict(units or {})
        self.metadata = dict(metadata or {})
        self.cutoff = cutoff
        self.path = path
        self._mm = mm
        self._h5file = h5file  # kept open while some array is an h5py dataset
        self.offsets = np.asarray(arrays["offsets"])  # small: read once
        self._natoms = np.diff(self.offsets)
        self._present = {name: np.asarray(arrays[name + PRESENT], dtype=bool) for name in self.keys}
        #: (name, kind, carried by every structure?): the last needs no presence gather or zero-fill
        self._plan = [(name, key.kind, bool(self._present[name].all())) for name, key in self.keys.items()]
        check_string_codes({name: arrays[name] for name, key in self.keys.items() if key.kind == LIST},
                           self.strings, path=path)
        self.has_edges = "edge_index" in arrays
        self.edge_offsets = np.asarray(arrays["edge_offsets"]) if self.has_edges else None
        exact = arrays.get("edge_exact32")
        self.edge_exact32 = None if exact is None else np.asarray(exact, dtype=bool)
        #: some array is an h5py dataset (chunked file): gathers go through ``_take_h5``
        self._via_h5py = not all(isinstance(v, np.ndarray) for v in arrays.values())
        self._aranged = np.zeros(0, dtype=np.int64)
        #: [S] structures whose values this process has checked (``read_batch``)
        self._validated = np.zeros(0, dtype=bool)
        self._true = np.ones(0, dtype=bool)

    @property
    def key_registry(self) -> KeyRegistry:
        """The built-in keys plus the keys this file declares."""
        return DEFAULT_KEYS.extend(k for k in self.keys.values() if DEFAULT_KEYS.get(k.name) != k)

    # -- sizes -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def natoms_array(self) -> np.ndarray:
        """[S] int64 atom counts (from ``offsets``, no array read)."""
        return self._natoms

    @property
    def nbytes(self) -> int:
        return int(sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape)) for a in self.arrays.values()))

    # -- reads -------------------------------------------------------------------------------
    def read_batch(self, indices, *, checked: bool = False) -> StructureBatch:
        """Structures ``indices`` (dataset order kept) as one ``StructureBatch``.

        Every array is gathered once (``take``) into fresh memory; rows of structures that lack
        a key are zero in the batch (their ``present`` flag is False); a key no structure of the
        batch carries is not in it. ``checked``: ``indices`` is a [B] int64 array within range.
        """
        idx = indices
        if not checked:
            idx = check_indices(indices, len(self), self.path)
        elif type(idx) is not np.ndarray or idx.dtype is not _INT64 or idx.ndim != 1:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = idx.shape[0]
        natoms = self._natoms.take(idx)
        ptr = np.empty(n + 1, dtype=np.int64)
        ptr[0] = 0
        natoms.cumsum(out=ptr[1:])
        # atom rows of the batch: offsets[idx[b]] + (0 .. natoms[b]) for every b, concatenated
        start = self.offsets.take(idx)
        start -= ptr[:-1]
        atom_index = start.repeat(natoms)
        atom_index += self._arange(ptr.item(n))
        a = self.arrays
        take = _take_h5 if self._via_h5py else _take_numpy
        columns = {
            "positions": Column(take(a["positions"], atom_index), None, ATOM),
            "species": Column(take(a["numbers"], atom_index), None, ATOM),
            "cell": Column(take(a["cell"], idx), None, "structure"),
            "pbc": Column(take(a["pbc"], idx), None, "structure"),
        }
        for name, kind, all_present in self._plan:
            if kind == LIST:
                codes = take(a[name], idx)
                present = codes >= 0
                if all_present or present.all():
                    columns[name] = Column(self._vocab[name][codes].tolist(), None, LIST)
                elif present.any():
                    columns[name] = Column(self._vocab[name][codes].tolist(), present, LIST)
                continue
            per_atom = kind == ATOM
            rows = atom_index if per_atom else idx
            if all_present:
                columns[name] = Column(take(a[name], rows), None, kind)
                continue
            present = self._present[name].take(idx)
            count = np.count_nonzero(present)
            if count == 0:
                continue
            values = take(a[name], rows)
            if count < n:
                absent = ~present
                values[absent.repeat(natoms) if per_atom else absent] = 0
                columns[name] = Column(values, present, kind)
            else:
                columns[name] = Column(values, None, kind)
        batch = StructureBatch(idx, natoms, columns, ptr=ptr)
        if self.has_edges:
            e_starts = self.edge_offsets[idx]
            num_edges = self.edge_offsets[idx + 1] - e_starts
            edge_rows = ranges(e_starts, num_edges)
            batch.stored_edges = (take(a["edge_index"], edge_rows, axis=1), take(a["shifts"], edge_rows))
            batch.num_edges = num_edges
            batch.edges_cutoff = self.cutoff
            if self.edge_exact32 is not None:
                batch.edges_exact = self.edge_exact32.take(idx)
        # impossible values (NaN positions, Z <= 0, an edge index outside its structure) are
        # refused here, whoever wrote the file (readers/checks.py; proportional to what was read).
        # Each structure is checked the first time this process reads it: later epochs cost one
        # gather of the flags.
        validated = self._validated
        if validated.shape[0] != len(self):
            validated = self._validated = np.zeros(len(self), dtype=bool)
        if validated.take(idx).all():
            return batch
        check_packed_batch(
            {name: c.values for name, c in columns.items() if c.kind != LIST}, natoms, idx, path=self.path,
            present={name: c.present for name, c in columns.items() if c.present is not None},
            edge_index=batch.stored_edges[0] if self.has_edges else None,
            num_edges=batch.num_edges if self.has_edges else None, registry=self.key_registry,
        )
        validated[idx] = True
        return batch

    def _arange(self, n: int) -> np.ndarray:
        """A read-only view of ``arange(n)`` int64 (grown on demand, shared by every batch)."""
        if n > self._aranged.shape[0]:
            self._aranged = np.arange(max(n, 2 * self._aranged.shape[0]), dtype=np.int64)
            self._aranged.flags.writeable = False
        return self._aranged[:n]

    def read(self, index: int) -> Structure:
        """Structure ``index`` (its own copies of the arrays)."""
        return self.read_batch([index]).structure(0)

    def read_many(self, indices: Sequence[int]) -> list[Structure]:
        return self.read_batch(indices).structures()

    def label_keys(self, index: int) -> list[str]:
        """The stored keys structure ``index`` carries."""
        return [name for name in self.keys if self._present[name][index]]

    # -- memory ------------------------------------------------------------------------------
    def release(self) -> None:
        """Unmap this process's resident pages of the memory map (VmRSS drops; the data stays
        in the OS page cache, and the next read maps it again)."""
        if self._mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)

    def to_memory(self) -> "PackedStore":
        """A copy of every array in RAM (the dataset's ``cache=True`` for a packed file)."""
        arrays = {name: np.array(a[()] if not isinstance(a, np.ndarray) else a) for name, a in self.arrays.items()}
        return PackedStore(arrays, keys=self.keys, strings=self.strings, units=self.units, metadata=self.metadata,
                           cutoff=self.cutoff)

    def close(self) -> None:
        """Drop the arrays (the map is unmapped once no batch refers to it) and any h5py handle."""
        self.arrays = {}
        self._mm = None
        if self._h5file is not None:
            self._h5file.close()
            self._h5file = None


__all__ = ["PackedStore", "ranges"]
