"""Extended XYZ (and plain XYZ) files: one index pass, then random access by byte offset.

Construction makes one pass over the file in binary (newlines found with numpy, a short
Python step per frame) and keeps small int64 arrays: the byte range, first line and atom
count of every frame. ``read(i)`` reads only frame ``i``'s bytes (``os.pread``), so the
file is never held in memory and readers in several processes share nothing but the path.

Values are exactly ``ase.io.read(path, index=i, format='extxyz')``'s, float64 bit for bit:
the comment line goes through ASE's own parser (``ase.io.extxyz.key_val_str_to_dict``; only
the ``key=value`` pairs a sample needs are handed to it when the line's syntax is plain) and
the atom columns through ``float``/``int`` token by token, as ``ase.io.extxyz`` does. Labels
are looked up under ``keys.candidates(label)``: energy and stress in the comment line
(``info``), forces in the per-atom columns. The key ``stress`` is taken as ASE's calculator
stores it (the Voigt 6-vector of the 3x3 matrix's upper triangle); other 9-value stress or
virial keys follow extxyz's column-major (Fortran) order, like ``Lattice``.

Files ASE refuses or misreads, read here (documented behaviour):

- ``stress=``/``virial=`` with 6 (Voigt) values: ASE raises; read as Voigt.
- Plain XYZ: a comment line that is one real number (not a bare integer, which is more
  often a frame counter) is the energy in eV; atom lines with 7 columns and no
  ``Properties=`` are ``species x y z fx fy fz`` (ASE drops the force columns silently).
- Blank lines and lines starting with ``#`` between frames are skipped (ASE raises on a
  ``#`` line and stops reading at the first blank line).
- ``energy-unit=``/``force-unit=`` comment keys (dpdata): values are converted to eV and
  eV/Å (stress and virial with the energy unit) and the conversion is recorded in
  ``self.units``; an unknown unit is a ``DataFormatError`` at construction.
- Atom lines whose column count differs from ``Properties`` are an error (ASE ignores
  extra columns silently).
- A stress whose values are all NaN (metatrain writes ``stress="nan nan ..."`` for
  non-periodic frames) means "no stress": that frame's stress is ``None``. Any other
  NaN/inf in a label is a ``DataFormatError``.

A label absent from a frame is ``None`` in its ``Structure`` (not an error).
"""

from __future__ import annotations

import functools
import io
import mmap
import os
import re
from dataclasses import dataclass
from itertools import chain
from typing import Any, Optional

import numpy as np
from ase import units
from ase.data import atomic_numbers
from ase.io.extxyz import REV_PROPERTY_NAME_MAP, key_val_str_to_dict

from ..errors import format_error
from ..labels import finalize_labels
from ..structure import Structure
from .base import Reader

# ----------------------------------------------------------------------------------------
# Units declared in the comment line (dpdata writes ``energy-unit=hartree``)
# ----------------------------------------------------------------------------------------

#: energy unit name (lower case) -> eV per unit
ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0,
    "mev": 1e-3,
    "hartree": units.Hartree,
    "ha": units.Hartree,
    "kcal/mol": units.kcal / units.mol,
    "kj/mol": units.kJ / units.mol,
    "ry": units.Rydberg,
    "rydberg": units.Rydberg,
}
#: length unit name (lower case) -> Å per unit
LENGTH_UNITS: dict[str, float] = {
    "angstrom": 1.0,
    "ang": 1.0,
    "a": 1.0,
    "å": 1.0,
    "bohr": units.Bohr,
    "nm": units.nm,
}
_UNIT_KEYS = {"energy": ("energy-unit", "energy_unit"), "forces": ("force-unit", "force_unit")}
_UNIT_PATTERN = re.compile(rb"""(?<![\w-])(energy|force)[-_]unit\s*=\s*("[^"\n]*"|'[^'\n]*'|[^\s"']+)""")


def energy_factor(unit: str) -> float:
    """eV per ``unit`` (e.g. ``'hartree'``); KeyError for an unknown unit."""
    return ENERGY_UNITS[unit.strip().lower()]


def force_factor(unit: str) -> float:
    """eV/Å per ``unit`` written ``<energy>/<length>`` (``'hartree/bohr'``, ``'kcal/mol/angstrom'``)."""
    name = unit.strip().lower().replace(" ", "")
    for energy in sorted(ENERGY_UNITS, key=len, reverse=True):
        if name.startswith(energy + "/") and name[len(energy) + 1 :] in LENGTH_UNITS:
            return ENERGY_UNITS[energy] / LENGTH_UNITS[name[len(energy) + 1 :]]
    raise KeyError(unit)


