"""Unit strings as files write them -> factors to ASE units (eV, Å), with a dimension check.

Understands the spellings real files use: ``hartree``, ``Ha``, ``bohr``, ``kcal/mol``,
``kcal/mol/Angstrom``, ``hartree/bohr``, pint-style ``kilojoule_per_mole``, ``nanometer ** 2``,
``eV/Å``... A unit is parsed into a factor (value of one unit in ASE units, from ``ase.units``)
and a dimension (powers of energy and length); converting a quantity checks that the unit has the
quantity's dimension, so a force stored "in hartree" is an error rather than a silent mistake.

Example: ``conversion("hartree/bohr", "gradient").factor`` is 51.422... (eV/Å per Ha/bohr).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import ase.units as U

#: dimension = (power of energy, power of length)
Dimension = tuple[int, int]

#: the dimension and ASE unit name of each quantity a reader converts
QUANTITIES: dict[str, tuple[Dimension, str]] = {
    "energy": ((1, 0), "eV"),
    "length": ((0, 1), "Å"),
    "positions": ((0, 1), "Å"),
    "forces": ((1, -1), "eV/Å"),
    "gradient": ((1, -1), "eV/Å"),
    "virial": ((1, 0), "eV"),
    "stress": ((1, -3), "eV/Å^3"),
}

_E = (1, 0)
_L = (0, 1)
_ONE = (0, 0)

#: base unit names (lower case) -> (value in ASE units, dimension)
BASE_UNITS: dict[str, tuple[float, Dimension]] = {
    # energy
    "ev": (U.eV, _E),
    "electronvolt": (U.eV, _E),
    "electron_volt": (U.eV, _E),
    "mev": (1e-3 * U.eV, _E),
    "hartree": (U.Hartree, _E),
    "ha": (U.Hartree, _E),
    "eh": (U.Hartree, _E),
    "rydberg": (U.Rydberg, _E),
    "ry": (U.Rydberg, _E),
    "kcal": (U.kcal, _E),
    "kilocalorie": (U.kcal, _E),
    "cal": (U.kcal / 1000.0, _E),
    "calorie": (U.kcal / 1000.0, _E),
    "kj": (U.kJ, _E),
    "kilojoule": (U.kJ, _E),
    "j": (U.J, _E),
    "joule": (U.J, _E),
    # length
    "angstrom": (U.Angstrom, _L),
    "angstroms": (U.Angstrom, _L),
    "ang": (U.Angstrom, _L),
    "angs": (U.Angstrom, _L),
    "a": (U.Angstrom, _L),
    "aa": (U.Angstrom, _L),
    "å": (U.Angstrom, _L),
    "bohr": (U.Bohr, _L),
    "a0": (U.Bohr, _L),
    "nm": (U.nm, _L),
    "nanometer": (U.nm, _L),
    "nanometers": (U.nm, _L),
    "pm": (1e-2 * U.Angstrom, _L),
    "picometer": (1e-2 * U.Angstrom, _L),
    "m": (U.m, _L),
    "meter": (U.m, _L),
    "cm": (1e-2 * U.m, _L),
    "centimeter": (1e-2 * U.m, _L),
    # amount of substance: a pure number in ASE (units.mol = Avogadro's number)
    "mol": (U.mol, _ONE),
    "mole": (U.mol, _ONE),
    "dimensionless": (1.0, _ONE),
}

_TOKEN = re.compile(r"\s*(?:(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)|(?P<name>[^\W\d][\w]*)|(?P<op>\*\*|[-+*/^()]))")


class UnitError(ValueError):
    """A unit string that cannot be parsed or has the wrong dimension for its quantity."""


@dataclass(frozen=True)
class Conversion:
    """How one stored quantity becomes ASE units: ``ase_value = sign * factor * stored``."""

    unit: str
    quantity: str
    factor: float
    sign: float = 1.0

    def describe(self, source: str | None = None) -> str:
        """e.g. ``'dft_total_gradient: -1 x hartree/bohr -> eV/Å (x51.4220...)'``."""
        target = QUANTITIES[self.quantity][1]
        sign = "-1 x " if self.sign < 0 else ""
        text = f"{sign}{self.unit} -> {target} (x{self.factor:.12g})"
        return f"{source}: {text}" if source else text


def _tokens(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise UnitError(f"cannot parse unit {text!r} at {text[pos:]!r}")
        kind = m.lastgroup
        value = m.group(kind)
        out.append((kind, "^" if value == "**" else value))
        pos = m.end()
    return out


class _Parser:
    """expr := term (('*' | '/' | juxtaposition) term)* ; term := atom ('^' int)? ; atom := name | number | '(' expr ')'."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise UnitError(f"unit {self.text!r} ends unexpectedly")
        self.i += 1
        return tok

    def parse(self) -> tuple[float, Dimension]:
        value = self.expr()
        if self.peek() is not None:
            raise UnitError(f"cannot parse unit {self.text!r}: unexpected {self.peek()[1]!r}")
        return value

    def expr(self) -> tuple[float, Dimension]:
        factor, dim = self.term()
        while True:
            tok = self.peek()
            if tok is None or tok == ("op", ")"):
                return factor, dim
            if tok in (("op", "*"), ("op", "/")):
                self.take()
                f2, d2 = self.term()
                if tok[1] == "/":
                    factor, dim = factor / f2, (dim[0] - d2[0], dim[1] - d2[1])
                else:
                    factor, dim = factor * f2, (dim[0] + d2[0], dim[1] + d2[1])
            else:  # juxtaposition, e.g. "kJ mol^-1"
                f2, d2 = self.term()
                factor, dim = factor * f2, (dim[0] + d2[0], dim[1] + d2[1])

    def term(self) -> tuple[float, Dimension]:
        factor, dim = self.atom()
        if self.peek() == ("op", "^"):
            self.take()
            sign = 1.0
            kind, value = self.take()
            if value in ("-", "+"):
                sign = -1.0 if value == "-" else 1.0
                kind, value = self.take()
            if kind != "num":
                raise UnitError(f"cannot parse exponent in unit {self.text!r}")
            power = float(value) * sign
            if power != int(power):
                raise UnitError(f"non-integer exponent in unit {self.text!r}")
            p = int(power)
            factor, dim = factor**p, (dim[0] * p, dim[1] * p)
        return factor, dim

    def atom(self) -> tuple[float, Dimension]:
        kind, value = self.take()
        if kind == "num":
            return float(value), _ONE
        if kind == "name":
            key = value.lower()
            if key not in BASE_UNITS:
                raise UnitError(f"unknown unit {value!r} in {self.text!r}")
            return BASE_UNITS[key]
        if value == "(":
            inner = self.expr()
            if self.take() != ("op", ")"):
                raise UnitError(f"unbalanced parentheses in unit {self.text!r}")
            return inner
        raise UnitError(f"cannot parse unit {self.text!r}: unexpected {value!r}")


