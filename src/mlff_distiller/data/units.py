"""Unit strings as files write them -> factors to ASE units (eV, Å, e), with a dimension check.

Understands the spellings real files use: ``hartree``, ``Ha``, ``bohr``, ``kcal/mol``,
``kcal/mol/Angstrom``, ``hartree/bohr``, pint-style ``kilojoule_per_mole``, ``nanometer ** 2``,
``eV/Å``, ``elementary_charge*bohr``, ``Debye``, SchNetPack's ``eAng``... A unit is parsed into a
factor (value of one unit in ASE units, from ``ase.units``) and a dimension (powers of energy,
length and charge); converting a quantity checks that the unit has the quantity's dimension, so a
force stored "in hartree" is an error rather than a silent mistake.

Example: ``conversion("hartree/bohr", "gradient").factor`` is 51.422... (eV/Å per Ha/bohr).

``LabelUnits`` holds the user's unit options of every reader (``energy_unit=``, ``forces_unit=``,
``stress_unit=``, ``length_unit=``): they override what a file declares, and a label whose unit
cannot be told from them (forces read with only ``energy_unit`` given) is an error, never a guess.
``convert_to(unit, target)`` converts any declared property (charges in ``e``, dipoles in
``e*Å``...) into the unit its key declares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import ase.units as U

#: dimension = (power of energy, power of length, power of charge)
Dimension = tuple[int, int, int]

#: the dimension and ASE unit name of each quantity a reader converts
QUANTITIES: dict[str, tuple[Dimension, str]] = {
    "energy": ((1, 0, 0), "eV"),
    "length": ((0, 1, 0), "Å"),
    "positions": ((0, 1, 0), "Å"),
    "forces": ((1, -1, 0), "eV/Å"),
    "gradient": ((1, -1, 0), "eV/Å"),
    "virial": ((1, 0, 0), "eV"),
    "stress": ((1, -3, 0), "eV/Å^3"),
    "charge": ((0, 0, 1), "e"),
    "dipole": ((0, 1, 1), "e*Å"),
}

_E = (1, 0, 0)
_L = (0, 1, 0)
_Q = (0, 0, 1)
_QL = (0, 1, 1)
_ONE = (0, 0, 0)

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
    # pressure (stress): energy / length^3
    "pa": (U.Pascal, (1, -3, 0)),
    "pascal": (U.Pascal, (1, -3, 0)),
    "gpa": (U.GPa, (1, -3, 0)),
    "bar": (U.bar, (1, -3, 0)),
    "kbar": (1e3 * U.bar, (1, -3, 0)),
    # charge and dipole moment (e, e*Å)
    "e": (1.0, _Q),
    "elementary_charge": (1.0, _Q),
    "electron_charge": (1.0, _Q),
    "coulomb": (1.0 / U._e, _Q),
    "debye": (U.Debye, _QL),
    "d": (U.Debye, _QL),
    "eang": (1.0, _QL),  # SchNetPack's 'eAng'
    "ebohr": (U.Bohr, _QL),
    # amount of substance: a pure number in ASE (units.mol = Avogadro's number)
    "mol": (U.mol, _ONE),
    "mole": (U.mol, _ONE),
    "dimensionless": (1.0, _ONE),
}

_TOKEN = re.compile(r"\s*(?:(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)|(?P<name>[^\W\d][\w]*)|(?P<op>\*\*|[-+*/^()]))")


def _add(a: Dimension, b: Dimension) -> Dimension:
    return tuple(x + y for x, y in zip(a, b))


def _sub(a: Dimension, b: Dimension) -> Dimension:
    return tuple(x - y for x, y in zip(a, b))


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
                    factor, dim = factor / f2, _sub(dim, d2)
                else:
                    factor, dim = factor * f2, _add(dim, d2)
            else:  # juxtaposition, e.g. "kJ mol^-1"
                f2, d2 = self.term()
                factor, dim = factor * f2, _add(dim, d2)

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
            factor, dim = factor**p, tuple(d * p for d in dim)
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


def convert_to(unit, target: str) -> float:
    """The factor turning values stored in ``unit`` into ``target`` (a key's declared unit, e.g.
    ``'e*Å'``). A number as ``unit`` (SchNetPack writes ``1.0`` for dimensionless properties) is
    accepted as 1.0 only: "no conversion", whatever ``target`` is. UnitError for an unknown unit or
    one of another dimension."""
    if isinstance(unit, (int, float)) and not isinstance(unit, bool):
        if float(unit) != 1.0:
            raise UnitError(f"unit given as the number {unit!r}; only 1 (no conversion) is understood")
        return 1.0
    if isinstance(unit, bytes):
        unit = unit.decode()
    src_factor, src_dim = parse_unit(unit)
    if not str(target).strip():
        dst_factor, dst_dim = 1.0, _ONE
    else:
        try:
            dst_factor, dst_dim = parse_unit(target)
        except UnitError:
            if str(unit).strip() == str(target).strip():
                return 1.0
            raise UnitError(f"cannot convert {unit!r} to {target!r} (no conversion known for {target!r})") from None
    if src_dim != dst_dim:
        raise UnitError(f"unit {unit!r} is not a unit of {target or 'a dimensionless number'}")
    return float(src_factor / dst_factor)


# -- the unit options every reader takes ---------------------------------------------------------

#: reader option -> the quantity it gives the unit of
UNIT_OPTIONS: dict[str, str] = {
    "energy_unit": "energy",
    "forces_unit": "forces",
    "stress_unit": "stress",
    "length_unit": "positions",
}
#: label -> the option giving its unit
LABEL_OPTION = {"energy": "energy_unit", "forces": "forces_unit", "stress": "stress_unit"}


_OPTION_OF_UNIT = {"eV": "energy", "eV/Å": "forces", "eV/Å³": "stress", "Å": "length"}


@dataclass(frozen=True)
class LabelUnits:
    """The user's ``energy_unit=``/``forces_unit=``/``stress_unit=``/``length_unit=`` options.

    Each is ``None`` (the file's own declaration or convention applies) or a ``Conversion`` to
    ASE units that overrides whatever the file says. A label read while its unit cannot be told
    from the options — forces when only ``energy_unit`` or ``length_unit`` rescales — is an error
    naming the option to add (:meth:`factor`). A virial is an energy: ``energy_unit`` converts it.
    """

    energy: Optional[Conversion] = None
    forces: Optional[Conversion] = None
    stress: Optional[Conversion] = None
    length: Optional[Conversion] = None

    @classmethod
    def from_options(cls, energy_unit=None, forces_unit=None, stress_unit=None, length_unit=None) -> "LabelUnits":
        """Parse the options (UnitError naming the option for an unknown unit or wrong dimension)."""
        out = {}
        for option, value in (("energy_unit", energy_unit), ("forces_unit", forces_unit),
                              ("stress_unit", stress_unit), ("length_unit", length_unit)):
            if value is None:
                continue
            if not isinstance(value, (str, bytes)):
                raise TypeError(f"{option} must be a unit string such as 'kcal/mol', got {value!r}")
            try:
                out[option[: -len("_unit")]] = conversion(value, UNIT_OPTIONS[option])
            except UnitError as exc:
                raise UnitError(f"{option}={value!r}: {exc}") from None
        return cls(**out)

    @classmethod
    def pop_from(cls, options: dict) -> "LabelUnits":
        """The unit options removed from a dict of reader options."""
        return cls.from_options(**{k: options.pop(k) for k in list(options) if k in UNIT_OPTIONS})

    @property
    def given(self) -> bool:
        return any(c is not None for c in (self.energy, self.forces, self.stress, self.length))

    def scale(self, name: str) -> float:
        conv = getattr(self, name)
        return 1.0 if conv is None else conv.factor

    @property
    def rescales(self) -> bool:
        """Whether energy or length is converted by a factor other than 1 (labels then need their units)."""
        return self.scale("energy") != 1.0 or self.scale("length") != 1.0

    def factor(self, label: str, *, virial: bool = False, where: str = "") -> Optional[float]:
        """The factor for ``label`` ('energy', 'forces', 'stress'; ``virial``: the stress was read
        from a virial key, an energy). None when no option gives it and none is needed (the file's
        own unit applies); UnitError when energy/length are rescaled but this label's unit is not given."""
        if label == "stress" and virial:
            label = "energy"
        conv = getattr(self, label)
        if conv is not None:
            return conv.factor
        if label != "energy" and self.rescales:
            given = ", ".join(f"{k}_unit={getattr(self, k).unit!r}" for k in ("energy", "length")
                              if getattr(self, k) is not None)
            raise UnitError(
                f"{where + ': ' if where else ''}{given} is given but {LABEL_OPTION[label]} is not; "
                f"cannot tell the unit of the {label} (pass {LABEL_OPTION[label]}=..., e.g. "
                f"'{(self.energy.unit if self.energy else 'eV')}/{(self.length.unit if self.length else 'Å')}"
                f"{'^3' if label == 'stress' else ''}')"
            )
        return None

    def for_unit(self, unit: str) -> Optional[float]:
        """The option factor for a property declared in ``unit`` (``'eV'`` -> ``energy_unit``,
        ``'eV/Å'`` -> ``forces_unit``, ``'eV/Å³'`` -> ``stress_unit``, ``'Å'`` -> ``length_unit``),
        or None when no option gives that unit."""
        name = _OPTION_OF_UNIT.get(str(unit).replace("^3", "³"))
        conv = getattr(self, name) if name else None
        return None if conv is None else conv.factor

    def describe(self) -> dict[str, str]:
        """quantity -> description of each conversion an option asks for (for ``reader.units``)."""
        out = {}
        for label, quantity in (("length", "positions"), ("energy", "energy"), ("forces", "forces"),
                                ("stress", "stress")):
            conv = getattr(self, label)
            if conv is not None:
                out[quantity] = f"{conv.describe()} [{label}_unit=]"
        return out


def is_identity(description: str) -> bool:
    """Whether a ``reader.units`` description converts nothing (every factor x1 or 'no conversion'):
    the CLI prints no note for those."""
    parts = [p for p in str(description).split("; ") if p.strip()]
    factors = [re.findall(r"\(x([-+0-9.eE]+)\)", p) for p in parts]
    return bool(parts) and all(
        ("no conversion" in p) or (f and all(float(x) == 1.0 for x in f)) for p, f in zip(parts, factors)
    )


__all__ = [
    "BASE_UNITS", "Conversion", "QUANTITIES", "UnitError", "conversion", "convert_factor", "parse_unit",
    "convert_to", "UNIT_OPTIONS", "LabelUnits", "is_identity",
]
