"""The packed format: every structure's arrays concatenated into a few contiguous arrays.

Layout (one HDF5 file, root attribute ``mlff_distiller_format = 'packed'``; every dataset
contiguous and uncompressed so a reader can memory-map it):

==================  ===========  ===========================================================
``positions``       [T, 3]       Å (the source's float dtype; float64 stays float64)
``numbers``         [T]          int64 atomic numbers
``offsets``         [S + 1]      int64; structure s owns atom rows ``offsets[s]:offsets[s+1]``
``cell``            [S, 3, 3]    Å (zeros for a molecule); ``pbc`` [S, 3] bool
``energy``          [S]          eV, with ``energy_present`` [S] bool
``forces``          [T, 3]       eV/Å, with ``forces_present`` [S] bool
``stress``          [S, 3, 3]    eV/Å³ (ASE sign), with ``stress_present`` [S] bool
``edge_index``      [2, E]       int32 per-structure-local (source, target); optional, with
``shifts``          [E, 3]       int32 cell shifts and ``edge_offsets`` [S + 1] int64; attr ``cutoff``
==================  ===========  ===========================================================

A label no structure carries has no dataset; rows of structures that lack a label hold NaN and
their ``*_present`` flag is False (never read as data). Attributes: ``format_version``,
``source`` (path), ``source_format``, ``units`` (JSON of the reader's unit conversions).
``Structure.extras`` are not stored.

``PackedStore`` serves these arrays — memory-mapped from a file or held in RAM (the dataset's
``cache=True``) — one structure at a time or a whole batch with one fancy-index gather per array.
``write_packed`` streams any reader, dataset or iterable of ``Structure`` into a file; ``pack``
converts a file of any supported format.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from .errors import format_error
from .structure import LABEL_NAMES, Structure
from .structure_batch import LabelColumn, StructureBatch

PathLike = Union[str, os.PathLike]

FORMAT_ATTR = "mlff_distiller_format"
FORMAT_NAME = "packed"
FORMAT_VERSION = 1
#: structures converted per chunk by ``write_packed`` and the dataset cache
DEFAULT_CHUNK = 1024
_ALIGNMENT = 64  # byte alignment of every dataset in files we write
_INT64 = np.dtype(np.int64)

#: per-structure and per-atom arrays of a label (row shape after the leading axis)
_LABEL_ROWS = {"energy": ("structure", ()), "forces": ("atom", (3,)), "stress": ("structure", (3, 3))}


def _fill(dtype: np.dtype):
    return np.nan if np.dtype(dtype).kind in "fc" else 0


# =============================================================================================
# The store: arrays in RAM or memory-mapped, batched gathers
# =============================================================================================
class PackedStore:
    """Packed arrays of S structures (numpy arrays, memory maps or h5py datasets) with gathers.

    ``arrays`` maps the dataset names of the layout above to arrays. ``read_batch(indices)``
    builds the atom index of the batch with ``cumsum``/``repeat`` and reads each array with one
    ``take``. When the arrays are views of a read-only memory map ``mm`` of the file, the data
    lives in the OS page cache: shared by every process reading the file (DataLoader workers
    do not copy it) and reclaimable by the OS, so the process's private memory stays flat
    while it iterates a file larger than RAM. The mapped pages do count in the process's
    VmRSS (as RssFile); ``release()`` unmaps them from this process.
    """

    def __init__(
        self,
        arrays: dict,
        *,
        units: Optional[dict] = None,
        cutoff: Optional[float] = None,
        path: str = "<memory>",
        mm: Optional[mmap.mmap] = None,
        h5file=None,
    ) -> None:
        self.arrays = arrays
        self.units = dict(units or {})
        self.cutoff = cutoff
        self.path = path
        self._mm = mm
        self._h5file = h5file  # kept open while some array is an h5py dataset
        self.offsets = np.asarray(arrays["offsets"])  # small: read once
        self._natoms = np.diff(self.offsets)
        self.labels = [name for name in LABEL_NAMES if name in arrays]
        self._present = {name: np.asarray(arrays[f"{name}_present"], dtype=bool) for name in self.labels}
        #: (label, per-atom?, carried by every structure?): the last needs no presence gather or zero-fill
        self._label_plan = [
            (name, _LABEL_ROWS[name][0] == "atom", bool(self._present[name].all())) for name in self.labels
        ]
        self.has_edges = "edge_index" in arrays
        self.edge_offsets = np.asarray(arrays["edge_offsets"]) if self.has_edges else None
        #: some array is an h5py dataset (chunked file): gathers go through ``_take``
        self._via_h5py = not all(isinstance(v, np.ndarray) for v in arrays.values())
        self._aranged = np.zeros(0, dtype=np.int64)  # ``_arange``'s buffer
        self._true = np.ones(0, dtype=bool)  # ``_ones``'s buffer

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
    def _check(self, idx: np.ndarray) -> None:
        # one reduction: negative indices become huge unsigned values
        if idx.shape[0] and idx.view(np.uint64).max() >= len(self):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise IndexError(f"{self.path}: structure index {int(bad)} out of range for {len(self)} structures")

    def read_batch(self, indices, *, checked: bool = False) -> StructureBatch:
        """Structures ``indices`` (dataset order kept) as one ``StructureBatch``.

        Every array is gathered once (``take``) into fresh memory; label rows of structures
        that lack the label are zero in the batch (their ``present`` flag is False).
        ``checked``: the caller guarantees ``indices`` is a [B] int64 array within range.
        """
        idx = indices
        if type(idx) is not np.ndarray or idx.dtype is not _INT64 or idx.ndim != 1:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if not checked:
            self._check(idx)
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
        take = _take if self._via_h5py else _take_numpy
        labels = {}
        for name, per_atom, all_present in self._label_plan:
            rows = atom_index if per_atom else idx
            if all_present:
                labels[name] = LabelColumn(take(a[name], rows), self._ones(n))
                continue
            present = self._present[name].take(idx)
            count = np.count_nonzero(present)
            if count == 0:
                continue  # a label no structure of the batch carries is not in the batch
            values = take(a[name], rows)
            if count < n:
                absent = ~present
                values[absent.repeat(natoms) if per_atom else absent] = 0
            labels[name] = LabelColumn(values, present)
        batch = StructureBatch(
            idx, natoms, take(a["positions"], atom_index), take(a["numbers"], atom_index),
            take(a["cell"], idx), take(a["pbc"], idx), labels, ptr=ptr,
        )
        if self.has_edges:
            e_starts = self.edge_offsets[idx]
            num_edges = self.edge_offsets[idx + 1] - e_starts
            edge_rows = _ranges(e_starts, num_edges)
            batch.edge_index = take(a["edge_index"], edge_rows, axis=1)
            batch.shifts = take(a["shifts"], edge_rows)
            batch.num_edges = num_edges
        return batch

    def _ones(self, n: int) -> np.ndarray:
        """A fresh [n] bool array of True (a copy of a shared buffer: cheaper than ``np.ones``)."""
        if n > self._true.shape[0]:
            self._true = np.ones(max(n, 64), dtype=bool)
        return self._true[:n].copy()

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
        batch = self.read_batch(indices)
        return [batch.structure(k) for k in range(len(batch))]

    def label_keys(self, index: int) -> list[str]:
        return [name for name in self.labels if self._present[name][index]]

    # -- memory ------------------------------------------------------------------------------
    def release(self) -> None:
        """Unmap this process's resident pages of the memory map (VmRSS drops; the data stays
        in the OS page cache, and the next read maps it again)."""
        if self._mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)

    def to_memory(self) -> "PackedStore":
        """A copy of every array in RAM (the dataset's ``cache=True`` for a packed file)."""
        arrays = {name: np.array(a[()] if not isinstance(a, np.ndarray) else a) for name, a in self.arrays.items()}
        return PackedStore(arrays, units=self.units, cutoff=self.cutoff)

    def close(self) -> None:
        """Drop the arrays (the map is unmapped once no batch refers to it) and any h5py handle."""
        self.arrays = {}
        self._mm = None
        if self._h5file is not None:
            self._h5file.close()
            self._h5file = None


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` for every pair, vectorised."""
    ends = np.cumsum(counts)
    if ends.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(ends[-1], dtype=np.int64) + np.repeat(starts - (ends - counts), counts)


def _take_numpy(array: np.ndarray, rows: np.ndarray, axis: int = 0) -> np.ndarray:
    """``array.take(rows, axis)`` (rows already checked to be in range)."""
    return array.take(rows, axis, None, "clip")


def _take(array, rows: np.ndarray, axis: int = 0) -> np.ndarray:
    """``array`` rows ``rows`` along ``axis`` (numpy/memmap: one gather; h5py: sorted read)."""
    if isinstance(array, np.ndarray):
        return array.take(rows, axis=axis)
    # an h5py dataset (chunked/compressed file): read the sorted unique rows, then reorder
    unique, inverse = np.unique(rows, return_inverse=True)
    if unique.size == 0:
        shape = list(array.shape)
        shape[axis] = 0
        return np.zeros(shape, dtype=array.dtype)
    selection = (slice(None),) * axis + (unique,)
    return np.take(array[selection], inverse, axis=axis)


# =============================================================================================
# Opening a packed file
# =============================================================================================
def is_packed_file(path: PathLike) -> bool:
    """True when ``path`` is an HDF5 file carrying the packed format's root attribute."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get(FORMAT_ATTR) in (FORMAT_NAME, FORMAT_NAME.encode())
    except (OSError, ValueError):
        return False


def _attr_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_header(f, path: str) -> dict:
    """Validate an open packed h5py file; return its size and attributes (ValueError otherwise)."""
    fmt = f.attrs.get(FORMAT_ATTR)
    if fmt is None or _attr_text(fmt) != FORMAT_NAME:
        raise format_error(path, None, FORMAT_ATTR, "not a packed file (root attribute missing)")
    version = int(f.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise format_error(path, None, "format_version", f"version {version} is newer than this reader ({FORMAT_VERSION})")
    for name in ("positions", "numbers", "offsets", "cell", "pbc"):
        if name not in f:
            raise format_error(path, None, name, "required dataset missing")
    offsets = f["offsets"][()]
    s, t = offsets.shape[0] - 1, int(offsets[-1]) if offsets.size else 0
    if offsets.ndim != 1 or s < 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise format_error(path, None, "offsets", "offsets must be [S + 1], start at 0 and never decrease")
    expected = {"positions": (t, 3), "numbers": (t,), "cell": (s, 3, 3), "pbc": (s, 3)}
    for name in LABEL_NAMES:
        if name in f:
            where, row = _LABEL_ROWS[name]
            expected[name] = ((t if where == "atom" else s),) + row
            expected[f"{name}_present"] = (s,)
    if "edge_index" in f:
        e = int(f["edge_offsets"][-1]) if "edge_offsets" in f else -1
        expected.update({"edge_offsets": (s + 1,), "edge_index": (2, e), "shifts": (e, 3)})
    for name, shape in expected.items():
        if name not in f:
            raise format_error(path, None, name, f"dataset missing (expected shape {list(shape)})")
        if tuple(f[name].shape) != shape:
            raise format_error(path, None, name, f"has shape {list(f[name].shape)}, expected {list(shape)}")
    cutoff = f.attrs.get("cutoff")
    return {
        "num_structures": s,
        "num_atoms": t,
        "names": list(expected) + ["offsets"],
        "units": json.loads(_attr_text(f.attrs.get("units", "{}"))),
        "cutoff": None if cutoff is None else float(cutoff),
        "source": _attr_text(f.attrs.get("source", "")),
    }


def open_packed(path: PathLike) -> PackedStore:
    """Memory-map the packed file ``path`` (one map for the whole file, read-only).

    Datasets stored chunked or compressed (e.g. after ``h5repack``) cannot be mapped; they are
    read through h5py instead, with a warning, since that is much slower.
    """
    import h5py

    path = os.fspath(path)
    f = h5py.File(path, "r")
    try:
        header = read_header(f, path)
        mapped, fallback = {}, {}
        for name in header["names"]:
            ds = f[name]
            offset = ds.id.get_offset()
            if ds.size == 0:
                mapped[name] = (None, ds.shape, ds.dtype)
            elif ds.chunks is None and ds.compression is None and offset is not None and not ds.external:
                mapped[name] = (offset, ds.shape, ds.dtype)
            else:
                fallback[name] = ds
    except BaseException:
        f.close()
        raise
    if fallback:
        warnings.warn(
            f"{path}: datasets {sorted(fallback)} are chunked or compressed and cannot be memory-mapped; "
            "reading them through h5py is much slower (re-pack the file with write_packed)",
            stacklevel=3,
        )
    else:
        f.close()
        f = None
    with open(path, "rb") as raw:
        mm = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
    arrays = dict(fallback)
    for name, (offset, shape, dtype) in mapped.items():
        count = int(np.prod(shape))
        if offset is None:
            arrays[name] = np.zeros(shape, dtype=dtype)
        else:
            arrays[name] = np.frombuffer(mm, dtype=dtype, count=count, offset=offset).reshape(shape)
    return PackedStore(arrays, units=header["units"], cutoff=header["cutoff"], path=path, mm=mm, h5file=f)


# =============================================================================================
# Building packed arrays chunk by chunk (in RAM, or spilled to disk for the file writer)
# =============================================================================================
class _Column:
    """Rows of one array appended chunk by chunk; a label column may start after row 0.

    Segments live in RAM, or in a raw spill file when ``spill_dir`` is given (so a writer never
    holds the dataset in memory). The final dtype is the promotion of every segment's dtype
    (float32 + float64 -> float64, exact); missing rows get NaN (0 for integer arrays).
    """

    def __init__(self, name: str, row_shape: tuple, spill_dir: Optional[str] = None) -> None:
        self.name = name
        self.row_shape = row_shape
        self.segments: list[tuple[int, int, np.dtype, object]] = []  # (row_start, nrows, dtype, data|offset)
        self._spill = open(os.path.join(spill_dir, name + ".raw"), "w+b") if spill_dir else None
        self._spill_size = 0

    def append(self, row_start: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if self._spill is None:
            self.segments.append((row_start, array.shape[0], array.dtype, array))
        else:
            self._spill.write(array.reshape(-1).view(np.uint8).data if array.size else b"")
            self.segments.append((row_start, array.shape[0], array.dtype, self._spill_size))
            self._spill_size += array.nbytes

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(*[seg[2] for seg in self.segments])

    def consume_segments(self) -> Iterator[tuple[int, np.ndarray]]:
        """(row_start, rows) per segment, read back from the spill file when spilled; each
        segment is dropped once handed out, so copying them out never holds the data twice."""
        if self._spill is not None:
            self._spill.flush()
        self.segments.reverse()
        while self.segments:
            row_start, nrows, dtype, data = self.segments.pop()
            if self._spill is None:
                yield row_start, data
            else:
                count = nrows * int(np.prod(self.row_shape, dtype=np.int64))
                self._spill.seek(data)
                yield row_start, np.fromfile(self._spill, dtype=dtype, count=count).reshape((nrows,) + self.row_shape)
            del data

    def to_array(self, total_rows: int) -> np.ndarray:
        dtype = self.dtype
        out = np.empty((total_rows,) + self.row_shape, dtype=dtype)  # pages are touched as filled
        covered = 0
        for row_start, rows in self.consume_segments():
            if row_start > covered:
                out[covered:row_start] = _fill(dtype)
            out[row_start : row_start + len(rows)] = rows
            covered = row_start + len(rows)
        out[covered:] = _fill(dtype)
        return out

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()


class PackedBuilder:
    """Accumulates structures, chunk by chunk, into the packed layout.

    ``add(structures)`` validates each structure (shapes, dtypes) and appends its rows;
    ``to_store()`` gives an in-memory ``PackedStore``; ``write(path)`` a packed file. With
    ``spill_dir`` every chunk goes to raw files there at once (bounded memory for writing).
    ``cutoff`` (Å) stores each structure's full neighbor list (computed with vesin, see
    ``neighbors.compute_neighbors``).
    """

    def __init__(self, *, spill_dir: Optional[str] = None, cutoff: Optional[float] = None, source: str = "<structures>") -> None:
        self.source = source
        self.cutoff = None if cutoff is None else float(cutoff)
        self.num_structures = 0
        self.num_atoms = 0
        self.num_edges = 0
        self._spill_dir = spill_dir
        self._columns: dict[str, _Column] = {}
        self._natoms: list[np.ndarray] = []
        self._num_edges: list[np.ndarray] = []

    def _column(self, name: str, row_shape: tuple) -> _Column:
        if name not in self._columns:
            self._columns[name] = _Column(name, row_shape, self._spill_dir)
        return self._columns[name]

    def add(self, structures: Sequence[Structure]) -> None:
        """Append a chunk of structures (in dataset order)."""
        if not structures:
            return
        s0 = self.num_structures
        checked = [_checked(s, s0 + k, self.source) for k, s in enumerate(structures)]
        self.add_batch(StructureBatch.from_structures(checked, np.arange(s0, s0 + len(checked))))

    def add_batch(self, batch: StructureBatch) -> None:
        """Append the structures of ``batch`` (already concatenated arrays, e.g. from numpy).

        Label rows of structures whose ``present`` flag is False are stored as NaN.
        """
        n, s0, t0 = len(batch), self.num_structures, self.num_atoms
        if n == 0:
            return
        natoms = np.asarray(batch.natoms, dtype=np.int64)
        total = int(natoms.sum())
        shapes = {"positions": (total, 3), "numbers": (total,), "cell": (n, 3, 3), "pbc": (n, 3)}
        for key, shape in shapes.items():
            if np.shape(getattr(batch, key)) != shape:
                raise format_error(self.source, s0, key, f"chunk has shape {list(np.shape(getattr(batch, key)))}, expected {list(shape)}")
        if np.asarray(batch.numbers).dtype.kind not in "iu":
            raise format_error(self.source, s0, "numbers", "atomic numbers must be integers")
        self._column("positions", (3,)).append(t0, np.asarray(batch.positions))
        self._column("numbers", ()).append(t0, np.asarray(batch.numbers, dtype=np.int64))
        self._column("cell", (3, 3)).append(s0, np.asarray(batch.cell))
        self._column("pbc", (3,)).append(s0, np.asarray(batch.pbc, dtype=bool))
        for name, column in batch.labels.items():
            where, row_shape = _LABEL_ROWS[name]
            values, present = np.asarray(column.values), np.asarray(column.present, dtype=bool)
            expected = ((total if where == "atom" else n),) + row_shape
            if values.shape != expected or present.shape != (n,):
                raise format_error(self.source, s0, name, f"chunk has shape {list(values.shape)}, expected {list(expected)}")
            if not present.all():
                if values.dtype.kind in "iu":
                    values = values.astype(np.float64)
                values = values.copy()
                values[~present.repeat(natoms) if where == "atom" else ~present] = np.nan
            self._column(name, row_shape).append(t0 if where == "atom" else s0, values)
            self._column(f"{name}_present", ()).append(s0, present)
        if self.cutoff is not None:
            self._add_edges(batch, s0)
        self._natoms.append(natoms)
        self.num_structures += n
        self.num_atoms += total

    def _add_edges(self, batch: StructureBatch, s0: int) -> None:
        from .neighbors import compute_neighbors

        index_parts, shift_parts, counts = [], [], []
        ptr = batch.ptr
        for k in range(len(batch)):
            try:
                edges = compute_neighbors(batch.positions[ptr[k] : ptr[k + 1]], batch.cell[k], batch.pbc[k], self.cutoff)
            except ValueError as exc:
                raise format_error(self.source, s0 + k, "positions", f"neighbor list: {exc}") from exc
            index_parts.append(edges.edge_index.T.astype(np.int32))
            shift_parts.append(_int32(edges.shifts, self.source, s0 + k))
            counts.append(edges.edge_index.shape[1])
        self._column("edge_index", (2,)).append(self.num_edges, _concat(index_parts, (0, 2)).astype(np.int32))
        self._column("shifts", (3,)).append(self.num_edges, _concat(shift_parts, (0, 3)).astype(np.int32))
        counts = np.array(counts, dtype=np.int64)
        self._num_edges.append(counts)
        self.num_edges += int(counts.sum())

    # -- outputs -----------------------------------------------------------------------------
    def _offsets(self, parts: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(self.num_structures + 1, dtype=np.int64)
        if parts:
            np.cumsum(np.concatenate(parts), out=out[1:])
        return out

    def _shapes(self) -> dict[str, tuple]:
        s, t, e = self.num_structures, self.num_atoms, self.num_edges
        rows = {"positions": t, "numbers": t, "cell": s, "pbc": s, "forces": t, "edge_index": e, "shifts": e}
        return {name: (rows.get(name, s),) + col.row_shape for name, col in self._columns.items()}

    def _empty_defaults(self) -> None:
        """Columns every file has, even when no structure was added."""
        for name, row_shape, dtype in (("positions", (3,), np.float64), ("numbers", (), np.int64),
                                       ("cell", (3, 3), np.float64), ("pbc", (3,), bool)):
            if name not in self._columns or not self._columns[name].segments:
                self._column(name, row_shape).append(0, np.zeros((0,) + row_shape, dtype=dtype))

    def to_store(self, units: Optional[dict] = None) -> PackedStore:
        """An in-memory ``PackedStore`` of everything added (the builder is emptied)."""
        self._empty_defaults()
        shapes = self._shapes()
        arrays = {name: self._columns[name].to_array(shapes[name][0]) for name in shapes}
        arrays["offsets"] = self._offsets(self._natoms)
        if self.cutoff is not None:
            arrays["edge_index"] = np.ascontiguousarray(arrays["edge_index"].T)
            arrays["edge_offsets"] = self._offsets(self._num_edges)
        self.close()
        return PackedStore(arrays, units=units, cutoff=self.cutoff)

    def write(self, path: PathLike, attrs: Optional[dict] = None) -> None:
        """Write everything added to the packed file ``path`` (contiguous datasets)."""
        import h5py

        self._empty_defaults()
        shapes = self._shapes()
        with h5py.File(path, "w", alignment_threshold=1, alignment_interval=_ALIGNMENT) as f:
            f.attrs[FORMAT_ATTR] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            f.attrs["num_structures"] = self.num_structures
            f.attrs["num_atoms"] = self.num_atoms
            f.create_dataset("offsets", data=self._offsets(self._natoms))
            if self.cutoff is not None:
                f.attrs["cutoff"] = self.cutoff
                f.create_dataset("edge_offsets", data=self._offsets(self._num_edges))
            for name, shape in shapes.items():
                column = self._columns[name]
                dtype = column.dtype
                if name == "edge_index":
                    ds = f.create_dataset(name, shape=(2, shape[0]), dtype=dtype)
                else:
                    ds = f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=_fill(dtype))
                for row_start, rows in column.consume_segments():
                    if len(rows) == 0:
                        continue
                    if name == "edge_index":
                        ds[:, row_start : row_start + len(rows)] = rows.T.astype(dtype, copy=False)
                    else:
                        ds[row_start : row_start + len(rows)] = rows.astype(dtype, copy=False)
        self.close()

    def close(self) -> None:
        for column in self._columns.values():
            column.close()


def _concat(parts: list[np.ndarray], empty_shape: tuple) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty_shape)


def _int32(values: np.ndarray, path: str, index: int) -> np.ndarray:
    if values.size and np.abs(values).max() >= 2**31:
        raise format_error(path, index, "shifts", "cell shifts do not fit int32")
    return values.astype(np.int32)


def _checked(s: Structure, index: int, path: str) -> Structure:
    """``s`` with numpy arrays of the contract's shapes, or an error naming the structure and key."""
    if not isinstance(s, Structure):
        raise TypeError(f"{path}: item {index} is a {type(s).__name__}, expected a Structure")
    numbers = np.asarray(s.numbers)
    if numbers.ndim != 1 or numbers.dtype.kind not in "iu":
        raise format_error(path, index, "numbers", f"must be [N] integers, got {numbers.dtype} {list(numbers.shape)}")
    n = numbers.shape[0]
    arrays = {"positions": (n, 3), "cell": (3, 3), "pbc": (3,), "forces": (n, 3), "stress": (3, 3), "energy": ()}
    out = {"numbers": numbers}
    for key, shape in arrays.items():
        value = getattr(s, key)
        if value is None:
            if key in ("positions", "cell", "pbc"):
                raise format_error(path, index, key, "missing")
            out[key] = None
            continue
        value = np.asarray(value)
        if value.shape != shape:
            raise format_error(path, index, key, f"has shape {list(value.shape)}, expected {list(shape)}")
        if key != "pbc" and value.dtype.kind not in "fiu":
            raise format_error(path, index, key, f"must be numeric, got dtype {value.dtype}")
        out[key] = value
    return Structure(**out)


# =============================================================================================
# Writing files
# =============================================================================================
def _chunks(source, chunk: int) -> tuple[Iterator[list[Structure]], dict]:
    """Chunks of structures from a Reader, a dataset/subset or an iterable, and file attributes."""
    from .readers.base import Reader

    attrs: dict = {}
    if isinstance(source, Reader):
        attrs = {"source": getattr(source, "display_path", source.path), "source_format": source.format_name,
                 "units": json.dumps(source.units)}
        n = len(source)
        return (source.read_many(range(a, min(a + chunk, n))) for a in range(0, n, chunk)), attrs
    root, indices = source, None
    while hasattr(root, "dataset") and hasattr(root, "indices"):  # MolecularSubset (possibly nested)
        indices = np.asarray(root.indices) if indices is None else np.asarray(root.indices)[indices]
        root = root.dataset
    if hasattr(root, "get_structures") and hasattr(root, "reader"):
        attrs = {"source": getattr(root.reader, "display_path", root.data_path), "source_format": root.format,
                 "units": json.dumps(root.units)}
        idx = np.arange(len(root)) if indices is None else indices
        return (root.get_structures(idx[a : a + chunk].tolist()) for a in range(0, len(idx), chunk)), attrs

    def batches() -> Iterator[list[Structure]]:
        buffer: list[Structure] = []
        for item in source:
            buffer.append(item)
            if len(buffer) == chunk:
                yield buffer
                buffer = []
        if buffer:
            yield buffer

    return batches(), attrs


def write_packed(
    path: PathLike,
    source,
    *,
    overwrite: bool = False,
    cutoff: Optional[float] = None,
    chunk: int = DEFAULT_CHUNK,
) -> int:
    """Write ``source`` to the packed file ``path``; return the number of structures written.

    source: a ``Reader``, a ``MolecularDataset``/``MolecularSubset`` (raw arrays, no transform)
    or an iterable of ``Structure``. Structures are streamed ``chunk`` at a time through raw
    spill files beside ``path``, so memory stays bounded; the file is written under a temporary
    name and moved into place when complete. ``cutoff`` (Å) also stores neighbor lists.
    Raises FileExistsError when ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory")
    chunks, attrs = _chunks(source, int(chunk))
    spill = tempfile.mkdtemp(prefix=f".{path.name}.spill-", dir=path.parent)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        builder = PackedBuilder(spill_dir=spill, cutoff=cutoff, source=str(attrs.get("source", path)))
        for structures in chunks:
            builder.add(structures)
        builder.write(tmp, attrs)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
        if tmp.exists():
            tmp.unlink()
    return builder.num_structures


def pack(
    input_path: PathLike,
    output_path: PathLike,
    format: Optional[str] = None,
    *,
    overwrite: bool = False,
    cutoff: Optional[float] = None,
    chunk: int = DEFAULT_CHUNK,
    **reader_options,
) -> int:
    """Convert ``input_path`` (any supported format, guessed from the suffix when None) to a
    packed file at ``output_path``. ``reader_options`` (``energy_key=``, ``layout=``...) go to the
    reader. Returns the number of structures written."""
    from .readers import open_reader

    input_path = os.fspath(input_path)
    if "://" not in input_path and not os.path.exists(input_path):
        raise FileNotFoundError(f"{input_path}: no such file")
    reader = open_reader(input_path, format, **reader_options)
    try:
        return write_packed(output_path, reader, overwrite=overwrite, cutoff=cutoff, chunk=chunk)
    finally:
        reader.close()


def build_store(reader, chunk: int = DEFAULT_CHUNK) -> PackedStore:
    """An in-memory ``PackedStore`` of every structure of ``reader`` (one pass, ``chunk`` at a time)."""
    store = getattr(reader, "store", None)
    if isinstance(store, PackedStore):
        return store.to_memory()
    builder = PackedBuilder(source=getattr(reader, "display_path", reader.path))
    n = len(reader)
    for a in range(0, n, chunk):
        builder.add(reader.read_many(range(a, min(a + chunk, n))))
    return builder.to_store(units=reader.units)


__all__ = ["PackedStore", "PackedBuilder", "open_packed", "is_packed_file", "write_packed", "pack", "build_store"]
