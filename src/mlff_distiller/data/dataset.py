"""``MolecularDataset`` and ``MolecularSubset``: raw structures from a reader -> torch samples.

A sample is a dict of tensors (see ``samples.py``): ``positions`` [N, 3] Å, ``species`` [N] int64,
``cell`` [3, 3] Å, ``pbc`` [3] bool, ``natoms`` [] int64, ``idx`` [] int64, and the labels and extras
the structure carries: ``energy`` [] eV, ``forces`` [N, 3] eV/Å, ``stress`` [3, 3] eV/Å³, ``energies``
[N] eV, ``hvp``/``hvp_directions`` [N, K, 3], provenance strings and numbers; plus ``atoms`` (an
``ase.Atoms`` whose calculator returns the same labels) when ``return_atoms=True``.
No format-specific code lives here: every format is a ``Reader``.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .indices import check_index, check_indices
from .keys import Key, KeyRegistry
from .packed.store import PackedStore
from .packed.writer import build_store
from .readers import check_format_matches, guess_or_ase, normalize_format, open_reader
from .readers.ase_db.connection import mask_password
from .readers.base import Reader, check_configured_keys, scan
from .readers.multi import is_many, open_many
from .samples import SampleList, SampleSpec, make_sample
from .atoms import full_atoms
from .labels import inspect_labels, used_keys
from .stats import compute_statistics
from .structure import Structure

PathLike = Union[str, os.PathLike]

_INT64 = np.dtype(np.int64)


def _is_url(path: str) -> bool:
    return "://" in path


class MolecularDataset(Dataset):
    """Labeled structures from an ASE database, extended XYZ, HDF5 or packed file as torch samples.

    Args:
        data_path: file (or database URL) to read.
        format: 'ase', 'xyz', 'hdf5' or 'packed' (``None``/'auto': guess from the suffix, an
            ASE database when the suffix says nothing).
        cache: keep every structure's arrays in memory after one read of the file.
        transform: callable applied to each sample dict (e.g. ``Compose([...])``).
        return_atoms: put an ``ase.Atoms`` (labels in its calculator) in ``dataset[i]``.
        dtype: float dtype of positions, cell and labels (``torch.float64`` is bit-exact).
        energy_key, forces_key, stress_key: where the labels are stored in the file.
        extra_keys: declarations (``keys.Key``) of keys beyond the built-in ones that samples
            carry (from the file, or added by a transform); they travel with the dataset into
            DataLoader workers. ``dataset.key_registry`` holds every declaration.
        properties: extra properties to read (``data.properties``): names (``["charges",
            "dipole", "total_charge", "spin"]``) or a dict name -> key in the file.
        reader_options: ``energy_unit``/``forces_unit``/``stress_unit``/``length_unit`` (every
            format), ``select=`` (ASE db query), ``layout=``/``nan_as_missing=`` (HDF5)...; an
            option the format does not take is a TypeError listing those it does.

    ``dataset.label_keys`` says which key each label and property was read from, ``units`` the
    conversions applied; a file whose default keys find no label but that holds likely
    candidates (``dft_energy``...) gives a ``labels.LabelWarning`` naming them.
    """

    def __init__(
        self,
        data_path: PathLike,
        format: Optional[str] = None,
        cache: bool = False,
        transform: Optional[Callable[[dict], dict]] = None,
        return_atoms: bool = True,
        dtype: torch.dtype = torch.float32,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        extra_keys: Optional[Union[Sequence[Key], KeyRegistry]] = None,
        **reader_options,
    ) -> None:
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
        keys = dict(energy_key=energy_key, forces_key=forces_key, stress_key=stress_key)
        if reader_options.get("properties") is not None:  # undeclared properties need the declarations
            keys["extra_keys"] = extra_keys
        if is_many(data_path):  # a list of files or a glob: one dataset with global indices
            many = isinstance(data_path, (list, tuple))
            #: the file(s) read, database passwords replaced by *** (loggers record this attribute)
            self.data_path = [mask_password(p) for p in data_path] if many else mask_password(data_path)
            self.reader: Reader = open_many(data_path, format, **keys, **reader_options)
            self.format = getattr(self.reader, "format_name", None) or format
        else:
            path = os.fspath(data_path)
            if not _is_url(path) and not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no such file")
            fmt = normalize_format(format) if format not in (None, "auto") else guess_or_ase(path)
            if not _is_url(path):
                check_format_matches(path, fmt)
            self.data_path = mask_password(path)
            self.format = fmt
            self.reader = open_reader(path, fmt, **keys, **reader_options)
        self.transform = transform
        self.return_atoms = return_atoms
        self.dtype = dtype
        #: declarations of every key the samples may carry (the reader's plus ``extra_keys``)
        self.key_registry: KeyRegistry = self.reader.key_registry.extend(extra_keys)
        self.reader.key_registry = self.key_registry
        self._len = len(self.reader)
        check_configured_keys(self.reader)
        #: what the label keys found in the first structures (``labels.inspect_labels``; warns)
        self.label_report = inspect_labels(self.reader)
        #: ``cache=True``: every structure in RAM as packed arrays (one pass over the file)
        self._cache: Optional[PackedStore] = None
        if cache:
            self._cache = build_store(self.reader)

    # -- raw access ---------------------------------------------------------------------
    @property
    def cache(self) -> bool:
        return self._cache is not None

    @property
    def label_keys(self) -> dict:
        """label/property -> the key in the file it is read from (``{'energy': 'REF_energy'}``)."""
        return {**self.label_report.keys, **used_keys(self.reader)}

    @property
    def units(self) -> dict:
        """Units found in the file and the conversion applied to each quantity (empty for plain eV/Å files)."""
        return dict(self.reader.units)

    @property
    def metadata(self) -> dict:
        """The file's metadata (e.g. ``{"teacher": {...}}`` written by ``write_structures(metadata=...)``)."""
        return dict(self.reader.metadata)

    @property
    def spec(self) -> SampleSpec:
        """What turns this dataset's structures into samples (dtype, transform, keys)."""
        spec = self.__dict__.get("_spec")
        if spec is None or spec.dtype is not self.dtype or spec.transform is not self.transform \
                or spec.keys is not self.key_registry:
            spec = self._spec = SampleSpec(self.dtype, self.transform, self.key_registry)
        return spec

    def natoms_array(self) -> np.ndarray:
        """[S] int64 atom count of every structure, read without loading the structures."""
        return self.reader.natoms_array()

    def _normalize_index(self, index) -> int:
        return check_index(index, self._len, self.reader.display_path)

    @property
    def _source(self):
        """Where structures are read from: the in-memory packed cache, else the reader."""
        return self._cache if self._cache is not None else self.reader

    def get_structure(self, index: int) -> Structure:
        """Raw numpy arrays of structure ``index`` (units eV/Å, the file's float dtype)."""
        return self._source.read(self._normalize_index(index))

    def get_structures(self, indices: Sequence[int]) -> list[Structure]:
        return self._source.read_many([self._normalize_index(i) for i in indices])

    def _scan(self, indices: Iterable[int]) -> Iterator[Structure]:
        """Every structure of ``indices`` in order, read in chunks."""
        for chunk in scan(self._source.read_many, indices):
            yield from chunk

    # -- samples --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._len

    def to_sample(self, structure: Structure, index: int, with_atoms: bool) -> dict:
        """The sample dict of ``structure`` (fresh tensors: transforms may change them freely);
        ``atoms`` keeps what the file holds (``data.atoms.full_atoms``)."""
        atoms = full_atoms(structure, self.reader, index, self.key_registry) if with_atoms else None
        return make_sample(structure, index, self.spec, with_atoms=with_atoms, atoms=atoms)

    def __getitem__(self, index) -> dict:
        i = self._normalize_index(index)
        return self.to_sample(self.get_structure(i), i, self.return_atoms)

    def _normalize_indices(self, indices: Sequence[int]) -> np.ndarray:
        """[B] int64 indices in range (negative ones wrapped), vectorised."""
        return check_indices(indices, self._len, self.reader.display_path)

    def __getitems__(self, indices: Sequence[int]) -> SampleList:
        """The samples of a batch of indices (torch's DataLoader calls this for batched fetching).

        The structures are read as one ``StructureBatch`` (a single gather from a packed file or
        the cache) and returned as a lazy ``SampleList``: the loader's collate function batches it
        (with or without ``atoms``, transformed or not, as the loader asks), any other collate
        function indexes it and gets the usual sample dicts (without ``atoms``).
        """
        idx = check_indices(indices, self._len, self.reader.display_path)
        return SampleList(self._source.read_batch(idx, checked=True), self.spec)

    def get_atoms(self, index: int):
        """``ase.Atoms`` of structure ``index``: its calculator returns the dataset's labels (eV,
        eV/Å) and it keeps the file's info, arrays, constraints and calculator results
        (``data.atoms.full_atoms``)."""
        i = self._normalize_index(index)
        return full_atoms(self.get_structure(i), self.reader, i, self.key_registry)

    def get_statistics(self, indices: Optional[Sequence[int]] = None, **options) -> dict:
        """Statistics of the raw labels (before transforms), see ``stats.compute_statistics``
        (``options``: ``reference_energies='fit' | 'isolated' | {Z: E0}``, ``exclude_isolated``,
        ``isolated_config_types``, ``progress``)."""
        idx = range(self._len) if indices is None else [self._normalize_index(i) for i in indices]
        options.setdefault("total", len(idx))
        options.setdefault("progress", "auto")  # a bar for long scans in a terminal
        stats = compute_statistics(self._scan(idx), **options)
        stats["units"] = self.units
        stats["label_keys"] = self.label_keys
        return stats

    def __repr__(self) -> str:
        return f"MolecularDataset({self.reader.display_path!r}, format={self.format!r}, n={self._len})"


class MolecularSubset(Dataset):
    """A view of ``dataset`` restricted to ``indices`` (positions in the parent dataset)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = check_indices(indices, len(dataset), "subset of a dataset").tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def _parent_index(self, index) -> int:
        return self.indices[check_index(index, len(self.indices), "subset")]

    def __getitem__(self, index) -> dict:
        return self.dataset[self._parent_index(index)]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        parent = [self._parent_index(i) for i in indices]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(parent)
        return [self.dataset[i] for i in parent]

    def natoms_array(self) -> np.ndarray:
        return np.asarray(self.dataset.natoms_array())[np.asarray(self.indices, dtype=np.int64)]

    def get_atoms(self, index: int):
        return self.dataset.get_atoms(self._parent_index(index))

    def get_statistics(self, indices: Optional[Sequence[int]] = None, **options) -> dict:
        """Statistics over the subset's structures (or over ``indices`` of the subset)."""
        own = self.indices if indices is None else [self._parent_index(i) for i in indices]
        return self.dataset.get_statistics(own, **options)

    def __getattr__(self, name: str):
        # transform, dtype, return_atoms, key_registry, metadata... come from the parent dataset
        if name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"MolecularSubset({self.dataset!r}, n={len(self.indices)})"