_FACTORS = {"energy": energy_factor, "forces": force_factor}
_SI_NAMES = {"energy": "eV", "forces": "eV/Å"}


# ----------------------------------------------------------------------------------------
# The index pass
# ----------------------------------------------------------------------------------------


class _Lines:
    """Newline positions of a byte buffer, found block by block with numpy.

    ``end(k)`` is the position of the newline that ends line ``k`` (0-based; the file's
    end for a last line without one), or -1 past the last line. Lines are asked for in
    (nearly) increasing order, so only one block of positions is held at a time.
    """

    def __init__(self, buf: np.ndarray, block: int = 1 << 24) -> None:
        self.buf, self.size, self.block = buf, len(buf), block
        self.nl = np.empty(0, dtype=np.int64)
        self.first = 0  # line number of self.nl[0]
        self.hi = 0  # bytes [0, hi) are scanned

    def end(self, k: int) -> int:
        """Position of the newline ending line ``k``, or -1 when the file has no line ``k``."""
        if k < self.first:
            raise RuntimeError(f"line {k} was already dropped from the scan window")
        while k - self.first >= len(self.nl):
            if self.hi >= self.size:
                return -1
            keep = min(max(0, k - 1 - self.first), len(self.nl))  # keep line k-1
            lo, hi = self.hi, min(self.size, self.hi + self.block)
            found = np.flatnonzero(self.buf[lo:hi] == 10).astype(np.int64) + lo
            if hi == self.size and self.buf[self.size - 1] != 10:
                found = np.append(found, np.int64(self.size))
            self.nl = np.concatenate([self.nl[keep:], found])
            self.first += keep
            self.hi = hi
        return int(self.nl[k - self.first])



@dataclass(frozen=True)
class _Index:
    start: np.ndarray  # [S] int64 byte offset of the atom-count line
    stop: np.ndarray  # [S] int64 byte offset just past the frame
    natoms: np.ndarray  # [S] int64
    line: np.ndarray  # [S] int64 1-based line number of the atom-count line
    nvec: np.ndarray  # [S] int8 number of ``VECn`` cell lines after the atoms


def index_frames(path: str, block: int = 1 << 24) -> _Index:
    """One pass over ``path``: byte range, atom count and first line of every frame.

    ``block``: bytes scanned for newlines at a time (memory use is a few times this).
    """
    cols: list[list[int]] = [[], [], [], [], []]
    if os.path.getsize(path) > 0:
        buf = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
        lines = _Lines(buf, block)
        k, begin = 0, 0  # current line and its first byte
        while (end := lines.end(k)) >= 0:
            raw = bytes(buf[begin:end]).strip()
            if not raw or raw.startswith(b"#"):  # blank or comment line between frames
                k, begin = k + 1, end + 1
                continue
            frame = len(cols[0])
            try:
                natoms = int(raw)
            except ValueError:
                raise format_error(
                    path, frame, None, f"line {k + 1}: expected the atom count of a frame, got {raw[:60]!r}"
                ) from None
            if natoms < 0:
                raise format_error(path, frame, None, f"line {k + 1}: negative atom count {natoms}")
            last = k + 1 + natoms  # comment line k+1, atom lines k+2 .. k+1+natoms
            last_end = lines.end(last)
            if last_end < 0:
                have = sum(1 for j in range(k + 2, last + 1) if lines.end(j) >= 0)
                raise format_error(
                    path, frame, None,
                    f"truncated frame: line {k + 1} declares {natoms} atoms but the file ends after {have} atom lines",
                )
            nvec = 0
            while (next_end := lines.end(last + 1)) >= 0 and bytes(buf[last_end + 1 : next_end]).lstrip().startswith(
                b"VEC"
            ):
                nvec, last, last_end = nvec + 1, last + 1, next_end
            if nvec > 3:
                raise format_error(path, frame, None, f"line {k + 1}: more than 3 VEC cell lines")
            for col, value in zip(cols, (begin, last_end + 1, natoms, k + 1, nvec)):
                col.append(value)
            k, begin = last + 1, last_end + 1
        del lines, buf
    arrays = [np.asarray(c, dtype=np.int64) for c in cols]
    arrays[4] = arrays[4].astype(np.int8)
    for a in arrays:
        a.flags.writeable = False
    return _Index(*arrays)


