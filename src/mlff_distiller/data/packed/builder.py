"""``PackedBuilder``: structures appended chunk by chunk into the packed layout (RAM or spill files)."""

from __future__ import annotations

import json
import os
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import format_error
from ..keys import ATOM, DEFAULT_KEYS, EDGE, LIST, Key, KeyRegistry
from ..structure import Structure
from ..structure_batch import StructureBatch
from .layout import FORMAT_ATTR, FORMAT_NAME, FORMAT_VERSION, PRESENT, STRINGS, fill_value
from .store import PackedStore

PathLike = Union[str, os.PathLike]
_ALIGNMENT = 64  # byte alignment of every dataset in files we write
_BASE = ("positions", "species", "cell", "pbc")


class _Column:
    """Rows of one array appended chunk by chunk; a key's column may start after row 0.

    Segments live in RAM, or in a raw spill file when ``spill_dir`` is given (so a writer never
    holds the dataset in memory). The final dtype is the promotion of every segment's dtype
    (float32 + float64 -> float64, exact); rows never appended hold ``fill``.
    """

    def __init__(self, name: str, row_shape: tuple, spill_dir: Optional[str] = None, fill=None) -> None:
        self.name = name
        self.row_shape = row_shape
        self.fill = fill
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

    def fill_for(self, dtype: np.dtype):
        return fill_value(dtype) if self.fill is None else self.fill

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
        fill = self.fill_for(dtype)
        out = np.empty((total_rows,) + self.row_shape, dtype=dtype)  # pages are touched as filled
        covered = 0
        for row_start, rows in self.consume_segments():
            if row_start > covered:
                out[covered:row_start] = fill
            out[row_start : row_start + len(rows)] = rows
            covered = row_start + len(rows)
        out[covered:] = fill
        return out

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()


