"""SchNetPack's MD simulation log (the HDF5 its ``FileLogger`` writes, schnetpack 1.x).

``molecules`` [entries, replicas, molecules, max_atoms, 6]: positions (columns 0-2) and
velocities (3-5) of every replica of every molecule, with attributes ``n_replicas``,
``n_molecules``, ``n_atoms`` [molecules], ``atom_types`` [..., molecules, max_atoms] and
``entries`` (rows written). ``properties`` [entries, replicas, molecules, width] packs the
calculator's outputs into one row; the JSON attributes ``positions`` (name -> [start, stop])
and ``shapes`` (name -> shape, e.g. forces [max_atoms, 3]) unpack it (parsed with ``json``).

Each (entry, replica, molecule) is one structure, entry-major.

Units, as schnetpack 1.x documents them: positions are in the MD's internal atomic units
(bohr; ``HDF5Loader.get_positions`` "in atomic units", and ``time_step`` is in atomic time
units). The properties are logged as the calculator returned them, multiplied by its
``property_conversion`` (default 1), so their units are those of the model that ran the
simulation and are *not recorded in the file*: pass ``energy_unit=`` and ``forces_unit=``
(e.g. 'kcal/mol', 'kcal/mol/Angstrom'); without them a file with energy/forces is refused
rather than read in a guessed unit. ``length_unit=`` overrides bohr for files whose MD used
another internal unit.

The newer schnetpack 2 log (``molecules`` [entries, replicas, flat] with ``total_n_atoms``,
``has_velocities``, ``has_cells``) is recognised and refused with a clear message.
"""

from __future__ import annotations

import json
from typing import Optional

import h5py
import numpy as np

from ....structure import Structure
from ....units import Conversion
from .base import H5Files, Layout, LayoutContext, apply, molecule_cell, to_numbers

V1_ATTRS = ("n_replicas", "n_molecules", "n_atoms", "atom_types", "entries")