# ----------------------------------------------------------------------------------------
# Parsing one frame
# ----------------------------------------------------------------------------------------

_PLAIN_PROPERTIES = "species:S:1:pos:R:3"
_PLAIN_WITH_FORCES = "species:S:1:pos:R:3:forces:R:3"
_VOIGT_KEYS = re.compile(r"(?<!\S)(stress|virial)(?=\s*=)")
_VOIGT_PREFIX = "__mlffd_voigt_"


@functools.lru_cache(maxsize=256)
def column_layout(properties: str) -> tuple[tuple[str, str, int, int], ...]:
    """``Properties=`` -> ((ASE name, type R/I/S/L, first column, ncols), ...); ValueError if malformed."""
    fields = properties.split(":")
    if len(fields) % 3:
        raise ValueError(f"Properties={properties!r} is not a list of name:type:ncols triplets")
    layout, start = [], 0
    for name, kind, ncols in zip(fields[::3], fields[1::3], fields[2::3]):
        if kind not in ("R", "I", "S", "L"):
            raise ValueError(f"Properties: unknown column type {kind!r} for {name!r}")
        n = int(ncols)
        layout.append((REV_PROPERTY_NAME_MAP.get(name, name), kind, start, n))
        start += n
    return tuple(layout)


def bare_energy(comment: str) -> Optional[float]:
    """The energy of a plain-XYZ comment that is one real number (a bare integer is not)."""
    token = comment.strip()
    if not token or len(token.split()) != 1:
        return None
    try:
        int(token)
        return None
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return None


#: one ``key`` or ``key=value`` of a comment line in the plain syntax (no escapes, no spaces
#: around ``=``, quotes only around a whole value); anything else goes to ASE's full parser
_PAIR = re.compile(
    r"""([^\s="'{}\[\]\\]+)"""  # key
    r"""(?:=("[^"]*"|'[^']*'|\{[^}]*\}|\[[^\]]*\]|[^\s"'{}\[\]=\\]+))?"""  # =value, quoted or bare
    r"""(?:\s+|$)"""
)


def split_comment(line: str) -> Optional[list[tuple[str, str]]]:
    """``[(key, 'key=value' text), ...]`` of a stripped comment line, or None for syntax outside ``_PAIR``."""
    pos, pairs = 0, []
    while pos < len(line):
        m = _PAIR.match(line, pos)
        if m is None:
            return None
        pairs.append((m.group(1), line[m.start() : m.end(2) if m.group(2) is not None else m.end(1)]))
        pos = m.end()
    return pairs


def parse_comment(
    comment: str, *, path: str, index: int, only: Optional[frozenset[str]] = None
) -> dict[str, Any]:
    """The comment line as ``atoms.info`` would hold it before ASE moves labels to its calculator.

    only: the keys wanted (None for all). Their ``key=value`` texts are cut out of the line
    and handed to ASE's parser alone, which converts them exactly as it would in the whole
    line but skips the work on other keys; lines in unusual syntax are parsed whole.
    """
    line = comment.strip()
    if not line:
        return {}
    energy = bare_energy(line)
    if energy is not None:
        return {"energy": energy}
    if only is not None:
        pairs = split_comment(line)
        if pairs is not None:
            line = " ".join(text for key, text in pairs if key in only)
    try:
        info = key_val_str_to_dict(line)
    except ValueError as exc:
        info = _parse_voigt_comment(line)
        if info is None:
            key = re.search(r"info item (\w+)", str(exc))
            raise format_error(
                path, index, key.group(1) if key else None, f"cannot parse the comment line: {exc}"
            ) from None
    return info if only is None else {k: v for k, v in info.items() if k in only}


def _parse_voigt_comment(line: str) -> Optional[dict[str, Any]]:
    """Parse a comment whose ``stress``/``virial`` holds 6 Voigt values (ASE insists on 9)."""
    renamed = _VOIGT_KEYS.sub(lambda m: _VOIGT_PREFIX + m.group(1), line)
    if renamed == line:
        return None
    try:
        info = key_val_str_to_dict(renamed)
    except ValueError:
        return None
    for key in [k for k in info if k.startswith(_VOIGT_PREFIX)]:
        value = info.pop(key)
        if not (isinstance(value, np.ndarray) and value.shape in ((6,), (9,)) and value.dtype.kind in "iuf"):
            return None
        info[key[len(_VOIGT_PREFIX) :]] = value.reshape(3, 3, order="F") if value.size == 9 else value
    return info