def _normalize(text: str) -> str:
    text = text.strip()
    text = re.sub(r"_per_", "/", text)
    text = re.sub(r"\s+per\s+", "/", text)
    return text


def parse_unit(text: str) -> tuple[float, Dimension]:
    """Value of one ``text`` in ASE units and its (energy, length) dimension; UnitError if unknown."""
    if isinstance(text, bytes):
        text = text.decode()
    if not isinstance(text, str) or not text.strip():
        raise UnitError(f"empty or non-text unit {text!r}")
    return _Parser(_normalize(text)).parse()


def conversion(unit: str, quantity: str, *, sign: float = 1.0) -> Conversion:
    """The factor turning values stored in ``unit`` into ASE units of ``quantity``.

    quantity: one of ``QUANTITIES`` ('energy', 'positions', 'forces', 'gradient', ...).
    Raises UnitError for an unknown unit or one whose dimension does not fit the quantity.
    """
    if isinstance(unit, bytes):
        unit = unit.decode()
    factor, dim = parse_unit(unit)
    want, target = QUANTITIES[quantity]
    if dim != want:
        raise UnitError(f"unit {unit!r} is not a unit of {quantity} ({target})")
    return Conversion(unit=str(unit), quantity=quantity, factor=float(factor), sign=sign)


def convert_factor(unit: str, quantity: str) -> float:
    """Shortcut: ``conversion(unit, quantity).factor``."""
    return conversion(unit, quantity).factor


__all__ = ["BASE_UNITS", "Conversion", "QUANTITIES", "UnitError", "conversion", "convert_factor", "parse_unit"]
