"""The reader interface: count structures, tell atom counts, return raw arrays for index i.

A reader knows one storage format and nothing about torch. It opens its file lazily, once
per process (the handle is dropped when pickled, so a reader survives ``fork``/``spawn``
into DataLoader workers), and reports bad input with the file, the structure index and the key.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from ..errors import format_error
from ..indices import check_index, check_indices
from ..keys import DEFAULT_KEYS, STRUCTURE_LABELS, KeyRegistry
from ..labels import LabelKeys
from ..properties import PropertiesLike, parse_properties
from ..structure import Structure
from .files import check_unchanged, identities

if TYPE_CHECKING:
    from ..structure_batch import StructureBatch

#: structures read per call whenever a whole file (or a selection of it) is scanned
SCAN_CHUNK = 256


def chunks(indices: Iterable[int], chunk: int = SCAN_CHUNK) -> Iterator[list[int]]:
    """``indices`` in order as lists of at most ``chunk`` indices."""
    idx = indices if isinstance(indices, (range, list)) else list(indices)
    for start in range(0, len(idx), chunk):
        yield list(idx[start : start + chunk])


def scan(read_many: Callable[[Sequence[int]], list], indices: Iterable[int], chunk: int = SCAN_CHUNK) -> Iterator[list]:
    """``read_many`` over ``indices`` in order, ``chunk`` indices per call: the one chunked scan
    (statistics, validation, splits, packing, the cache, key checks and throughput all use it)."""
    for part in chunks(indices, chunk):
        yield read_many(part)


class Reader(ABC):
    """Random access to the structures of one file.

    Subclasses implement ``_open`` (return the handle), ``__len__``, ``natoms_array``
    and ``read``. ``read_many`` defaults to a loop over ``read``; readers that can serve
    a batch of indices at once override it.
    """

    #: short name used by ``MolecularDataset(format=...)``
    format_name: str = ""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        properties: PropertiesLike = None,
    ) -> None:
        self.path = str(path)
        #: the path as shown in messages and reprs (readers of URLs replace the password by ***)
        self.display_path = self.path
        self.keys = LabelKeys(energy=energy_key, forces=forces_key, stress=stress_key)
        #: the further properties to read into ``Structure.extras`` (``properties=``; readers that take it)
        self._properties = parse_properties(properties)
        #: label/property -> keys the values were read from (``labels.inspect_labels``)
        self.used_keys: dict[str, set] = {}
        self._handle = None
        self._handle_pid: Optional[int] = None
        #: unit conversions applied while reading, e.g. {"energy": "Hartree -> eV (x27.211...)"}
        self.units: dict[str, str] = {}
        #: file-level metadata (JSON-able), e.g. ``{"teacher": {...}}`` from an ASE db's metadata
        self.metadata: dict = {}
        #: declarations of every key this reader's structures may carry (``Structure.extras``)
        self.key_registry: KeyRegistry = DEFAULT_KEYS
        #: what was indexed (device, inode, size, mtime of the file): every process that opens the
        #: file again checks it is still that file (readers of several files set their own)
        self.file_identity = identities([self.path])

    # -- file handle, one per process ------------------------------------------------
    @property
    def handle(self):
        """The open file handle of this process (opened on first use, reopened after fork)."""
        pid = os.getpid()
        if self._handle is None or self._handle_pid != pid:
            # a worker or a reopen must not apply this index to another file
            check_unchanged(getattr(self, "file_identity", ()))
            self._handle = self._open()
            self._handle_pid = pid
        return self._handle

    def _open(self):  # pragma: no cover - readers without a persistent handle
        return None

    def close(self) -> None:
        h, self._handle = self._handle, None
        if h is not None and hasattr(h, "close") and self._handle_pid == os.getpid():
            try:
                h.close()
            except Exception:
                pass

    def __del__(self) -> None:
        # close this process's handle when the reader goes away (no ResourceWarning)
        if getattr(self, "_handle", None) is not None:
            self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_handle_pid"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # -- the interface ------------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int:
        """Number of structures."""

    @abstractmethod
    def natoms_array(self) -> np.ndarray:
        """[S] int64 atom count of every structure, without reading the structures' arrays."""

    @abstractmethod
    def read(self, index: int) -> Structure:
        """Raw arrays of structure ``index`` (0 <= index < len)."""

    def read_many(self, indices: Sequence[int]) -> list[Structure]:
        """Raw arrays of several structures, in the order given."""
        return [self.read(int(i)) for i in indices]

    def read_batch(self, indices: Sequence[int], *, checked: bool = False) -> "StructureBatch":
        """Structures ``indices`` as one ``StructureBatch`` (columns of concatenated arrays).

        The default concatenates ``read_many``; readers that can gather a batch at once (packed)
        override it. ``checked``: ``indices`` are already known to be in range."""
        from ..structure_batch import StructureBatch

        if checked:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        else:
            idx = check_indices(indices, len(self), self.display_path)
        return StructureBatch.from_structures(self.read_many(idx.tolist()), idx, self.key_registry, self.display_path)

    def label_keys(self, index: int) -> list[str]:
        """Names of the label-like keys structure ``index`` carries (used in error messages)."""
        return []

    def _check_index(self, index: int) -> int:
        """``index`` normalised to ``[0, len)``; IndexError naming ``display_path`` otherwise."""
        return check_index(index, len(self), self.display_path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_path!r})"


#: structures checked first for an explicitly configured label key (then the rest is scanned)
KEY_CHECK_STRUCTURES = 20


def check_configured_keys(reader: Reader, first: int = KEY_CHECK_STRUCTURES) -> None:
    """KeyError when a label key set explicitly (``energy_key='dft_energy'``...) is in no structure,
    rather than silently treating the file as unlabeled. The message lists the label-like keys the
    file does have.

    The first ``first`` structures settle the common case at once; a key not among them (stress
    only on the periodic frames at the end of a file, say) is looked for in the rest, in chunks,
    before the error is raised.
    """
    explicit = [label for label in STRUCTURE_LABELS if not reader.keys.is_default(label)]
    total = len(reader)
    if not explicit or total == 0:
        return
    missing = set(explicit)
    head = min(first, total)
    chunks = scan(reader.read_many, range(head, total))
    structures = reader.read_many(range(head))
    while True:
        for s in structures:
            missing -= {label for label in missing if getattr(s, label) is not None}
        structures = next(chunks, None) if missing else None
        if structures is None:
            break
    if missing:
        what = ", ".join(f"{label}_key={reader.keys.key(label)!r}" for label in explicit if label in missing)
        found = sorted(set().union(*(reader.label_keys(i) for i in range(min(total, 3)))))
        raise KeyError(f"{reader.display_path}: {what} not found in any of its {total} structures; keys found: {found}")


def read_metadata_attr(h5file, path: str, name: str = "metadata") -> dict:
    """The JSON attribute ``name`` of an open HDF5 file (what writers store as file metadata), or {}.

    A value that is not a JSON object is a ``DataFormatError`` naming the file and the attribute."""
    import json

    if name not in h5file.attrs:
        return {}
    raw = h5file.attrs[name]
    try:
        value = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise format_error(path, None, name, f"attribute is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise format_error(path, None, name, f"attribute must be a JSON object, got {type(value).__name__}")
    return value