@dataclass
class _Frame:
    """One frame split into comment info and atom-line tokens (columns parsed on demand)."""

    path: str
    index: int
    natoms: int
    comment: str
    info: dict[str, Any]
    properties: str
    layout: tuple[tuple[str, str, int, int], ...]
    tokens: list[str]
    ncols: int
    first_atom_line: int
    atom_lines: list[str]
    vec_lines: list[str]

    def has_column(self, name: str) -> bool:
        return any(spec[0] == name for spec in self.layout)

    def column(self, name: str) -> np.ndarray:
        """Per-atom column ``name`` (ASE's name) as float64: [N] or [N, ncols]; R and I columns only."""
        spec = next(s for s in self.layout if s[0] == name)
        _, kind, start, n = spec
        if kind not in "RI":
            raise format_error(self.path, self.index, name, f"column of type {kind} is not numeric")
        conv = float if kind == "R" else int
        out = np.empty((self.natoms, n), dtype=np.float64)
        for c in range(n):
            part = self.tokens[start + c :: self.ncols]
            try:
                out[:, c] = np.fromiter(map(conv, part), dtype=np.float64, count=self.natoms)
            except ValueError:
                atom = next(j for j, t in enumerate(part) if not _converts(conv, t))
                raise format_error(
                    self.path, self.index, name,
                    f"line {self.first_atom_line + atom}: {part[atom]!r} is not a valid {conv.__name__}",
                ) from None
        return out[:, 0] if n == 1 else out

    def numbers(self) -> np.ndarray:
        """[N] int64 atomic numbers from the ``Z`` column, else from ``species`` (as ASE)."""
        if self.has_column("numbers"):
            return self.column("numbers").astype(np.int64)
        if not self.has_column("symbols"):
            raise format_error(self.path, self.index, "species", "no species or Z column")
        _, kind, start, _n = next(s for s in self.layout if s[0] == "symbols")
        symbols = self.tokens[start :: self.ncols]
        try:
            return np.fromiter((atomic_numbers[s.capitalize()] for s in symbols), np.int64, self.natoms)
        except KeyError as exc:
            atom = next(j for j, s in enumerate(symbols) if s.capitalize() not in atomic_numbers)
            raise format_error(
                self.path, self.index, "species",
                f"line {self.first_atom_line + atom}: unknown element {exc.args[0]!r}",
            ) from None


def _converts(conv, token: str) -> bool:
    try:
        conv(token)
        return True
    except ValueError:
        return False


