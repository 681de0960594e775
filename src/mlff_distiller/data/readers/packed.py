"""Reader of the packed format (see ``mlff_distiller.data.packed.layout`` for the layout).

The file is memory-mapped lazily, once per process, so DataLoader workers share the OS page
cache instead of each holding a copy; atom counts come from ``offsets`` without touching any
per-atom array, and ``read_batch`` serves a whole batch of indices with one gather per array.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ..keys import registry_of
from ..packed.layout import read_header
from ..properties import check_stored_properties
from ..packed.opener import open_packed
from ..packed.store import PackedStore
from ..structure import Structure
from ..structure_batch import StructureBatch
from .base import Reader


class PackedReader(Reader):
    """Random and batched access to a packed file.

    Labels were resolved when the file was packed (their names are fixed: energy, forces,
    stress, and every declared extra key: energies, hvp, provenance...), so ``energy_key``/
    ``forces_key``/``stress_key`` are accepted for interface compatibility and select nothing.
    ``units`` are the conversions recorded at packing time, ``metadata`` the file's metadata
    (e.g. ``{"teacher": {...}}``), ``key_registry`` the built-in keys plus those the file declares.
    """

    format_name = "packed"

    def __init__(self, path: str | os.PathLike, *, properties=None, extra_keys=None, **label_keys: str) -> None:
        super().__init__(path, **label_keys)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                header = read_header(f, self.path)
        except OSError as exc:
            raise ValueError(f"{self.path}: not an HDF5 file ({exc})") from exc
        self._len = header["num_structures"]
        self.num_atoms = header["num_atoms"]
        self.units = header["units"]
        #: neighbor-list cutoff (Å) of the stored edges, or None when the file stores none
        self.cutoff: Optional[float] = header["cutoff"]
        self.source = header["source"]
        self.metadata = header["metadata"]
        self.key_registry = registry_of(extra_keys).extend(
            k for k in header["keys"].values() if self.key_registry.get(k.name) != k
        )
        check_stored_properties(self.path, properties, header["keys"])  # read when the file was packed
        self._natoms: Optional[np.ndarray] = None

    def _open(self) -> PackedStore:
        return open_packed(self.path)

    @property
    def store(self) -> PackedStore:
        """The memory-mapped arrays of this process."""
        return self.handle

    def __len__(self) -> int:
        return self._len

    def natoms_array(self) -> np.ndarray:
        if self._natoms is None:
            self._natoms = np.array(self.store.natoms_array(), dtype=np.int64)
        return self._natoms

    def read(self, index: int) -> Structure:
        return self.store.read(int(index))

    def read_many(self, indices: Sequence[int]) -> list[Structure]:
        return self.store.read_many(np.asarray(indices, dtype=np.int64))

    def read_batch(self, indices: Sequence[int], *, checked: bool = False) -> StructureBatch:
        """Structures ``indices`` as one ``StructureBatch`` (concatenated arrays, file dtypes);
        ``checked``: ``indices`` is a [B] int64 array already known to be in range."""
        return self.store.read_batch(indices, checked=checked)

    def label_keys(self, index: int) -> list[str]:
        return self.store.label_keys(int(index))
