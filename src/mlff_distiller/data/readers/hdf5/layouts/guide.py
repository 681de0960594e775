"""The guide's layout: ``structures/<i>/{positions, species, cell, pbc, energy, forces[, stress]}``.

Written by the DATA_LOADING_GUIDE snippet (``group.create_dataset('positions', data=atoms.positions)``
...). Values are in ASE units (Å, eV, eV/Å, stress eV/Å³ as 3x3, 9 or Voigt 6; a ``virial`` key
holds W in eV and becomes -W/V) and come back bit for bit with the file's dtype. Groups are
ordered by the integer value of their names ('10' after '9'); a group without ``energy`` or
``forces`` is simply unlabeled for that label.

Reading one structure costs one group open, one link listing and one low-level open + read
per dataset (~150 µs), several times faster than ``f['structures'][str(i)][key][()]``.
"""

from __future__ import annotations

from typing import Optional

import h5py
import numpy as np
from h5py import h5d, h5g, h5s, h5t

from ....keys import DEFAULT_KEYS, STRUCTURE_EXTRAS, STRUCTURE_LABELS
from ....labels import find_extras
from ....structure import Structure
from ._h5 import DatasetReader, RefusedInput, member_names, natural_sorted
from .base import H5Files, Layout, LayoutContext


def read_whole(gid: h5g.GroupID, name: str, files: H5Files) -> np.ndarray:
    """Dataset ``name`` of the open group ``gid``: the file's dtype, native byte order, bit for bit.

    The guide's files hold ~6 tiny datasets per structure, so per-dataset overhead is the cost
    of reading them: one open, one type query (compared with the type this key had last time,
    whose dtype and memory type are kept in ``files.cache``), one shape query and one read with
    a predefined memory type equal to the file's type (no conversion path to set up). Strings
    and empty dataspaces go through ``DatasetReader``.
    """
    ds = h5d.open(gid, name.encode())
    tid = ds.get_type()
    types = files.cache.get("guide_types")
    if types is None:
        types = files.cache["guide_types"] = {}
    entry = types.get(name)
    if entry is None or not entry[0] == tid:
        if tid.get_class() == h5t.STRING:
            return DatasetReader(ds, files.dtypes, name).all()
        dtype = tid.dtype
        try:
            mtype = h5t.py_create(dtype)
        except (TypeError, ValueError):
            mtype = tid
        if not mtype == tid:  # only an identical type may stand in for the file's
            mtype = tid
        entry = types[name] = (tid, dtype, mtype)
    shape = ds.shape
    files.policy.check_dataset(ds, name, shape)
    if shape is None:
        return DatasetReader(ds, files.dtypes, name).all()
    out = np.empty(shape, entry[1])
    if out.size:
        ds.read(h5s.ALL, h5s.ALL, out, mtype=entry[2])
    if not out.dtype.isnative:
        out = out.astype(out.dtype.newbyteorder("="))
    return out

ROOT = "structures"
#: names accepted for the atomic numbers (the guide writes 'species')
SPECIES_KEYS = ("species", "numbers", "atomic_numbers")
#: the datasets of a structure group that are not labels or properties
_GEOMETRY_KEYS = ("positions", "cell", "pbc", *SPECIES_KEYS)
#: structures inspected at construction for an explicitly configured label key
KEY_CHECK = 20