class PackedBuilder:
    """Accumulates structures, chunk by chunk, into the packed layout.

    ``add(structures)`` validates each structure (shapes, dtypes, declared extras) and appends its
    rows; ``add_batch(batch)`` appends a ``StructureBatch``; ``to_store()`` gives an in-memory
    ``PackedStore``; ``write(path)`` a packed file. With ``spill_dir`` every chunk goes to raw files
    there at once (bounded memory for writing). ``cutoff`` (Å) stores each structure's full
    neighbor list (``neighbors.batch_edges``). ``keys`` declares the extras structures may carry;
    a key's row shape (e.g. K of ``hvp``) must be the same in every structure (else an error
    naming the source and the structure).
    """

    def __init__(
        self,
        *,
        spill_dir: Optional[str] = None,
        cutoff: Optional[float] = None,
        source: str = "<structures>",
        keys: KeyRegistry = DEFAULT_KEYS,
    ) -> None:
        self.source = source
        self.cutoff = None if cutoff is None else float(cutoff)
        self.keys = keys
        self.num_structures = 0
        self.num_atoms = 0
        self.num_edges = 0
        self._spill_dir = spill_dir
        self._columns: dict[str, _Column] = {}
        self._declared: dict[str, Key] = {}
        self._strings: dict[str, dict[str, int]] = {}
        self._natoms: list[np.ndarray] = []
        self._num_edges: list[np.ndarray] = []

    @property
    def declared_keys(self) -> tuple[Key, ...]:
        """The keys of the labels and extras stored so far (beyond positions, numbers, cell, pbc), in
        the order they first appeared."""
        return tuple(self._declared.values())

    def _column(self, name: str, row_shape: tuple, fill=None) -> _Column:
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = _Column(name, row_shape, self._spill_dir, fill)
        return column

    def add(self, structures: Sequence[Structure]) -> None:
        """Append a chunk of structures (in dataset order)."""
        if not structures:
            return
        s0 = self.num_structures
        checked = [_checked(s, s0 + k, self.source, self.keys) for k, s in enumerate(structures)]
        self.add_batch(StructureBatch.from_structures(checked, np.arange(s0, s0 + len(checked)), self.keys,
                                                      self.source))

    def add_batch(self, batch: StructureBatch) -> None:
        """Append the structures of ``batch`` (concatenated arrays, e.g. built with numpy).

        Rows of structures whose ``present`` flag is False are stored as NaN (0 for integers)."""
        n, s0, t0 = len(batch), self.num_structures, self.num_atoms
        if n == 0:
            return
        natoms = np.asarray(batch.natoms, dtype=np.int64)
        total = int(natoms.sum())
        shapes = {"positions": (total, 3), "species": (total,), "cell": (n, 3, 3), "pbc": (n, 3)}
        for name, shape in shapes.items():
            column = batch.columns.get(name)
            got = None if column is None else np.shape(column.values)
            if got != shape:
                raise format_error(self.source, s0, name, f"chunk has shape {None if got is None else list(got)}, "
                                                          f"expected {list(shape)}")
        numbers = np.asarray(batch.numbers)
        if numbers.dtype.kind not in "iu":
            raise format_error(self.source, s0, "numbers", "atomic numbers must be integers")
        self._column("positions", (3,)).append(t0, np.asarray(batch.positions))
        self._column("numbers", ()).append(t0, numbers.astype(np.int64, copy=False))
        self._column("cell", (3, 3)).append(s0, np.asarray(batch.cell))
        self._column("pbc", (3,)).append(s0, np.asarray(batch.pbc, dtype=bool))
        for name, column in batch.columns.items():
            if name in _BASE:
                continue
            key = self.keys.require(name, where=self.source)
            if key.kind == EDGE:
                raise format_error(self.source, s0, name, "per-edge keys are not stored (use cutoff= to store neighbor lists)")
            present = np.ones(n, dtype=bool) if column.present is None else np.asarray(column.present, dtype=bool)
            if key.kind == LIST:
                self._add_strings(key, column.values, present, s0)
            else:
                self._add_values(key, np.asarray(column.values), present, natoms, total, s0)
            self._column(name + PRESENT, ()).append(s0, present)
            self._declared[name] = key
        if self.cutoff is not None:
            self._add_edges(batch, s0)
        self._natoms.append(natoms)
        self.num_structures += n
        self.num_atoms += total

    def _add_values(self, key: Key, values: np.ndarray, present: np.ndarray, natoms, total: int, s0: int) -> None:
        per_atom = key.kind == ATOM
        lead = total if per_atom else len(present)
        if values.shape[:1] != (lead,):
            raise format_error(self.source, s0, key.name, f"chunk has shape {list(values.shape)}, expected {lead} rows")
        row = values.shape[1:]
        column = self._columns.get(key.name)
        if column is not None and column.row_shape != row:
            raise format_error(
                self.source, s0, key.name,
                f"rows of shape {list(row)} after rows of shape {list(column.row_shape)}: the row shape of a key "
                "must be the same for every structure of a file",
            )
        if values.dtype.kind not in "fiub":
            raise format_error(self.source, s0, key.name, f"must be numeric, got dtype {values.dtype}")
        if not present.all():
            absent = ~present
            values = values.copy() if values.dtype.kind == "f" or key.dtype != "float" else values.astype(np.float64)
            values[absent.repeat(natoms) if per_atom else absent] = fill_value(values.dtype)
        self._column(key.name, row).append(s0 if not per_atom else self.num_atoms, values)

    def _add_strings(self, key: Key, values: list, present: np.ndarray, s0: int) -> None:
        vocab = self._strings.setdefault(key.name, {})
        codes = np.full(len(values), -1, dtype=np.int32)
        for b, value in enumerate(values):
            if present[b]:
                if not isinstance(value, str):
                    raise format_error(self.source, s0 + b, key.name, f"must be a string, got {type(value).__name__}")
                codes[b] = vocab.setdefault(value, len(vocab))
        self._column(key.name, (), fill=-1).append(s0, codes)

    def _add_edges(self, batch: StructureBatch, s0: int) -> None:
        from ..neighbors import batch_edges

        ptr = batch.ptr
        positions, cell, pbc = np.asarray(batch.positions), np.asarray(batch.cell), np.asarray(batch.pbc)

        def where(b: int) -> str:
            return f"{self.source}, structure {s0 + b}, key 'positions': neighbor list"

        edge_index, shifts = batch_edges(positions, cell, pbc, ptr, self.cutoff, where=where)
        owner = np.searchsorted(ptr, edge_index[0], side="right") - 1
        counts = np.bincount(owner, minlength=len(batch)).astype(np.int64)
        exact = np.ones(len(batch), dtype=bool)
        if positions.dtype != np.float32 or cell.dtype != np.float32:  # same lists from float32-rounded values?
            index32, shifts32 = batch_edges(positions.astype(np.float32), cell.astype(np.float32), pbc, ptr,
                                            self.cutoff, where=where)
            owner32 = np.searchsorted(ptr, index32[0], side="right") - 1
            counts32 = np.bincount(owner32, minlength=len(batch))
            same = (edge_index.shape == index32.shape and np.array_equal(edge_index, index32)
                    and np.array_equal(shifts, shifts32))
            if not same:
                starts, starts32 = np.concatenate([[0], np.cumsum(counts)]), np.concatenate([[0], np.cumsum(counts32)])
                for b in range(len(batch)):
                    a, c = slice(starts[b], starts[b + 1]), slice(starts32[b], starts32[b + 1])
                    exact[b] = (counts[b] == counts32[b] and np.array_equal(edge_index[:, a], index32[:, c])
                                and np.array_equal(shifts[a], shifts32[c]))
        local = edge_index - ptr[owner]
        if shifts.size and np.abs(shifts).max() >= 2**31:
            b = int(owner[np.flatnonzero(np.abs(shifts).max(axis=1) >= 2**31)[0]])
            raise format_error(self.source, s0 + b, "shifts", "cell shifts do not fit int32")
        self._column("edge_index", (2,)).append(self.num_edges, np.ascontiguousarray(local.T, dtype=np.int32))
        self._column("shifts", (3,)).append(self.num_edges, shifts.astype(np.int32))
        self._column("edge_exact32", ()).append(s0, exact)
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
        rows = {"positions": t, "numbers": t, "edge_index": e, "shifts": e}
        rows.update({name: t for name, key in self._declared.items() if key.kind == ATOM})
        return {name: (rows.get(name, s),) + col.row_shape for name, col in self._columns.items()}

    def _empty_defaults(self) -> None:
        """Columns every file has, even when no structure was added."""
        for name, row_shape, dtype in (("positions", (3,), np.float64), ("numbers", (), np.int64),
                                       ("cell", (3, 3), np.float64), ("pbc", (3,), bool)):
            if name not in self._columns or not self._columns[name].segments:
                self._column(name, row_shape).append(0, np.zeros((0,) + row_shape, dtype=dtype))

    def _key_declarations(self) -> str:
        return json.dumps([key.as_dict() for key in self._declared.values()])

    def _string_tables(self) -> dict[str, np.ndarray]:
        return {name + STRINGS: np.frombuffer(json.dumps(list(vocab)).encode(), dtype=np.uint8).copy()
                for name, vocab in self._strings.items()}

    def to_store(self, units: Optional[dict] = None, metadata: Optional[dict] = None) -> PackedStore:
        """An in-memory ``PackedStore`` of everything added (the builder is emptied)."""
        self._empty_defaults()
        shapes = self._shapes()
        arrays = {name: self._columns[name].to_array(shapes[name][0]) for name in shapes}
        arrays["offsets"] = self._offsets(self._natoms)
        if self.cutoff is not None:
            arrays["edge_index"] = np.ascontiguousarray(arrays["edge_index"].T)
            arrays["edge_offsets"] = self._offsets(self._num_edges)
        strings = {name: list(vocab) for name, vocab in self._strings.items()}
        self.close()
        return PackedStore(arrays, keys=self._declared, strings=strings, units=units, metadata=metadata,
                           cutoff=self.cutoff)

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
            f.attrs["keys"] = self._key_declarations()
            f.create_dataset("offsets", data=self._offsets(self._natoms))
            if self.cutoff is not None:
                f.attrs["cutoff"] = self.cutoff
                f.create_dataset("edge_offsets", data=self._offsets(self._num_edges))
            for name, data in self._string_tables().items():
                f.create_dataset(name, data=data)
            for name, shape in shapes.items():
                column = self._columns[name]
                dtype = column.dtype
                if name == "edge_index":
                    ds = f.create_dataset(name, shape=(2, shape[0]), dtype=dtype)
                else:
                    ds = f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=column.fill_for(dtype))
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


def _checked(s: Structure, index: int, path: str, keys: KeyRegistry) -> Structure:
    """``s`` with numpy arrays of the contract's shapes and its extras checked against their
    declarations (``Key.check``), or an error naming the structure and key."""
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
    extras = {name: keys.require(name, where=path).check(value, natoms=n, path=path, index=index)
              for name, value in s.extras.items()}
    return Structure(extras=extras, **out)


__all__ = ["PackedBuilder"]
