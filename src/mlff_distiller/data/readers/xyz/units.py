"""Units declared in XYZ comment lines (dpdata writes ``energy-unit=hartree force-unit=hartree/bohr``).

Values are converted to eV and eV/Å (stress and virial with the energy unit); an unknown unit
is a ``DataFormatError`` naming the frame and the key. ``scan_units`` checks every unit key of
a file once, at construction, and describes the conversions for ``reader.units``.
"""

from __future__ import annotations

import mmap
import re
from typing import Any, Optional

import numpy as np
from ase import units

from ...errors import format_error

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
#: label -> the comment keys that give its unit
UNIT_KEYS = {"energy": ("energy-unit", "energy_unit"), "forces": ("force-unit", "force_unit")}
_UNIT_PATTERN = re.compile(rb"""(?<![\w-])(energy|force)[-_]unit\s*=\s*("[^"\n]*"|'[^'\n]*'|[^\s"']+)""")
_SI_NAMES = {"energy": "eV", "forces": "eV/Å"}


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


def unit_factor(path: str, index: int, label: str, unit: str) -> float:
    """Factor to eV (``label='energy'``) or eV/Å (``'forces'``); DataFormatError for an unknown unit."""
    try:
        return _FACTORS[label](unit)
    except KeyError:
        known = sorted(ENERGY_UNITS) if label == "energy" else ["<energy>/<length>", *sorted(LENGTH_UNITS)]
        raise format_error(
            path, index, UNIT_KEYS[label][0], f"unknown unit {unit!r} (known: {', '.join(known)})"
        ) from None


def scan_units(path: str, frame_starts: np.ndarray) -> dict[str, str]:
    """Check every ``energy-unit``/``force-unit`` in the file; label -> description of its conversions.

    frame_starts: [S] int64 byte offset of each frame (to name the frame of a bad unit).
    """
    seen: dict[str, list[str]] = {}
    if len(frame_starts) == 0:
        return {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        matches = [(m.start(), m.group(1), m.group(2)) for m in _UNIT_PATTERN.finditer(data)]
    for offset, name, raw_unit in matches:
        label = "energy" if name == b"energy" else "forces"
        unit = raw_unit.decode("utf-8", "replace").strip("\"'").strip()
        frame = max(0, int(np.searchsorted(frame_starts, offset, side="right")) - 1)
        factor = unit_factor(path, frame, label, unit)
        if factor == 1.0:
            continue
        descriptions = [f"{unit} -> {_SI_NAMES[label]} (x{factor!r})"]
        if label == "energy":
            descriptions.append(f"{unit}/Å^3 -> eV/Å^3, virial {unit} -> eV (x{factor!r})")
        for target, desc in zip((label, "stress"), descriptions):
            if desc not in seen.setdefault(target, []):
                seen[target].append(desc)
    return {label: "; ".join(descs) for label, descs in seen.items()}


def frame_unit(path: str, index: int, info: dict[str, Any], label: str) -> Optional[str]:
    """The unit a frame's comment ``info`` declares for ``label``, or None."""
    for key in UNIT_KEYS[label]:
        if key in info:
            value = info[key]
            if not isinstance(value, str):
                raise format_error(path, index, key, f"expected a unit name, got {value!r}")
            return value
    return None


def frame_factor(path: str, index: int, info: dict[str, Any], label: str) -> float:
    """The factor the frame's own unit keys give ``label`` ('energy', 'forces', 'stress'; the
    stress goes with the energy unit, as in ``convert_units``), 1.0 when it declares none."""
    unit = frame_unit(path, index, info, "forces" if label == "forces" else "energy")
    return 1.0 if unit is None else unit_factor(path, index, "forces" if label == "forces" else "energy", unit)


def convert_units(path: str, index: int, info: dict[str, Any], energy, forces, stress):
    """(energy eV, forces [N, 3] eV/Å, stress [3, 3] eV/Å³) after the frame's declared units.

    Values are left alone when the frame declares no unit. An energy unit other than eV with
    forces but no ``force-unit`` is an error (the forces' unit cannot be told).
    """
    e_unit, f_unit = frame_unit(path, index, info, "energy"), frame_unit(path, index, info, "forces")
    if e_unit is not None:
        factor = unit_factor(path, index, "energy", e_unit)
        if factor != 1.0:
            energy = None if energy is None else energy * factor
            stress = None if stress is None else stress * factor
            if forces is not None and f_unit is None:
                raise format_error(
                    path, index, "force-unit",
                    f"energy-unit={e_unit} is given but force-unit is not; cannot tell the forces' unit",
                )
    if f_unit is not None and forces is not None:
        factor = unit_factor(path, index, "forces", f_unit)
        if factor != 1.0:
            forces = forces * factor
    return energy, forces, stress


__all__ = [
    "ENERGY_UNITS",
    "LENGTH_UNITS",
    "UNIT_KEYS",
    "energy_factor",
    "force_factor",
    "unit_factor",
    "scan_units",
    "frame_unit",
    "frame_factor",
    "convert_units",
]