class GuideLayout(Layout):
    name = "guide"
    signature = "a 'structures' group with one group per structure (positions, species, ...)"
    checks_links = True

    @classmethod
    def detect(cls, f: h5py.File) -> bool:
        return f.get(ROOT, getclass=True) is h5py.Group

    def __init__(self, files: H5Files, ctx: LayoutContext) -> None:
        super().__init__(files, ctx)
        f = files[0]
        policy = files.policy
        policy.check_link(f.id, ROOT, ROOT)
        root = h5g.open(f.id, ROOT.encode())
        names = natural_sorted(policy.members(root, ROOT))
        self._names = [n.encode() for n in names]
        self._check_names(names)
        natoms = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            try:
                gid = h5g.open(root, name.encode())
            except (KeyError, TypeError, ValueError):
                raise ctx.error(i, f"{ROOT}/{name}", "expected a group per structure") from None
            if not gid.links.exists(b"positions"):
                raise ctx.error(i, f"{ROOT}/{name}/positions", "missing positions dataset")
            try:
                policy.check_link(gid, "positions", f"{ROOT}/{name}/positions")
                shape = DatasetReader.open(gid, "positions", where=f"{ROOT}/{name}/positions").shape
            except RefusedInput as exc:
                raise ctx.error(i, exc.where, exc.problem) from None
            if shape is None or len(shape) != 2 or shape[1] != 3:
                raise ctx.error(i, f"{ROOT}/{name}/positions", f"positions have shape {shape}, expected (N, 3)")
            natoms[i] = shape[0]
        self.natoms = natoms
        self._label_candidates = {
            label: self.candidates(label, ctx.keys.candidates(label)) for label in STRUCTURE_LABELS
        }
        self._check_configured_keys(root)

    def _check_names(self, names: list[str]) -> None:
        """Group names are structure numbers (digits only), each number once: ``01`` beside ``1``
        would be two structures where the writer meant one, and ``abc`` no structure at all."""
        seen: dict[int, str] = {}
        for i, name in enumerate(names):
            if not (name.isascii() and name.isdigit()):
                raise self.ctx.error(i, f"{ROOT}/{name}", "group name is not a structure number (0, 1, 2, ...)")
            number = int(name)
            if number in seen:
                raise self.ctx.error(
                    i, f"{ROOT}/{name}", f"groups {seen[number]!r} and {name!r} are both structure number {number}"
                )
            seen[number] = name

    def _check_configured_keys(self, root) -> None:
        explicit = [label for label in STRUCTURE_LABELS if not self.ctx.keys.is_default(label)]
        if not explicit or not self._names:
            return
        seen: set[str] = set()
        for name in self._names[:KEY_CHECK]:
            seen.update(member_names(h5g.open(root, name)))
        for label in explicit:
            if self.ctx.keys.key(label) not in seen:
                raise self.missing_key(label, seen)

    def label_keys(self, files: H5Files, index: int) -> list[str]:
        gid = h5g.open(self._root(files), self._names[index])
        return [n for n in member_names(gid) if n not in _GEOMETRY_KEYS]

    def _root(self, files: H5Files):
        root = files.cache.get("guide_root")
        if root is None:
            root = files.cache["guide_root"] = h5g.open(files[0].id, ROOT.encode())
        return root

    def _open_structure(self, files: H5Files, index: int):
        """Structure ``index``'s group: its path, the names it holds (links checked by the policy)
        and a function reading one of its datasets whose errors name the file, index and dataset."""
        gid = h5g.open(self._root(files), self._names[index])
        where = f"{ROOT}/{self._names[index].decode()}"
        present = set(files.policy.members(gid, where))

        def read(name: str) -> np.ndarray:
            try:
                return read_whole(gid, name, files)
            except RefusedInput as exc:
                raise self.ctx.error(index, f"{where}/{name}", exc.problem) from None
            except (KeyError, RuntimeError, ValueError, TypeError, OSError) as exc:  # h5py on a corrupt file
                raise self.ctx.error(index, f"{where}/{name}", f"cannot read ({type(exc).__name__}: {exc})") from None

        return where, present, read

    def read(self, files: H5Files, index: int) -> Structure:
        where, present, read = self._open_structure(files, index)

        def first(candidates) -> Optional[str]:
            for name in candidates:
                if name in present:
                    return name
            return None

        if "positions" not in present:
            raise self.ctx.error(index, f"{where}/positions", "missing positions dataset")
        species_key = first(SPECIES_KEYS)
        if species_key is None:
            raise self.ctx.error(index, f"{where}/species", "missing species dataset")
        keys = {"positions": f"{where}/positions", "numbers": f"{where}/{species_key}",
                "cell": f"{where}/cell", "pbc": f"{where}/pbc"}
        numbers = read(species_key)
        if numbers.dtype.kind not in "iu":
            raise self.ctx.error(index, keys["numbers"], f"species must be integer atomic numbers, got {numbers.dtype}")
        numbers = numbers.astype(np.int64, copy=False)
        labels = {}
        for label, candidates in self._label_candidates.items():
            key = first(candidates)
            if key is not None:
                keys[label] = f"{where}/{key}"
                labels[label] = read(key)
        structure = self.finish(
            index,
            positions=read("positions"),
            numbers=numbers,
            cell=read("cell") if "cell" in present else None,
            pbc=read("pbc") if "pbc" in present else None,
            keys=keys,
            **labels,
        )
        extras = {name: read(name) for name in STRUCTURE_EXTRAS if name in present}
        files.cache["guide_last"] = (index, present, read)  # what ``property_sources`` reads (per process)
        if extras:  # energies, hvp, provenance (``data.keys``), as the writer stores them
            structure.extras = find_extras([extras], STRUCTURE_EXTRAS, DEFAULT_KEYS, natoms=structure.natoms,
                                           path=self.ctx.display, index=index)
        return structure

    def property_sources(self, files: H5Files, index: int) -> list:
        """The structure's datasets other than positions/species/cell/pbc: their kind comes from
        the key declarations (the writer stores each declared key under its name)."""
        from ....properties import PropertySource

        last = files.cache.get("guide_last")
        if last is not None and last[0] == index:
            _, present, read = last
        else:
            _, present, read = self._open_structure(files, index)
        names = [n for n in present if n not in _GEOMETRY_KEYS]
        return [PropertySource(_Datasets(names, read), None, "an HDF5 dataset")]


class _Datasets(dict):
    """Datasets of one structure group, read on access."""

    def __init__(self, names, read) -> None:
        super().__init__()
        self._names, self._read = set(names), read

    def __contains__(self, name) -> bool:
        return name in self._names

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        return self._read(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