class SchnetpackMdLayout(Layout):
    name = "schnetpack_md"
    options = ("energy_unit", "forces_unit", "length_unit")
    converts_units = True
    signature = "a 'molecules' dataset [entries, replicas, molecules, atoms, 6] (schnetpack MD log)"

    @classmethod
    def detect(cls, f: h5py.File) -> bool:
        return f.get("molecules", getclass=True) is h5py.Dataset and "n_atoms" in f["molecules"].attrs

    @classmethod
    def accepts(cls, f: h5py.File) -> bool:
        """Any 'molecules' dataset: the constructor explains what is wrong with it (schnetpack 2...)."""
        return f.get("molecules", getclass=True) is h5py.Dataset

    def __init__(
        self,
        files: H5Files,
        ctx: LayoutContext,
        energy_unit: Optional[str] = None,
        forces_unit: Optional[str] = None,
        length_unit: Optional[str] = None,
    ) -> None:
        super().__init__(files, ctx)
        f = files[0]
        mol = f["molecules"]
        attrs = mol.attrs
        if "total_n_atoms" in attrs or mol.ndim != 5:
            raise ctx.error(
                None,
                "molecules",
                "schnetpack 2 MD logs (flat 'molecules' rows with total_n_atoms) are not supported; "
                "only the schnetpack 1.x layout [entries, replicas, molecules, atoms, 6] is",
            )
        missing = [a for a in V1_ATTRS if a not in attrs]
        if missing:
            raise ctx.error(None, "molecules", f"missing attributes {missing}")
        self._replicas = int(attrs["n_replicas"])
        self._molecules = int(attrs["n_molecules"])
        n_atoms = np.asarray(attrs["n_atoms"]).astype(np.int64).reshape(-1)
        entries = int(attrs["entries"])
        if mol.shape[0] < entries or mol.shape[1] != self._replicas or mol.shape[2] != self._molecules:
            raise ctx.error(None, "molecules", f"shape {mol.shape} does not match the attributes {dict(attrs)}")
        types = np.asarray(attrs["atom_types"])
        types = types.reshape(-1, self._molecules, types.shape[-1])[0]
        self._numbers = [
            to_numbers(types[m, : n_atoms[m]], ctx=ctx, index=m, key="molecules.attrs['atom_types']")
            for m in range(self._molecules)
        ]
        self.natoms = np.tile(n_atoms, self._replicas * entries).astype(np.int64)  # entry-major

        self._slices: dict[str, tuple[int, int, list[int]]] = {}
        if "properties" in f:
            props = f["properties"]
            try:
                positions = json.loads(props.attrs["positions"])
                shapes = json.loads(props.attrs["shapes"])
            except (KeyError, ValueError) as exc:
                raise ctx.error(None, "properties", f"cannot parse the JSON 'positions'/'shapes' attributes: {exc}") from None
            if props.shape[0] < entries:
                raise ctx.error(None, "properties", f"{props.shape[0]} rows for {entries} entries")
            for name, (a, b) in positions.items():
                self._slices[name] = (int(a), int(b), [int(s) for s in shapes[name]])
        self._keys = {
            "energy": next((k for k in self.candidates("energy", ("energy",)) if k in self._slices), None),
            "forces": next((k for k in self.candidates("forces", ("forces",)) if k in self._slices), None),
        }
        for label, key in self._keys.items():
            if key is None and not ctx.keys.is_default(label):
                raise self.missing_key(label, self._slices)
        if not ctx.keys.is_default("stress"):
            raise self.missing_key("stress", self._slices)

        self._length = self.unit_conversion(
            length_unit,
            "positions",
            where="molecules",
            default="bohr",
            convention="schnetpack 1.x MD internal units",
            given_by="length_unit=",
        )
        self._energy: Optional[Conversion] = None
        self._forces: Optional[Conversion] = None
        needed = [
            (label, opt)
            for label, opt, given in (("energy", "energy_unit", energy_unit), ("forces", "forces_unit", forces_unit))
            if self._keys[label] is not None and given is None
        ]
        if needed:
            raise ctx.error(
                None,
                "properties",
                "a schnetpack MD log stores the calculator's energy/forces in the model's own units, which the file "
                f"does not record; pass {', '.join(f'{opt}=...' for _, opt in needed)} "
                "(e.g. energy_unit='kcal/mol', forces_unit='kcal/mol/Angstrom')",
            )
        if self._keys["energy"] is not None:
            self._energy = self.unit_conversion(
                energy_unit, "energy", where=f"properties/{self._keys['energy']}", default=None,
                convention="", given_by="energy_unit=",
            )
        if self._keys["forces"] is not None:
            self._forces = self.unit_conversion(
                forces_unit, "forces", where=f"properties/{self._keys['forces']}", default=None,
                convention="", given_by="forces_unit=",
            )

    def _split(self, index: int) -> tuple[int, int, int]:
        entry, rest = divmod(index, self._replicas * self._molecules)
        replica, molecule = divmod(rest, self._molecules)
        return entry, replica, molecule

    def read(self, files: H5Files, index: int) -> Structure:
        f = files[0]
        e, r, m = self._split(index)
        n = int(self.natoms[index])
        state = f["molecules"][e, r, m, :n, :]
        positions = apply(self._length, state[:, :3])
        labels, keys = {}, {"positions": "molecules", "numbers": "molecules.attrs['atom_types']"}
        if any(self._keys.values()):
            row = f["properties"][e, r, m, :]
            for label, key in self._keys.items():
                if key is None:
                    continue
                a, b, shape = self._slices[key]
                value = row[a:b].reshape(shape)
                if label == "forces":
                    value = value[:n]
                labels[label] = apply(self._energy if label == "energy" else self._forces, value)
                keys[label] = f"properties[{key}]"
        cell, pbc = molecule_cell()
        return self.finish(
            index, positions=positions, numbers=self._numbers[m].copy(), cell=cell, pbc=pbc, keys=keys, **labels
        )

    def label_keys(self, files: H5Files, index: int) -> list[str]:
        return sorted(self._slices)