def _stress_value(key: str, value: Any) -> Any:
    """A stress/virial as stored: ``stress`` as ASE's calculator keeps it, 9-vectors column-major."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        if key == "stress" and value.shape == (3, 3):
            # ASE's extxyz reader stores this Voigt vector in atoms.calc.results['stress']
            return np.array([value[0, 0], value[1, 1], value[2, 2], value[1, 2], value[0, 2], value[0, 1]])
        if value.shape == (9,):
            return value.reshape(3, 3, order="F")
    return value


def _all_nan(value: Any) -> bool:
    """True for a float array whose every value is NaN (a stress written as "not defined")."""
    arr = np.asarray(value) if value is not None else None
    return arr is not None and arr.dtype.kind == "f" and arr.size > 0 and bool(np.all(np.isnan(arr)))


def _is_numeric(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    return isinstance(value, np.ndarray) and value.dtype.kind in "iuf"


# ----------------------------------------------------------------------------------------
# The reader
# ----------------------------------------------------------------------------------------


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
    ) -> None:
        super().__init__(path, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"{self.path}: is a directory, not an extended XYZ file")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such extended XYZ file")
        self._index = index_frames(self.path)
        #: comment-line keys that ``read`` needs
        self._wanted_keys = frozenset(
            ("Lattice", "pbc", "Properties", *chain.from_iterable(_UNIT_KEYS.values()))
            + tuple(chain.from_iterable(self.keys.candidates(label) for label in ("energy", "forces", "stress")))
        )
        self._find_units()
        if len(self):
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
        positions = frame.column("positions") if frame.has_column("positions") else None
        if positions is None or positions.shape != (frame.natoms, 3):
            raise format_error(self.path, i, "pos", "frame needs a pos column of 3 reals")
        if not np.all(np.isfinite(positions)):
            raise format_error(self.path, i, "pos", "positions contain NaN or inf")
        cell, pbc = self._cell_pbc(frame)
        found = {label: self._find_label(frame, label) for label in ("energy", "forces", "stress")}
        if _all_nan(found["stress"][1]):  # metatrain writes stress="nan ..." for molecules
            found["stress"] = (found["stress"][0], None)
        energy, forces, stress = finalize_labels(
            energy=found["energy"][1],
            forces=found["forces"][1],
            stress=found["stress"][1],
            keys={label: key for label, (key, _v) in found.items()},
            natoms=frame.natoms,
            cell=cell,
            path=self.path,
            index=i,
        )
        energy, forces, stress = self._convert_units(frame, energy, forces, stress)
        return Structure(
            positions=positions,
            numbers=frame.numbers(),
            cell=cell,
            pbc=pbc,
            energy=energy,
            forces=forces,
            stress=stress,
        )

    def label_keys(self, index: int) -> list[str]:
        """Comment keys with numeric values and per-atom columns other than species/Z/pos."""
        frame = self._frame(index, all_keys=True)
        keys = [k for k, v in frame.info.items() if k not in ("Lattice", "pbc") and _is_numeric(v)]
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
    def _check_index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.path}: structure index {index} out of range for {n} structures")
        return i

    def _read_bytes(self, start: int, size: int) -> bytes:
        handle = self.handle
        if hasattr(os, "pread"):
            return os.pread(handle.fileno(), size, start)
        handle.seek(start)
        return handle.read(size)

    def _frame(self, index: int, all_keys: bool = False) -> _Frame:
        i = self._check_index(index)
        ix = self._index
        start, stop, natoms, nvec = int(ix.start[i]), int(ix.stop[i]), int(ix.natoms[i]), int(ix.nvec[i])
        raw = self._read_bytes(start, stop - start)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise format_error(self.path, i, None, f"frame is not valid UTF-8 text: {exc}") from None
        lines = text.split("\n")
        try:
            ok = len(lines) >= 2 + natoms + nvec and int(lines[0]) == natoms
        except ValueError:
            ok = False
        if not ok:
            raise format_error(self.path, i, None, "file changed since it was indexed; open it again")
        vec_lines = lines[2 + natoms : 2 + natoms + nvec]
        only = None if all_keys else self._wanted_keys
        info = {"comment": lines[1].strip()} if nvec else parse_comment(lines[1], path=self.path, index=i, only=only)
        first_atom_line = int(ix.line[i]) + 2
        rows = [line.split() for line in lines[2 : 2 + natoms]]
        properties = info.pop("Properties", None)
        if properties is None:
            properties = _PLAIN_WITH_FORCES if rows and len(rows[0]) == 7 else _PLAIN_PROPERTIES
        if not isinstance(properties, str):
            raise format_error(self.path, i, "Properties", f"expected name:type:ncols triplets, got {properties!r}")
        try:
            layout = column_layout(properties)
        except ValueError as exc:
            raise format_error(self.path, i, "Properties", str(exc)) from None
        ncols = sum(spec[3] for spec in layout)
        for j, row in enumerate(rows):
            if len(row) != ncols:
                hint = "" if "Properties" in lines[1] else "; add a Properties= key to the comment line"
                raise format_error(
                    self.path, i, "Properties",
                    f"line {first_atom_line + j} has {len(row)} columns, expected {ncols} ({properties}){hint}",
                )
        tokens = list(chain.from_iterable(rows))
        return _Frame(
            self.path, i, natoms, lines[1], info, properties, layout, tokens, ncols, first_atom_line,
            lines[2 : 2 + natoms], vec_lines,
        )

    def _cell_pbc(self, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
        """cell [3, 3] Å (rows are lattice vectors) and pbc [3], as ASE sets them."""
        info, i = frame.info, frame.index
        cell = np.zeros((3, 3), dtype=np.float64)
        pbc = np.zeros(3, dtype=bool)
        if frame.vec_lines:
            for row, line in enumerate(frame.vec_lines):
                try:
                    cell[row] = [float(x) for x in line.split()[1:]]
                except ValueError:
                    raise format_error(self.path, i, "VEC", f"bad cell line {line!r}") from None
                pbc[row] = True
            return cell, pbc
        if "Lattice" in info:
            cell = np.ascontiguousarray(np.asarray(info["Lattice"], dtype=np.float64).T)
            pbc[:] = True
            if not np.all(np.isfinite(cell)):
                raise format_error(self.path, i, "Lattice", "cell contains NaN or inf")
        if "pbc" in info:
            value = info["pbc"]
            try:
                if isinstance(value, str):
                    raise ValueError(value)
                pbc[:] = value
            except (ValueError, TypeError):
                raise format_error(self.path, i, "pbc", f"expected 3 booleans, got {value!r}") from None
        return cell, pbc

    def _find_label(self, frame: _Frame, label: str) -> tuple[str, Any]:
        """(key, raw value) of ``label`` in the frame, or (configured key, None)."""
        for key in self.keys.candidates(label):
            in_info, in_columns = key in frame.info, frame.has_column(key)
            if label == "forces" and in_columns:
                return key, frame.column(key)
            if in_info and not isinstance(frame.info[key], bool):  # a bare word 'energy' is no label
                value = frame.info[key]
                return key, _stress_value(key, value) if label == "stress" else value
            if in_columns:
                return key, frame.column(key)
        return self.keys.key(label), None

    # -- units ------------------------------------------------------------------------------
    def _find_units(self) -> None:
        """Check every ``energy-unit``/``force-unit`` in the file and record the conversions."""
        seen: dict[str, list[str]] = {}
        if len(self) == 0:
            return
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            matches = [(m.start(), m.group(1), m.group(2)) for m in _UNIT_PATTERN.finditer(data)]
        for offset, name, raw_unit in matches:
            label = "energy" if name == b"energy" else "forces"
            unit = raw_unit.decode("utf-8", "replace").strip("\"'").strip()
            frame = max(0, int(np.searchsorted(self._index.start, offset, side="right")) - 1)
            factor = self._factor(label, unit, frame)
            if factor == 1.0:
                continue
            descriptions = [f"{unit} -> {_SI_NAMES[label]} (x{factor!r})"]
            if label == "energy":
                descriptions.append(f"{unit}/Å^3 -> eV/Å^3, virial {unit} -> eV (x{factor!r})")
            for target, desc in zip((label, "stress"), descriptions):
                if desc not in seen.setdefault(target, []):
                    seen[target].append(desc)
        self.units = {label: "; ".join(descs) for label, descs in seen.items()}

    def _factor(self, label: str, unit: str, index: int) -> float:
        try:
            return _FACTORS[label](unit)
        except KeyError:
            known = sorted(ENERGY_UNITS) if label == "energy" else ["<energy>/<length>", *sorted(LENGTH_UNITS)]
            raise format_error(
                self.path, index, _UNIT_KEYS[label][0], f"unknown unit {unit!r} (known: {', '.join(known)})"
            ) from None

    def _frame_unit(self, frame: _Frame, label: str) -> Optional[str]:
        for key in _UNIT_KEYS[label]:
            if key in frame.info:
                value = frame.info[key]
                if not isinstance(value, str):
                    raise format_error(self.path, frame.index, key, f"expected a unit name, got {value!r}")
                return value
        return None

    def _convert_units(self, frame: _Frame, energy, forces, stress):
        """Apply the frame's ``energy-unit``/``force-unit`` (values are left alone without them)."""
        e_unit, f_unit = self._frame_unit(frame, "energy"), self._frame_unit(frame, "forces")
        if e_unit is not None:
            factor = self._factor("energy", e_unit, frame.index)
            if factor != 1.0:
                energy = None if energy is None else energy * factor
                stress = None if stress is None else stress * factor
                if forces is not None and f_unit is None:
                    raise format_error(
                        self.path, frame.index, "force-unit",
                        f"energy-unit={e_unit} is given but force-unit is not; cannot tell the forces' unit",
                    )
        if f_unit is not None and forces is not None:
            factor = self._factor("forces", f_unit, frame.index)
            if factor != 1.0:
                forces = forces * factor
        return energy, forces, stress


__all__ = [
    "XyzReader",
    "index_frames",
    "column_layout",
    "parse_comment",
    "split_comment",
    "energy_factor",
    "force_factor",
]
