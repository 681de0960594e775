"""``format='hdf5'``: recognise the layout of an HDF5 file and read it through that layout.

Layouts (see ``hdf5_layouts``): the guide's ``structures/<i>/...``, our packed format (handed to
``PackedReader``), ANI-1/1x/2x, SPICE, modelforge, schnetpack MD logs, DeePMD and MACE's
preprocessed shards. ``layout=`` forces one. Values come back in ASE units (eV, Å, eV/Å,
eV/Å³; forces = -gradient where a file stores gradients); every conversion applied is
described in ``reader.units``.

    reader = Hdf5Reader("SPICE.hdf5")
    reader.layout_name   # 'spice'
    reader.units         # {'positions': 'conformations: bohr -> Å (x0.529...) [attribute]', ...}
    s = reader.read(0)   # Structure: positions [N, 3] Å, energy [] eV, forces [N, 3] eV/Å

A MACE split may be given as one shard, a directory of shards or a glob
(``'processed/train/*.h5'``); the reader then spans all of them.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, TypeVar

import h5py
import numpy as np

from ...errors import DataFormatError, format_error
from ...keys import STRUCTURE_LABELS, registry_of
from ...properties import PropertiesLike, declare_properties, read_properties
from ...structure import Structure
from ...units import UNIT_OPTIONS, LabelUnits
from ..base import Reader, read_metadata_attr
from ..files import identities
from .layouts import (
    PACKED,
    H5Files,
    LayoutContext,
    detect_layout,
    layout_class,
    normalize_layout,
    supported_layouts,
)
from .layouts._h5 import LinkPolicy, RefusedInput, check_datasets, list_tree
from .layouts.paths import resolve_paths


T = TypeVar("T")
#: what h5py and numpy raise on a corrupt file: a byte-flipped object header, a soft-link loop,
#: an impossible type or shape
_CORRUPT = (KeyError, RuntimeError, ValueError, TypeError, AttributeError, OSError, MemoryError, IndexError)


class Hdf5Reader(Reader):
    """Random access to the structures of an HDF5 file in any supported layout.

    Args:
        path: an HDF5 file; for MACE shards also a directory or a glob pattern.
        layout: force a layout ('guide', 'ani', 'ani1', 'spice', 'modelforge', 'schnetpack_md',
            'deepmd', 'mace', 'packed'); None: detect it from the file.
        energy_key, forces_key, stress_key: dataset names of the labels. Left at their defaults,
            each layout tries its conventional names (``energies``, ``dft_total_energy``,
            ``wb97x_dz.energy``...); set explicitly (``energy_key='ccsd(t)_cbs.energy'``) the key
            must exist in the file (KeyError listing the keys otherwise).
        nan_as_missing: treat a label that is entirely NaN as absent (ANI-1ccx marks conformers
            without a CCSD(T) energy that way) instead of raising DataFormatError.
        allow_external_links: follow external links and read datasets stored in other files
            (external raw storage, virtual datasets). Off by default: a file from a stranger
            must not make the reader open other files of this machine (DataFormatError naming
            the link instead).
        properties: extra properties to read (``properties.py``; SPICE/ANI/modelforge charges,
            dipoles, SPICE's total charge...), extra_keys: declarations of undeclared ones.
        energy_unit, forces_unit, stress_unit, length_unit: the unit of the stored values, overriding
            the file's unit attributes and the layout's convention (``units.LabelUnits``).
        **options: layout options (``type_map`` for DeePMD); anything else is a TypeError listing
            the layout's options.
    """

    format_name = "hdf5"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        layout: Optional[str] = None,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        nan_as_missing: bool = False,
        allow_external_links: bool = False,
        properties: PropertiesLike = None,
        extra_keys=None,
        **options,
    ) -> None:
        super().__init__(path, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key, properties=properties)
        unit_options = {k: options[k] for k in UNIT_OPTIONS if k in options}
        label_units = LabelUnits.pop_from(options)
        self._layout = None
        self._delegate: Optional[Reader] = None
        self.allow_external_links = bool(allow_external_links)
        self.paths = resolve_paths(self.path)
        self.file_identity = identities(self.paths)  # every shard, checked again by each process
        for p in self.paths:
            if not h5py.is_hdf5(p):
                raise DataFormatError(f"{p}: not an HDF5 file (no HDF5 signature)")
        name = normalize_layout(layout) if layout is not None else self._detect(self.paths[0])
        if name == PACKED or not layout_class(name).checks_links:
            try:
                self._guard(None, self._check_whole_files)
            finally:
                self.close()  # the handle of this check; reads open their own
        self.layout_name = name
        self._layout = None
        self._delegate: Optional[Reader] = None
        if name == PACKED:
            if len(self.paths) > 1:
                raise DataFormatError(f"{self.path}: a packed dataset is one file, got {len(self.paths)} files")
            if nan_as_missing:
                raise TypeError("nan_as_missing does not apply to packed files (their labels were validated when packed)")
            from ..packed import PackedReader

            if label_units.given:
                raise TypeError(f"{self.path}: a packed file stores eV/Å (converted when it was packed); "
                                f"unit options {sorted(unit_options)} do not apply to it")
            self._delegate = PackedReader(
                self.paths[0], energy_key=energy_key, forces_key=forces_key, stress_key=stress_key,
                properties=properties, extra_keys=extra_keys, **options
            )
            self.units = self._delegate.units
            self.metadata = self._delegate.metadata
            self.key_registry = self._delegate.key_registry
            return
        cls = layout_class(name)
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            common = ("layout", "energy_key", "forces_key", "stress_key", "nan_as_missing", "allow_external_links",
                      "properties", "extra_keys", *UNIT_OPTIONS)
            accepted = ", ".join(sorted(set(common) | set(cls.options)))
            raise TypeError(f"HDF5 layout {name!r} does not take option(s) {unknown}; its options: {accepted}")
        options.update({k: v for k, v in unit_options.items() if k in cls.options})  # the layout's own
        if len(self.paths) > 1 and not cls.multi_file:
            raise DataFormatError(
                f"{self.path}: {len(self.paths)} files matched, but the {name!r} layout reads one file "
                "(only MACE shards span several files)"
            )
        registry = registry_of(extra_keys)
        ctx = LayoutContext(paths=tuple(self.paths), keys=self.keys, nan_as_missing=bool(nan_as_missing),
                            properties=self._properties, registry=registry, unit_options=label_units)
        try:
            self._layout = self._guard(None, lambda: cls(self.handle, ctx, **options))
        except BaseException:
            self.close()
            raise
        self.units = self._layout.units
        if not cls.converts_units:
            self.units.update(label_units.describe())
        self._natoms = np.ascontiguousarray(self._layout.natoms, dtype=np.int64)
        self.metadata = read_metadata_attr(self.handle[0], self.paths[0])
        self._label_units = label_units
        if self._properties:
            self.key_registry = self._guard(None, lambda: declare_properties(
                self._properties, registry, lambda i: self._layout.property_sources(self.handle, i),
                lambda i: int(self._natoms[i]), len(self), path=self.display_path, units=self.units,
            ))
        else:
            self.key_registry = registry

    def _detect(self, path: str) -> str:
        try:
            with h5py.File(path, "r") as f:
                policy = LinkPolicy(self.allow_external_links)
                name = self._guard(None, lambda: (policy.members(f.id, ""), detect_layout(f, policy))[1], path)
                if name is None:
                    found = list_tree(f, limit=20)
                    raise DataFormatError(
                        f"{path}: unknown HDF5 layout. Found: {found or '(empty file)'}. "
                        f"Supported layouts: {', '.join(supported_layouts())} (pass layout=... to force one)"
                    )
                return name
        except OSError as exc:
            raise DataFormatError(f"{path}: cannot be opened as HDF5: {exc}") from None

    def _open(self) -> H5Files:
        return H5Files(self.paths, allow_external_links=self.allow_external_links)

    def _check_whole_files(self) -> None:
        """Every link and dataset of every file, once (layouts reading through h5py's high-level API)."""
        files = self.handle
        for k in range(len(files)):
            files.policy.scan(files[k].id)
            check_datasets(files[k], self.allow_external_links)

    def _guard(self, index: Optional[int], call: Callable[[], T], path: Optional[str] = None) -> T:
        """``call()``, with what h5py and numpy raise on a corrupt file (a flipped byte, a soft-link
        loop, a forged header) turned into a DataFormatError naming the file and ``index``;
        errors that already name the file (a missing key, an index out of range) pass unchanged."""
        try:
            return call()
        except DataFormatError:
            raise
        except RefusedInput as exc:
            raise format_error(path or self.display_path, index, exc.where, exc.problem) from None
        except _CORRUPT as exc:
            text = str(exc)
            if any(p in text for p in (path or self.display_path, *self.paths)):
                raise
            problem = f"cannot read this HDF5 file ({type(exc).__name__}: {' '.join(text.split()) or 'no message'})"
            raise format_error(path or self.display_path, index, None, problem) from None

    # -- the Reader interface -----------------------------------------------------------------
    def __len__(self) -> int:
        if self._delegate is not None:
            return len(self._delegate)
        return int(self._natoms.shape[0])

    def natoms_array(self) -> np.ndarray:
        if self._delegate is not None:
            return self._delegate.natoms_array()
        return self._natoms

    def read(self, index: int) -> Structure:
        if self._delegate is not None:
            return self._delegate.read(index)
        i = self._check_index(index)
        return self._finish(self._guard(i, lambda: self._layout.read(self.handle, i)), i)

    def read_many(self, indices: Sequence[int]) -> list[Structure]:
        if self._delegate is not None:
            return self._delegate.read_many(indices)
        idx = [self._check_index(i) for i in indices]
        try:
            structures = self._layout.read_many(self.handle, idx)
        except DataFormatError:
            raise
        except (RefusedInput, *_CORRUPT):
            return [self.read(i) for i in idx]  # the error again, naming the structure
        return [self._finish(s, i) for s, i in zip(structures, idx)]

    def _finish(self, structure: Structure, index: int) -> Structure:
        """Record the label keys used and add the requested properties."""
        keys = getattr(self._layout, "label_key_of", None)
        for label in STRUCTURE_LABELS:
            if getattr(structure, label) is not None:
                self.used_keys.setdefault(label, set()).add(keys(index, label) if keys else label)
        if self._properties:
            extras = self._guard(index, lambda: read_properties(
                self._properties, self._layout.property_sources(self.handle, index), self.key_registry,
                natoms=structure.natoms, path=self.display_path, index=index, units=self._label_units,
                used=self.used_keys, nan_as_missing=self._layout.ctx.nan_as_missing,
            ))
            structure.extras.update(extras)
        return structure

    def label_keys(self, index: int) -> list[str]:
        if self._delegate is not None:
            return self._delegate.label_keys(index)
        i = self._check_index(index)
        return self._guard(i, lambda: self._layout.label_keys(self.handle, i))

    def __getattr__(self, name: str):
        """A packed file's extra capabilities (``read_batch``, ``cutoff``, ``store``...) come
        from the PackedReader it was handed to; other layouts have none."""
        delegate = self.__dict__.get("_delegate")
        if delegate is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(delegate, name)

    def close(self) -> None:
        delegate = self.__dict__.get("_delegate")  # None too when the constructor failed early
        if delegate is not None:
            delegate.close()
        super().close()

    def __repr__(self) -> str:
        layout = self.__dict__.get("layout_name")
        return f"Hdf5Reader({self.__dict__.get('path')!r}, layout={layout!r})"
