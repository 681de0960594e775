"""Groups of conformers sharing one molecule: the engine behind the ANI, SPICE and modelforge layouts.

Each *conformer group* holds ``positions`` [C, N, 3], the species ([N], [N, 1] or per conformer
[C, N]) and label arrays whose first axis is the conformer ([C], [C, 1], [C, N, 3]). Groups may
sit at any depth (the original ANI-1 files nest them two levels down); they are visited in
natural name order. Structure ``i`` is row ``i - start[g]`` of group ``g``.

No group is skipped silently: a group holding any dataset (species, an energy, ...) but no
positions dataset is a DataFormatError naming the file and the group; only groups that hold no
dataset at all (empty ones, or ones holding only other groups, which are searched) contribute
no structures.

A layout supplies a ``Convention``: the dataset names it uses and the units its documentation
gives; a unit attribute on a dataset (``units``/``unit``/``u``) takes precedence. A key whose
name contains ``gradient`` holds dE/dR and becomes forces = -gradient.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Iterator, Optional

import h5py
import numpy as np
from h5py import h5g

from ....keys import ATOM, STRUCTURE
from ....properties import PropertySource
from ....structure import Structure
from ....units import Conversion
from ._h5 import DatasetReader, as_text, natural_sorted
from .base import H5Files, Layout, LayoutContext, apply, molecule_cell, to_numbers, unit_attr


@dataclass(frozen=True)
class Convention:
    """Dataset names and documented units of one conformer-group layout."""

    positions: tuple[str, ...]
    species: tuple[str, ...]
    energy: tuple[str, ...]
    forces: tuple[str, ...]
    length_unit: str
    energy_unit: str
    forces_unit: str
    gradient_unit: Optional[str] = None
    #: where the units above come from, shown in ``reader.units``
    source: str = "layout convention"
    #: documented units of property datasets without a unit attribute: (name pattern, unit)
    property_units: tuple[tuple[str, str], ...] = ()


@dataclass
class _Group:
    """One conformer group: where its arrays are and how to convert them."""

    path: str
    start: int
    count: int
    natoms: int
    positions: str
    species: str
    species_per_conformer: bool
    energy: Optional[str]
    forces: Optional[str]
    pos_conv: Conversion
    energy_conv: Optional[Conversion]
    forces_conv: Optional[Conversion]


def is_gradient_key(name: str) -> bool:
    return "gradient" in name.lower()


class ConformerGroupLayout(Layout):
    """Base class; subclasses set ``name``, ``convention`` and ``detect``."""

    convention: ClassVar[Convention]
    converts_units = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        conv = cls.__dict__.get("convention")
        if conv is not None:
            cls.signature = f"groups holding conformer {conv.positions[0]!r} [C, N, 3] and {conv.species[0]!r}"

    def __init__(self, files: H5Files, ctx: LayoutContext) -> None:
        super().__init__(files, ctx)
        f = files[0]
        groups: list[_Group] = []
        seen_keys: set[str] = set()
        energy_found = forces_found = False
        start = 0
        for path in self._conformer_groups(f):
            grp = f[path]
            names = set(grp.keys())
            seen_keys.update(names)
            g = self._describe(grp, path, names, start)
            energy_found |= g.energy is not None
            forces_found |= g.forces is not None
            groups.append(g)
            start += g.count
        for label, found in (("energy", energy_found), ("forces", forces_found)):
            if not found and not ctx.keys.is_default(label):
                raise self.missing_key(label, seen_keys)
        if not ctx.keys.is_default("stress"):
            raise self.missing_key("stress", seen_keys)
        self._groups = groups
        self._starts = np.array([g.start for g in groups], dtype=np.int64)
        self.natoms = (
            np.concatenate([np.full(g.count, g.natoms, dtype=np.int64) for g in groups])
            if groups
            else np.zeros(0, dtype=np.int64)
        )

    # -- index ----------------------------------------------------------------------------
    def _conformer_groups(self, f: h5py.File) -> Iterator[str]:
        """Paths of the groups holding a positions dataset, depth first, natural order.

        Raises DataFormatError for a group that holds datasets but no positions dataset (its
        data would otherwise be dropped); groups without datasets are searched for subgroups.
        """
        positions = self.convention.positions

        def walk(grp: h5py.Group, prefix: str) -> Iterator[str]:
            names = natural_sorted(grp.keys())
            if any(n in positions and grp.get(n, getclass=True) is h5py.Dataset for n in names):
                yield prefix or "/"
                return
            kinds = {n: grp.get(n, getclass=True) for n in names}
            datasets = [n for n in names if kinds[n] is h5py.Dataset]
            if datasets:
                shown = datasets[:12] + (["..."] if len(datasets) > 12 else [])
                raise self.ctx.error(
                    None,
                    prefix or "/",
                    f"group holds datasets {shown} but no {positions[0]!r} dataset; in the {self.name} layout every "
                    f"group with data holds the conformer {positions[0]} [C, N, 3], so this group cannot be read "
                    "(remove it or fix the file)",
                )
            for n in names:
                if kinds[n] is h5py.Group:
                    yield from walk(grp[n], f"{prefix}/{n}" if prefix else n)

        yield from walk(f, "")

    def _pick(self, names: set[str], candidates) -> Optional[str]:
        for c in candidates:
            if c in names:
                return c
        return None

    def _forces_candidates(self, energy_key: Optional[str]) -> tuple[str, ...]:
        """Default forces names, preferring the forces of the same level of theory as the energy
        ('wb97x_dz.energy' -> 'wb97x_dz.forces')."""
        if not self.ctx.keys.is_default("forces"):
            return (self.ctx.keys.key("forces"),)
        out = list(self.convention.forces)
        if energy_key and "." in energy_key:
            out.insert(0, energy_key.rsplit(".", 1)[0] + ".forces")
        return tuple(out)

    def _describe(self, grp: h5py.Group, path: str, names: set[str], start: int) -> _Group:
        conv, ctx = self.convention, self.ctx
        pos_key = self._pick(names, conv.positions)
        pos = grp[pos_key]
        where = f"{path}/{pos_key}"
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise ctx.error(start, where, f"conformer positions must have shape (C, N, 3), got {pos.shape}")
        count, natoms = int(pos.shape[0]), int(pos.shape[1])

        species_key = self._pick(names, conv.species)
        if species_key is None:
            raise ctx.error(start, f"{path}/{conv.species[0]}", f"missing species dataset (looked for {list(conv.species)})")
        sshape = grp[species_key].shape
        if sshape in ((natoms,), (natoms, 1)):
            per_conf = False
        elif sshape[:2] == (count, natoms) and len(sshape) in (2, 3) and sshape[2:] in ((), (1,)):
            per_conf = True
        else:
            raise ctx.error(
                start, f"{path}/{species_key}", f"species shape {sshape} fits neither ({natoms},) nor ({count}, {natoms})"
            )

        energy_key = self._pick(names, self.candidates("energy", conv.energy))
        if energy_key is not None:
            eshape = grp[energy_key].shape
            if len(eshape) < 1 or eshape[0] != count or int(np.prod(eshape[1:])) != 1:
                raise ctx.error(start, f"{path}/{energy_key}", f"energy shape {eshape} does not match {count} conformers")
        forces_key = self._pick(names, self._forces_candidates(energy_key))
        if forces_key is not None:
            fshape = grp[forces_key].shape
            if fshape != (count, natoms, 3):
                raise ctx.error(start, f"{path}/{forces_key}", f"forces shape {fshape}, expected ({count}, {natoms}, 3)")

        pos_conv = self.unit_conversion(
            unit_attr(pos), "positions", where=where, default=conv.length_unit, convention=conv.source, index=start
        )
        energy_conv = forces_conv = None
        if energy_key is not None:
            energy_conv = self.unit_conversion(
                unit_attr(grp[energy_key]),
                "energy",
                where=f"{path}/{energy_key}",
                default=conv.energy_unit,
                convention=conv.source,
                index=start,
            )
        if forces_key is not None:
            gradient = is_gradient_key(forces_key)
            forces_conv = self.unit_conversion(
                unit_attr(grp[forces_key]),
                "gradient" if gradient else "forces",
                where=f"{path}/{forces_key}",
                default=(conv.gradient_unit or conv.forces_unit) if gradient else conv.forces_unit,
                convention=conv.source,
                sign=-1.0 if gradient else 1.0,
                index=start,
            )
        return _Group(
            path=path,
            start=start,
            count=count,
            natoms=natoms,
            positions=pos_key,
            species=species_key,
            species_per_conformer=per_conf,
            energy=energy_key,
            forces=forces_key,
            pos_conv=pos_conv,
            energy_conv=energy_conv,
            forces_conv=forces_conv,
        )

    # -- reading ----------------------------------------------------------------------------
    def _locate(self, index: int) -> tuple[int, int]:
        g = int(np.searchsorted(self._starts, index, side="right")) - 1
        return g, index - int(self._starts[g])

    def _open(self, files: H5Files, g: int) -> dict:
        """Per-process open datasets of group ``g`` (and its shared species), LRU-cached."""

        def make() -> dict:
            grp = self._groups[g]
            gid = h5g.open(files[0].id, grp.path.encode())
            entry = {"positions": DatasetReader.open(gid, grp.positions)}
            for key in (grp.energy, grp.forces):
                if key is not None:
                    entry[key] = DatasetReader.open(gid, key)
            species = DatasetReader.open(gid, grp.species)
            if grp.species_per_conformer:
                entry["species"] = species
            else:
                values = species.all()
                entry["numbers"] = to_numbers(
                    np.asarray(values).reshape(-1), ctx=self.ctx, index=grp.start, key=f"{grp.path}/{grp.species}"
                )
            return entry

        return files.lru("conformer_groups").get_or(g, make)

    def read(self, files: H5Files, index: int) -> Structure:
        g, row = self._locate(index)
        grp = self._groups[g]
        entry = self._open(files, g)
        where = grp.path
        if grp.species_per_conformer:
            numbers = to_numbers(
                np.asarray(entry["species"].row(row)).reshape(-1), ctx=self.ctx, index=index, key=f"{where}/{grp.species}"
            )
        else:
            numbers = entry["numbers"]
        positions = apply(grp.pos_conv, entry["positions"].row(row))
        energy = forces = None
        keys = {"positions": f"{where}/{grp.positions}", "numbers": f"{where}/{grp.species}"}
        if grp.energy is not None:
            energy = apply(grp.energy_conv, entry[grp.energy].row(row))
            keys["energy"] = f"{where}/{grp.energy}"
        if grp.forces is not None:
            forces = apply(grp.forces_conv, entry[grp.forces].row(row))
            keys["forces"] = f"{where}/{grp.forces}"
        cell, pbc = molecule_cell()
        return self.finish(
            index, positions=positions, numbers=numbers.copy(), cell=cell, pbc=pbc, energy=energy, forces=forces, keys=keys
        )

    def label_keys(self, files: H5Files, index: int) -> list[str]:
        g, _ = self._locate(index)
        grp = self._groups[g]
        return sorted(n for n in files[0][grp.path].keys() if n not in (grp.positions, grp.species))

    def label_key_of(self, index: int, label: str) -> str:
        """The dataset structure ``index``'s ``label`` is read from."""
        grp = self._groups[self._locate(index)[0]]
        return {"energy": grp.energy, "forces": grp.forces}.get(label) or label

    # -- properties (``properties.py``) -----------------------------------------------------
    def _property_index(self, files: H5Files, g: int) -> dict:
        """Per-process: the group's dataset names by kind (modelforge's ``format`` attribute says
        per_atom / per_system; other datasets' kind comes from the key declarations), their units
        and open readers (created on first use)."""

        def make() -> dict:
            grp = self._groups[g]
            h5grp = files[0][grp.path]
            skip = {grp.positions, grp.species}
            kinds: dict = {ATOM: [], STRUCTURE: [], None: []}
            units = {}
            for name in natural_sorted(h5grp.keys()):
                if name in skip or h5grp.get(name, getclass=True) is not h5py.Dataset:
                    continue
                ds = h5grp[name]
                fmt = as_text(ds.attrs["format"]) if "format" in ds.attrs else None
                kinds[{"per_atom": ATOM, "per_system": STRUCTURE, "meta_data": STRUCTURE}.get(fmt)].append(name)
                unit = unit_attr(ds)
                if unit is None:
                    unit = next((u for pattern, u in self.convention.property_units if re.search(pattern, name)), None)
                if unit is not None and unit != "dimensionless":
                    units[name] = unit
            return {"gid": h5g.open(files[0].id, grp.path.encode()), "kinds": kinds, "units": units, "readers": {},
                    "derived": self.derived_properties(files, g)}

        return files.lru("conformer_properties").get_or(g, make)

    def derived_properties(self, files: H5Files, g: int) -> dict:
        """Per-structure values a layout derives for group ``g`` (SPICE: total charge from SMILES)."""
        return {}

    def property_sources(self, files: H5Files, index: int) -> list[PropertySource]:
        g, row = self._locate(index)
        grp = self._groups[g]
        info = self._property_index(files, g)
        where = f"group {grp.path!r}"

        def unit(key: str):
            return info["units"].get(key)

        sources = [
            PropertySource(_GroupRow(info, names, row, grp.count), kind, f"{where} ({label})", unit)
            for kind, names, label in ((ATOM, info["kinds"][ATOM], "per_atom"),
                                       (STRUCTURE, info["kinds"][STRUCTURE], "per_system"),
                                       (None, info["kinds"][None], "an HDF5 dataset"))
            if names
        ]
        if info["derived"]:
            sources.append(PropertySource(info["derived"], STRUCTURE, f"{where} (derived)"))
        return sources


class _GroupRow(Mapping):
    """Datasets ``names`` of one conformer group as conformer ``row``'s values: a dataset whose
    first axis is the conformer axis gives its row, any other (SMILES, a modelforge meta_data
    entry) the whole dataset, which describes every conformer of the group."""

    def __init__(self, info: dict, names: list[str], row: int, count: int) -> None:
        self._info, self._names, self._row, self._count = info, names, row, count

    def __getitem__(self, name: str):
        if name not in self._names:
            raise KeyError(name)
        readers = self._info["readers"]
        reader = readers.get(name)
        if reader is None:
            reader = readers[name] = DatasetReader.open(self._info["gid"], name)
        shape = reader.shape
        if shape and shape[0] == self._count and not reader.is_string:
            return reader.row(self._row)
        return reader.all()

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
