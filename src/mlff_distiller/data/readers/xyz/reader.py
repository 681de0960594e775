"""Extended XYZ (and plain XYZ) files: one index pass, then random access by byte offset.

Construction makes one pass over the file (``xyz_index``) and keeps small int64 arrays: the
byte range, first line and atom count of every frame. ``read(i)`` reads only frame ``i``'s
bytes (``os.pread``), so the file is never held in memory and readers in several processes
share nothing but the path.

Values are exactly ``ase.io.read(path, index=i, format='extxyz')``'s, float64 bit for bit:
the comment line goes through ASE's own parser (``xyz_comment``) and the atom columns through
``float``/``int`` token by token (``xyz_frame``), as ``ase.io.extxyz`` does. Labels are looked
up under ``keys.candidates(label)``: energy and stress in the comment line (``info``), forces
in the per-atom columns. The key ``stress`` is taken as ASE's calculator stores it (the Voigt
6-vector of the 3x3 matrix's upper triangle); other 9-value stress or virial keys follow
extxyz's column-major (Fortran) order, like ``Lattice``.

Files ASE refuses or misreads, read here (documented behaviour):

- ``stress=``/``virial=`` with 6 (Voigt) values: ASE raises; read as Voigt.
- Plain XYZ: a comment line that is one real number (not a bare integer, which is more
  often a frame counter) is the energy in eV; atom lines with 7 columns and no
  ``Properties=`` are ``species x y z fx fy fz`` (ASE drops the force columns silently).
- Blank lines and lines starting with ``#`` between frames are skipped (ASE raises on a
  ``#`` line and stops reading at the first blank line).
- ``energy-unit=``/``force-unit=`` comment keys (dpdata): values are converted to eV and
  eV/Å (stress and virial with the energy unit; ``xyz_units``) and the conversion is
  recorded in ``self.units``; an unknown unit is a ``DataFormatError`` at construction.
- Atom lines whose column count differs from ``Properties`` are an error (ASE ignores
  extra columns silently).
- A stress whose values are all NaN (metatrain writes ``stress="nan nan ..."`` for
  non-periodic frames) means "no stress": that frame's stress is ``None``. Any other
  NaN/inf in a label is a ``DataFormatError``.

A label absent from a frame is ``None`` in its ``Structure`` (not an error).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from itertools import chain
from typing import Any, Optional

import numpy as np

from ...errors import DataFormatError, format_error
from ...keys import ATOM, STRUCTURE, STRUCTURE_EXTRAS, STRUCTURE_LABELS, registry_of
from ...labels import finalize_labels, find_extras, is_virial_key
from ...properties import PropertiesLike, PropertySource, declare_properties, read_properties
from ...units import LabelUnits, UnitError
from ...structure import Structure
from ..base import Reader
from ..checks import check_structure
from ..files import check_regular_file
from .comment import SPECIAL_3_3_KEYS, is_numeric, parse_comment, split_comment, stress_value
from .frame import Frame, column_layout, parse_frame
from .index import index_frames
from .units import UNIT_KEYS, convert_units, energy_factor, force_factor, frame_factor, scan_units


class XyzReader(Reader):
    """Random access to the frames of an extended or plain XYZ file.

    ``read(i)`` returns positions [N, 3] Å, numbers [N] int64, cell [3, 3] Å (zeros when the
    frame has no ``Lattice``), pbc [3], energy [] eV, forces [N, 3] eV/Å and stress [3, 3]
    eV/Å³ (``None`` for labels the frame lacks). ``read_atoms(i)`` gives ASE's own Atoms.
    """

    format_name = "xyz"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        properties: PropertiesLike = None,
        extra_keys=None,
        energy_unit: Optional[str] = None,
        forces_unit: Optional[str] = None,
        stress_unit: Optional[str] = None,
        length_unit: Optional[str] = None,
    ) -> None:
        super().__init__(path, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key, properties=properties)
        check_regular_file(self.path, "an extended XYZ file")
        self._unit_options = LabelUnits.from_options(energy_unit, forces_unit, stress_unit, length_unit)
        self._index = index_frames(self.path)
        #: comment-line keys that ``read`` needs
        self._wanted_keys = frozenset(
            ("Lattice", "pbc", "Properties", *SPECIAL_3_3_KEYS, *chain.from_iterable(UNIT_KEYS.values()))
            + tuple(chain.from_iterable(self.keys.candidates(label) for label in STRUCTURE_LABELS))
            + STRUCTURE_EXTRAS
            + tuple(chain.from_iterable(p.candidates for p in self._properties))
        )
        self.key_registry = registry_of(extra_keys)
        if len(self):
            self.units = scan_units(self.path, self._index.start)
            self.units.update(self._unit_options.describe())
            self.key_registry = declare_properties(
                self._properties, self.key_registry, lambda i: self._sources(self._frame(i, all_keys=True)),
                lambda i: int(self._index.natoms[i]), len(self), path=self.path,
            )
            self.read(0)  # a file whose first frame cannot be read fails here, not at the first batch

    # -- Reader interface -------------------------------------------------------------------
    def _open(self):
        return open(self.path, "rb", buffering=0)

    def __len__(self) -> int:
        return len(self._index.natoms)

    def natoms_array(self) -> np.ndarray:
        """[S] int64 atom count of every frame (from the index pass)."""
        return self._index.natoms

    def read(self, index: int) -> Structure:
        frame = self._frame(index)
        i = frame.index
        frame.check_numeric_columns()
        positions = frame.column("positions") if frame.has_column("positions") else None
        if positions is None or positions.shape != (frame.natoms, 3):
            raise format_error(self.path, i, "pos", "frame needs a pos column of 3 reals")
        if not np.all(np.isfinite(positions)):
            raise format_error(self.path, i, "pos", "positions contain NaN or inf")
        cell, pbc = frame.cell_pbc()
        options = self._unit_options
        if options.length is not None and options.length.factor != 1.0:
            positions, cell = positions * options.length.factor, cell * options.length.factor
        found = {label: self._find_label(frame, label) for label in STRUCTURE_LABELS}
        if _all_nan(found["stress"][1]):  # metatrain writes stress="nan ..." for molecules
            found["stress"] = (found["stress"][0], None)
        keys = {label: key for label, (key, _v) in found.items()}
        energy, forces, stress = finalize_labels(
            energy=found["energy"][1],
            forces=found["forces"][1],
            stress=found["stress"][1],
            keys=keys,
            natoms=frame.natoms,
            cell=cell,
            path=self.path,
            index=i,
        )
        if options.given:
            energy, forces, stress = self._convert_with_options(frame, energy, forces, stress, keys["stress"])
        else:
            energy, forces, stress = convert_units(self.path, i, frame.info, energy, forces, stress)
        for label, value in (("energy", energy), ("forces", forces), ("stress", stress)):
            if value is not None:
                self.used_keys.setdefault(label, set()).add(keys[label])
        extras = self._extras(frame)
        if self._properties:
            extras.update(read_properties(
                self._properties, self._sources(frame), self.key_registry, natoms=frame.natoms, path=self.path,
                index=i, units=options, used=self.used_keys,
            ))
        structure = Structure(
            positions=positions,
            numbers=frame.numbers(),
            cell=cell,
            pbc=pbc,
            energy=energy,
            forces=forces,
            stress=stress,
            extras=extras,
        )
        return check_structure(structure, path=self.path, index=i, names=_FIELD_NAMES)

    def _convert_with_options(self, frame: Frame, energy, forces, stress, stress_key: str):
        """Labels in eV, eV/Å, eV/Å³ when unit options are given: an option overrides the frame's
        ``energy-unit``/``force-unit``; a label no option covers keeps the frame's declaration."""
        i, out = frame.index, []
        for label, value in (("energy", energy), ("forces", forces), ("stress", stress)):
            if value is None:
                out.append(None)
                continue
            try:
                factor = self._unit_options.factor(label, virial=is_virial_key(stress_key),
                                                   where=f"{self.path}, structure {i}")
            except UnitError as exc:
                raise DataFormatError(str(exc)) from None
            if factor is None:
                factor = frame_factor(self.path, i, frame.info, label)
            out.append(value if factor == 1.0 else value * factor)
        return tuple(out)

    def _sources(self, frame: Frame) -> list[PropertySource]:
        """Where a frame keeps property values: per-atom columns, then the comment line."""
        skip = ("symbols", "numbers", "positions")
        columns = _Columns(frame, [s[0] for s in frame.layout if s[0] not in skip])
        return [
            PropertySource(columns, ATOM, "a per-atom column", read=lambda values, key: values[key]),
            PropertySource(frame.info, STRUCTURE, "the comment line"),
        ]

    def _extras(self, frame: Frame) -> dict:
        """The frame's extras declared in ``data.keys`` (``energies``/``hvp`` columns, provenance in
        the comment line), checked by their declarations; a per-atom ``(K, 3)`` key is 3K columns."""
        found = {}
        for name in STRUCTURE_EXTRAS:
            key = self.key_registry[name]
            if key.kind == ATOM and frame.has_column(name):
                column = frame.column(name)
                found[name] = column.reshape((frame.natoms, -1, 3)) if key.shape == ("K", 3) else column
            elif name in frame.info:
                found[name] = frame.info[name]
        return find_extras([found], STRUCTURE_EXTRAS, self.key_registry, natoms=frame.natoms, path=self.path,
                           index=frame.index)

    def label_keys(self, index: int) -> list[str]:
        """Comment keys with numeric values and per-atom columns other than species/Z/pos."""
        frame = self._frame(index, all_keys=True)
        keys = [k for k, v in frame.info.items() if k not in ("Lattice", "pbc") and is_numeric(v)]
        keys += [s[0] for s in frame.layout if s[0] not in ("symbols", "numbers", "positions")]
        return list(dict.fromkeys(keys))

    def read_atoms(self, index: int):
        """Frame ``index`` as ASE's extxyz parser builds it (labels in the file's own units).

        The repairs of this module apply (Voigt stress, plain-XYZ energy and force columns),
        so ASE sees the frame as this reader does; unit keys are kept in ``info``, not applied.
        """
        from ase.io.extxyz import read_xyz

        frame = self._frame(index, all_keys=True)
        info = dict(frame.info, Properties=frame.properties)
        comment = frame.comment if frame.vec_lines else "_"  # ASE ignores the parser for VEC frames
        text = "\n".join([str(frame.natoms), comment, *frame.atom_lines, *frame.vec_lines]) + "\n"
        return next(iter(read_xyz(io.StringIO(text), 0, properties_parser=lambda _line: dict(info))))

    # -- helpers -------------------------------------------------------------------------------
    def _read_bytes(self, start: int, size: int) -> bytes:
        handle = self.handle
        if hasattr(os, "pread"):
            return os.pread(handle.fileno(), size, start)
        handle.seek(start)
        return handle.read(size)

    def _frame(self, index: int, all_keys: bool = False) -> Frame:
        i = self._check_index(index)
        ix = self._index
        start, stop = int(ix.start[i]), int(ix.stop[i])
        return parse_frame(
            self._read_bytes(start, stop - start),
            path=self.path,
            index=i,
            natoms=int(ix.natoms[i]),
            nvec=int(ix.nvec[i]),
            line=int(ix.line[i]),
            only=None if all_keys else self._wanted_keys,
        )

    def _find_label(self, frame: Frame, label: str) -> tuple[str, Any]:
        """(key, raw value) of ``label`` in the frame, or (configured key, None)."""
        for key in self.keys.candidates(label):
            in_info, in_columns = key in frame.info, frame.has_column(key)
            if label == "forces" and in_columns:
                return key, frame.column(key)
            if in_info and isinstance(frame.info[key], (bool, np.bool_)):
                if not _has_value(frame.comment, key):
                    continue  # a bare word 'energy' in a free-text comment is no label
                raise format_error(
                    self.path, frame.index, key,
                    f"{label} must be a number, got the logical value {frame.info[key]!r} "
                    f"(from {key}=T/F in the comment line)",
                )
            if in_info:
                value = frame.info[key]
                return key, stress_value(key, value) if label == "stress" else value
            if in_columns:
                return key, frame.column(key)
        return self.keys.key(label), None


class _Columns(Mapping):
    """A frame's per-atom columns by name, converted (with ASE's dtypes) on access."""

    def __init__(self, frame: Frame, names: list[str]) -> None:
        self._frame, self._names = frame, names

    def __getitem__(self, name: str):
        if name not in self._names:
            raise KeyError(name)
        return self._frame.typed_column(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _has_value(comment: str, key: str) -> bool:
    """Whether ``key`` is written ``key=...`` in the comment line (not a bare word)."""
    return re.search(rf"(?:^|\s){re.escape(key)}\s*=", comment) is not None


#: Structure fields -> the names an extended XYZ file gives them (for messages)
_FIELD_NAMES = {"positions": "pos", "numbers": "species", "cell": "Lattice"}


def _all_nan(value: Any) -> bool:
    """True for a float array whose every value is NaN (a stress written as "not defined")."""
    arr = np.asarray(value) if value is not None else None
    return arr is not None and arr.dtype.kind == "f" and arr.size > 0 and bool(np.all(np.isnan(arr)))


__all__ = [
    "XyzReader",
    "index_frames",
    "column_layout",
    "parse_comment",
    "split_comment",
    "energy_factor",
    "force_factor",
]
