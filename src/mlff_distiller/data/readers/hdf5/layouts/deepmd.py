"""DeePMD-kit HDF5 (dpdata's ``deepmd/hdf5``): the ``deepmd/npy`` directory tree stored in HDF5.

A *system* (the file root, or each group holding ``type.raw`` for a multi-system file) has
``type.raw`` [N] (type index per atom), ``type_map.raw`` [T] (element symbols) and sets
``set.000``, ``set.001``, ... with one row per frame: ``coord.npy`` [F, 3N], ``box.npy`` [F, 9],
``energy.npy`` [F] or [F, 1], ``force.npy`` [F, 3N], ``virial.npy`` [F, 9]; optional
``real_atom_types.npy`` [F, N] (mixed-type systems) and a ``nopbc`` marker.

DeePMD's units are ASE's: Å, eV, eV/Å; the virial W is in eV and becomes the stress
-W / V (eV/Å³). A system without ``type_map.raw`` needs ``type_map=['O', 'H', ...]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import h5py
import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z
from h5py import h5g

from ....keys import STRUCTURE_LABELS
from ....structure import Structure
from ._h5 import DatasetReader, as_text, natural_sorted
from .base import H5Files, Layout, LayoutContext, molecule_cell, to_numbers

SET_NAME = re.compile(r"set\.\d+$")
#: how deep below the root systems are looked for
SYSTEM_DEPTH = 8


@dataclass
class _Set:
    system: int
    path: str
    start: int
    count: int
    datasets: dict = field(default_factory=dict)  # label -> dataset name


@dataclass
class _System:
    path: str
    numbers: np.ndarray  # [N] int64
    type_map: Optional[np.ndarray]  # [T] int64 atomic numbers, for mixed-type sets
    nopbc: bool


class DeepmdLayout(Layout):
    name = "deepmd"
    options = ("type_map",)
    signature = "system groups (or a root) holding type.raw and set.* groups"

    @classmethod
    def detect(cls, f: h5py.File) -> bool:
        if _is_system(f):
            return True
        groups = [n for n in natural_sorted(f.keys()) if f.get(n, getclass=True) is h5py.Group]
        return any(_is_system(f[n]) for n in groups[:3])

    @classmethod
    def accepts(cls, f: h5py.File) -> bool:
        """A system anywhere the reader looks (up to 8 groups deep), not only near the root."""
        return next(_systems(f, depth=SYSTEM_DEPTH), None) is not None

    def __init__(self, files: H5Files, ctx: LayoutContext, type_map: Optional[Sequence[str]] = None) -> None:
        super().__init__(files, ctx)
        f = files[0]
        label_keys = {
            "energy": self._names("energy", ("energy.npy",)),
            "forces": self._names("forces", ("force.npy",)),
            "stress": self._names("stress", ("virial.npy",)),
        }
        self._systems: list[_System] = []
        self._sets: list[_Set] = []
        seen: set[str] = set()
        found = {label: False for label in label_keys}
        start = 0
        for path in _systems(f, depth=SYSTEM_DEPTH):
            grp = f[path] if path else f
            system = self._system(grp, path, len(self._systems), start, type_map)
            self._systems.append(system)
            natoms = system.numbers.shape[0]
            for set_name in natural_sorted(n for n in grp.keys() if SET_NAME.match(n)):
                sgrp = grp[set_name]
                names = set(sgrp.keys())
                seen.update(names)
                set_path = f"{path}/{set_name}" if path else set_name
                if "coord.npy" not in names:
                    raise ctx.error(start, f"{set_path}/coord.npy", "missing coordinates")
                cshape = sgrp["coord.npy"].shape
                if len(cshape) != 2 or cshape[1] != 3 * natoms:
                    raise ctx.error(start, f"{set_path}/coord.npy", f"shape {cshape}, expected (frames, {3 * natoms})")
                entry = _Set(system=len(self._systems) - 1, path=set_path, start=start, count=int(cshape[0]))
                for label, candidates in label_keys.items():
                    key = next((c for c in candidates if c in names), None)
                    if key is not None:
                        if sgrp[key].shape[0] != entry.count:
                            raise ctx.error(start, f"{set_path}/{key}", f"{sgrp[key].shape[0]} rows for {entry.count} frames")
                        entry.datasets[label] = key
                        found[label] = True
                for extra in ("box.npy", "real_atom_types.npy"):
                    if extra in names:
                        entry.datasets[extra] = extra
                self._sets.append(entry)
                start += entry.count
        for label, ok in found.items():
            if not ok and not ctx.keys.is_default(label):
                raise self.missing_key(label, seen)
        self._starts = np.array([s.start for s in self._sets], dtype=np.int64)
        self.natoms = (
            np.concatenate(
                [np.full(s.count, self._systems[s.system].numbers.shape[0], dtype=np.int64) for s in self._sets]
            )
            if self._sets
            else np.zeros(0, dtype=np.int64)
        )
        for quantity, text in (
            ("positions", "Å (DeePMD convention, no conversion)"),
            ("energy", "eV (DeePMD convention, no conversion)"),
            ("forces", "eV/Å (DeePMD convention, no conversion)"),
            ("stress", "virial.npy W in eV (DeePMD convention) -> stress = -W/V in eV/Å^3"),
        ):
            self.record_unit(quantity, text)

    def _names(self, label: str, defaults: tuple[str, ...]) -> tuple[str, ...]:
        if self.ctx.keys.is_default(label):
            return defaults
        key = self.ctx.keys.key(label)
        return (key, f"{key}.npy")

    def _system(self, grp: h5py.Group, path: str, k: int, start: int, type_map) -> _System:
        types = np.asarray(grp["type.raw"][()]).astype(np.int64).reshape(-1)
        if type_map is not None:
            symbols = [str(s) for s in type_map]
        elif "type_map.raw" in grp:
            symbols = [as_text(s).strip() for s in np.asarray(grp["type_map.raw"][()]).reshape(-1)]
        else:
            raise self.ctx.error(start, f"{path}/type_map.raw" if path else "type_map.raw",
                                 "no type map: pass type_map=['O', 'H', ...] (element of each type index)")
        unknown = [s for s in symbols if s not in SYMBOL_TO_Z]
        if unknown:
            raise self.ctx.error(start, "type_map.raw", f"unknown element symbols {unknown}")
        zmap = np.array([SYMBOL_TO_Z[s] for s in symbols], dtype=np.int64)
        if types.size and (types.min() < 0 or types.max() >= len(zmap)):
            raise self.ctx.error(start, "type.raw", f"type indices {types.min()}..{types.max()} outside the type map of {len(zmap)}")
        return _System(path=path, numbers=zmap[types], type_map=zmap, nopbc="nopbc" in grp)

    def _locate(self, index: int) -> tuple[_Set, int]:
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._sets[k], index - int(self._starts[k])

    def _open(self, files: H5Files, entry: _Set) -> dict:
        def make() -> dict:
            gid = h5g.open(files[0].id, entry.path.encode())
            out = {"coord.npy": DatasetReader.open(gid, "coord.npy")}
            for name in entry.datasets.values():
                out[name] = DatasetReader.open(gid, name)
            return out

        return files.lru("deepmd_sets").get_or(entry.path, make)

    def read(self, files: H5Files, index: int) -> Structure:
        entry, row = self._locate(index)
        system = self._systems[entry.system]
        ds = self._open(files, entry)
        n = system.numbers.shape[0]
        where = entry.path
        numbers = system.numbers.copy()
        if "real_atom_types.npy" in entry.datasets:
            types = np.asarray(ds["real_atom_types.npy"].row(row)).astype(np.int64).reshape(-1)
            numbers = to_numbers(system.type_map[types], ctx=self.ctx, index=index, key=f"{where}/real_atom_types.npy")
        positions = ds["coord.npy"].row(row).reshape(n, 3)
        cell, pbc = molecule_cell()
        if "box.npy" in entry.datasets and not system.nopbc:
            cell = ds["box.npy"].row(row).reshape(3, 3)
            pbc = np.ones(3, dtype=bool)
        keys = {"positions": f"{where}/coord.npy", "numbers": f"{system.path}/type.raw"}
        labels = {}
        for label, name in entry.datasets.items():
            if label in STRUCTURE_LABELS:
                value = ds[name].row(row)
                if label == "forces":
                    value = value.reshape(n, 3) if value.size == 3 * n else value
                labels[label] = value
                keys[label] = f"{where}/{name}"
        return self.finish(index, positions=positions, numbers=numbers, cell=cell, pbc=pbc, keys=keys, **labels)

    def label_keys(self, files: H5Files, index: int) -> list[str]:
        entry, _ = self._locate(index)
        return sorted(files[0][entry.path].keys())


def _is_system(grp: h5py.Group) -> bool:
    names = list(grp.keys())
    return "type.raw" in names and any(SET_NAME.match(n) for n in names)


def _systems(f: h5py.File, depth: int) -> Iterator[str]:
    """Paths of the groups ('' for the root) that hold ``type.raw`` and at least one ``set.*``."""

    def walk(grp: h5py.Group, prefix: str, level: int) -> Iterator[str]:
        if _is_system(grp):
            yield prefix
            return
        names = list(grp.keys())
        if level >= depth:
            return
        for n in natural_sorted(names):
            if grp.get(n, getclass=True) is h5py.Group and not SET_NAME.match(n):
                yield from walk(grp[n], f"{prefix}/{n}" if prefix else n, level + 1)

    yield from walk(f, "", 0)
