"""One XYZ frame's text split into comment info, column layout and atom-line tokens.

``parse_frame`` turns the bytes of one frame (as located by ``xyz_index``) into a ``Frame``;
its per-atom columns are converted on demand with ``float``/``int`` token by token, as
``ase.io.extxyz`` does, so values are float64 bit for bit what ASE reads. Atom lines whose
column count differs from ``Properties`` are an error (ASE ignores extra columns silently);
without ``Properties=``, 7 columns are ``species x y z fx fy fz``.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Optional

import numpy as np
from ase.data import atomic_numbers
from ase.io.extxyz import REV_PROPERTY_NAME_MAP

from ...errors import format_error
from .comment import parse_comment

_PLAIN_PROPERTIES = "species:S:1:pos:R:3"
_PLAIN_WITH_FORCES = "species:S:1:pos:R:3:forces:R:3"

#: (ASE name, type R/I/S/L, first column, ncols) of each ``Properties`` entry
Layout = tuple[tuple[str, str, int, int], ...]
#: element symbol -> atomic number, real elements only (ASE's table also maps 'X' to 0)
_ELEMENTS = {symbol: z for symbol, z in atomic_numbers.items() if 1 <= z <= 118}


#: the column type ASE requires for the species/Z columns (any other type makes ASE fail or guess)
_REQUIRED_KIND = {"symbols": "S", "numbers": "I"}
#: ASE reads ``I`` columns as int32 (a larger value makes it raise OverflowError)
_INT32 = (-(2**31), 2**31 - 1)


@functools.lru_cache(maxsize=256)
def column_layout(properties: str) -> Layout:
    """``Properties=`` -> ((ASE name, type R/I/S/L, first column, ncols), ...).

    ValueError where ASE refuses the string (a type other than R/I/S/L, a column count that is
    not a positive integer, a field named twice — ``pos:R:3:pos0:R:1`` clashes in ASE's record
    type too) and where ASE would silently keep one of two columns of the same name
    (``pos`` and ``positions``) or read species/Z of the wrong type.
    """
    fields = properties.split(":")
    if len(fields) % 3:
        raise ValueError(f"Properties={properties!r} is not a list of name:type:ncols triplets")
    layout, start = [], 0
    fields_seen: set[str] = set()
    names_seen: dict[str, str] = {}
    for name, kind, ncols in zip(fields[::3], fields[1::3], fields[2::3]):
        if kind not in ("R", "I", "S", "L"):
            raise ValueError(f"Properties: unknown column type {kind!r} for {name!r}")
        try:
            n = int(ncols)
        except ValueError:
            raise ValueError(f"Properties: column count {ncols!r} of {name!r} is not an integer") from None
        if n < 1:
            raise ValueError(f"Properties: column count {n} of {name!r} must be at least 1")
        for record_field in [name] if n == 1 else [f"{name}{c}" for c in range(n)]:
            if record_field in fields_seen:
                raise ValueError(f"Properties: field {record_field!r} occurs more than once")
            fields_seen.add(record_field)
        ase_name = REV_PROPERTY_NAME_MAP.get(name, name)
        if ase_name in names_seen:
            twice = f"{name!r} is listed twice" if names_seen[ase_name] == name else (
                f"{names_seen[ase_name]!r} and {name!r} are the same column {ase_name!r}")
            raise ValueError(f"Properties: {twice}")
        names_seen[ase_name] = name
        required = _REQUIRED_KIND.get(ase_name)
        if required is not None and (kind != required or n != 1):
            raise ValueError(f"Properties: {name!r} must be {name}:{required}:1, got {name}:{kind}:{n}")
        layout.append((ase_name, kind, start, n))
        start += n
    return tuple(layout)


@dataclass
class Frame:
    """One frame split into comment info and atom-line tokens (columns parsed on demand)."""

    path: str
    index: int
    natoms: int
    comment: str
    info: dict[str, Any]
    properties: str
    layout: Layout
    tokens: list[str]
    ncols: int
    first_atom_line: int
    atom_lines: list[str]
    vec_lines: list[str]
    #: columns already converted (ASE name -> array)
    converted: dict = field(default_factory=dict)

    def has_column(self, name: str) -> bool:
        return any(spec[0] == name for spec in self.layout)

    def column(self, name: str) -> np.ndarray:
        """Per-atom column ``name`` (ASE's name) as float64: [N] or [N, ncols]; R and I columns only.

        Tokens go through ``float``/``int`` as in ASE; an ``I`` value outside int32 (what ASE
        stores them as) is an error, as it is in ASE.
        """
        hit = self.converted.get(name)
        if hit is not None:
            return hit
        spec = next(s for s in self.layout if s[0] == name)
        _, kind, start, n = spec
        if kind not in "RI":
            raise format_error(self.path, self.index, name, f"column of type {kind} is not numeric")
        conv = float if kind == "R" else int
        out = np.empty((self.natoms, n), dtype=np.float64)
        for c in range(n):
            part = self.tokens[start + c :: self.ncols]
            try:
                if kind == "R":
                    out[:, c] = np.fromiter(map(float, part), dtype=np.float64, count=self.natoms)
                    continue
                values = list(map(int, part))
            except ValueError:
                atom = next(j for j, t in enumerate(part) if not _converts(conv, t))
                raise format_error(
                    self.path, self.index, name,
                    f"line {self.first_atom_line + atom}: {part[atom]!r} is not a valid {conv.__name__}",
                ) from None
            if values and (min(values) < _INT32[0] or max(values) > _INT32[1]):
                atom = next(j for j, v in enumerate(values) if not _INT32[0] <= v <= _INT32[1])
                raise format_error(
                    self.path, self.index, name,
                    f"line {self.first_atom_line + atom}: {part[atom]!r} is out of range for an integer "
                    "column (32-bit, as ASE reads it)",
                )
            out[:, c] = values
        out = out[:, 0] if n == 1 else out
        self.converted[name] = out
        return out

    def typed_column(self, name: str) -> np.ndarray:
        """Column ``name`` with ASE's dtype: R float64, I int64 (int32 values, as ASE reads them),
        L bool (``T``/``F``/``True``/``False``; anything else is an error), S str; [N] for one
        column, [N, n] for several."""
        _, kind, start, n = next(s for s in self.layout if s[0] == name)
        if kind == "R":
            return self.column(name)
        if kind == "I":
            return self.column(name).astype(np.int64)
        rows = [self.tokens[start + c :: self.ncols] for c in range(n)]
        if kind == "S":
            out = np.array(rows, dtype=str).T
        else:
            table = {"T": True, "F": False, "True": True, "False": False}
            out = np.empty((self.natoms, n), dtype=bool)
            for c, part in enumerate(rows):
                for j, token in enumerate(part):
                    if token not in table:
                        raise format_error(self.path, self.index, name,
                                           f"line {self.first_atom_line + j}: {token!r} is not a logical value (T/F)")
                    out[j, c] = table[token]
        return out[:, 0] if n == 1 else out

    def check_numeric_columns(self) -> None:
        """Convert every R and I column (as ASE does) so that a corrupt number in a column no
        sample needs is an error here too, not clean data (ASE raises on it)."""
        for name, kind, start, n in self.layout:
            if kind not in "RI" or name in self.converted:
                continue
            if kind == "R":
                try:  # the cheap check: every token through float(), nothing kept
                    for c in range(n):
                        deque(map(float, self.tokens[start + c :: self.ncols]), maxlen=0)
                    continue
                except ValueError:
                    pass
            self.column(name)  # converts, or raises the error naming the line

    def numbers(self) -> np.ndarray:
        """[N] int64 atomic numbers from the ``Z`` column, else from ``species`` (as ASE)."""
        if self.has_column("numbers"):
            numbers = self.column("numbers").astype(np.int64)
            bad = np.flatnonzero((numbers < 1) | (numbers > 118))
            if bad.size:
                atom = int(bad[0])
                raise format_error(
                    self.path, self.index, "Z",
                    f"line {self.first_atom_line + atom}: atomic number {numbers[atom]} is not in 1..118",
                )
            return numbers
        if not self.has_column("symbols"):
            raise format_error(self.path, self.index, "species", "no species or Z column")
        _, kind, start, _n = next(s for s in self.layout if s[0] == "symbols")
        symbols = self.tokens[start :: self.ncols]
        try:
            return np.fromiter((_ELEMENTS[s.capitalize()] for s in symbols), np.int64, self.natoms)
        except KeyError as exc:
            atom = next(j for j, s in enumerate(symbols) if s.capitalize() not in _ELEMENTS)
            raise format_error(
                self.path, self.index, "species",
                f"line {self.first_atom_line + atom}: unknown element {exc.args[0]!r}"
                + (" (the dummy atom X is not a chemical element)" if exc.args[0] == "X" else ""),
            ) from None

    def cell_pbc(self) -> tuple[np.ndarray, np.ndarray]:
        """cell [3, 3] Å (rows are lattice vectors; zeros without one) and pbc [3], as ASE sets them."""
        info, i = self.info, self.index
        cell = np.zeros((3, 3), dtype=np.float64)
        pbc = np.zeros(3, dtype=bool)
        if self.vec_lines:
            for row, line in enumerate(self.vec_lines):
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


def _converts(conv, token: str) -> bool:
    try:
        conv(token)
        return True
    except ValueError:
        return False


def parse_frame(
    raw: bytes, *, path: str, index: int, natoms: int, nvec: int, line: int, only: Optional[frozenset[str]]
) -> Frame:
    """Frame ``index`` from its bytes: atom-count line, comment, ``natoms`` atom lines, ``nvec`` VEC lines.

    line: 1-based line number of the atom-count line (for messages). only: the comment keys
    wanted (None for all, see ``parse_comment``). DataFormatError for text that is not UTF-8,
    no longer matches the index, or has atom lines that do not fit ``Properties``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise format_error(path, index, None, f"frame is not valid UTF-8 text: {exc}") from None
    lines = text.split("\n")
    try:
        ok = len(lines) >= 2 + natoms + nvec and int(lines[0]) == natoms
    except ValueError:
        ok = False
    if not ok:
        raise format_error(path, index, None, "file changed since it was indexed; open it again")
    vec_lines = lines[2 + natoms : 2 + natoms + nvec]
    info = {"comment": lines[1].strip()} if nvec else parse_comment(lines[1], path=path, index=index, only=only)
    first_atom_line = line + 2
    rows = [atom_line.split() for atom_line in lines[2 : 2 + natoms]]
    properties = info.pop("Properties", None)
    if properties is None:
        properties = _PLAIN_WITH_FORCES if rows and len(rows[0]) == 7 else _PLAIN_PROPERTIES
    if not isinstance(properties, str):
        raise format_error(path, index, "Properties", f"expected name:type:ncols triplets, got {properties!r}")
    try:
        layout = column_layout(properties)
    except ValueError as exc:
        raise format_error(path, index, "Properties", str(exc)) from None
    ncols = sum(spec[3] for spec in layout)
    for j, row in enumerate(rows):
        if len(row) != ncols:
            hint = "" if "Properties" in lines[1] else "; add a Properties= key to the comment line"
            raise format_error(
                path, index, "Properties",
                f"line {first_atom_line + j} has {len(row)} columns, expected {ncols} ({properties}){hint}",
            )
    tokens = list(chain.from_iterable(rows))
    return Frame(
        path, index, natoms, lines[1], info, properties, layout, tokens, ncols, first_atom_line,
        lines[2 : 2 + natoms], vec_lines,
    )


__all__ = ["Frame", "column_layout", "parse_frame"]
