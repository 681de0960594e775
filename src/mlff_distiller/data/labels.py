"""Which keys hold the labels, how stress/virial arrays become the contract's [3, 3] stress, the
lookup of declared extras (``find_extras``) and the check that a file's labels were found
(``inspect_labels``).

Shared by every reader that finds labels by name (ASE db, extended XYZ). The user configures
``energy_key``/``forces_key``/``stress_key``; when a key is left at its default, the common
spellings real files use are tried too (``force`` for ``forces``, ``virial`` for ``stress``...),
and MACE's convention (``REF_energy``, ``REF_forces``, ``REF_stress``, ``REF_virials``) after
them. An explicitly configured key is matched exactly.

When the keys find no label but the file has likely candidates (``dft_energy``, ``energy_U0``,
``total_energy``, ``*_forces``...), ``inspect_labels`` warns once (``LabelWarning``) naming the
file, the candidates and the option to pass; ``stats`` and ``validate`` say the same.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .errors import format_error
from .keys import STRUCTURE_LABELS, KeyRegistry

DEFAULT_KEYS = {label: label for label in STRUCTURE_LABELS}

#: spellings tried, in order, when a key is left at its default
DEFAULT_ALIASES = {
    "energy": ("energy", "Energy", "REF_energy"),
    "forces": ("forces", "force", "REF_forces"),
    "stress": ("stress", "stresses", "virial", "virials", "REF_stress", "REF_virials"),
}

#: the reader option naming each label's key
KEY_OPTIONS = {"energy": "energy_key", "forces": "forces_key", "stress": "stress_key"}

#: names that look like a label stored under another key (case-insensitive); see ``label_candidates``
_CANDIDATE_PATTERNS = {
    "energy": re.compile(r"energ|enrgy|^u0$|_u0$|^e_?(tot|total|dft|ref)$", re.IGNORECASE),
    "forces": re.compile(r"forc|grad", re.IGNORECASE),
    "stress": re.compile(r"stress|virial", re.IGNORECASE),
}
#: never candidates of a total energy: per-atom energies and energy weights
_NOT_ENERGY = re.compile(r"^(energies|.*_energies|.*weight.*|.*energy[-_]unit)$", re.IGNORECASE)


class LabelWarning(UserWarning):
    """A file whose label keys found no label although it holds keys that look like labels."""


def label_candidates(label: str, keys: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """The keys among ``keys`` that look like ``label`` stored under another name, in order
    (``dft_energy``, ``energy_U0``, ``total_energy``, ``U0`` for the energy; ``*forc*``/``*grad*``
    for forces; ``*stress*``/``*virial*`` for the stress)."""
    skip = set(exclude)
    out = []
    for key in keys:
        if key in skip or key in out or not isinstance(key, str):
            continue
        if _CANDIDATE_PATTERNS[label].search(key) and not (label == "energy" and _NOT_ENERGY.match(key)):
            out.append(key)
    return out


@dataclass(frozen=True)
class LabelKeys:
    """The configured key of each label (``energy_key``, ``forces_key``, ``stress_key``)."""

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"

    def key(self, label: str) -> str:
        return getattr(self, label)

    def candidates(self, label: str) -> tuple[str, ...]:
        """Keys to look for, in order: the aliases for a default key, else the key alone."""
        key = self.key(label)
        if key == DEFAULT_KEYS[label]:
            return DEFAULT_ALIASES[label]
        return (key,)

    def is_default(self, label: str) -> bool:
        return self.key(label) == DEFAULT_KEYS[label]


def is_virial_key(key: str) -> bool:
    """A key holding a virial W (stress = -W / V) rather than a stress."""
    return "virial" in key.lower()


def to_matrix(value, *, path: str, index: Optional[int], key: str) -> np.ndarray:
    """A stored [3, 3] quantity (stress, virial) as a [3, 3] array: Voigt 6 (xx, yy, zz, yz, xz,
    xy), 9 values in extxyz's column-major order (as ``Lattice``), [3, 3] or [1, 3, 3]."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise format_error(path, index, key, f"must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    if arr.shape in ((3, 3), (1, 3, 3)):
        return arr.reshape(3, 3)
    flat = arr.reshape(-1)
    if flat.size == 6:
        return voigt_to_matrix(flat)
    if flat.size == 9 and arr.ndim == 1:
        return flat.reshape(3, 3, order="F")
    raise format_error(path, index, key, f"must have 6 (Voigt), 9 or 3x3 values, got shape {arr.shape}")


def voigt_to_matrix(v: np.ndarray) -> np.ndarray:
    """ASE Voigt order (xx, yy, zz, yz, xz, xy) -> symmetric [3, 3]."""
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]], dtype=v.dtype)


def to_stress_matrix(
    value,
    *,
    key: str,
    cell: np.ndarray,
    path: str,
    index: int,
) -> np.ndarray:
    """Turn a stored stress or virial into the [3, 3] stress in eV/Å³ (ASE sign convention).

    Accepts Voigt 6, 9 values, [3, 3] or [1, 3, 3]. A key named like ``virial`` holds
    W and is converted with sigma = -W / V, V = |det(cell)| (an error when V is 0).
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise format_error(path, index, key, f"stress/virial must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.result_type(arr.dtype, np.float64) if arr.dtype.kind in "iu" else arr.dtype, copy=False)
    flat = arr.reshape(-1)
    if flat.size == 6:
        mat = voigt_to_matrix(flat)
    elif flat.size == 9:
        mat = flat.reshape(3, 3).copy()
    else:
        raise format_error(
            path, index, key, f"stress/virial must have 6 (Voigt), 9 or 3x3 values, got shape {arr.shape}"
        )
    if is_virial_key(key):
        volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
        if volume == 0.0:
            raise format_error(path, index, key, "a virial needs a cell with non-zero volume to become a stress")
        mat = -mat / volume
    return mat


def check_finite(value: np.ndarray, *, path: str, index: int, key: str) -> None:
    """Raise when a label holds NaN or inf."""
    arr = np.asarray(value)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise format_error(path, index, key, "label contains NaN or inf")


def check_forces_shape(forces: np.ndarray, natoms: int, *, path: str, index: int, key: str) -> np.ndarray:
    """Return forces as [N, 3] or raise when the shape does not match the atom count."""
    arr = np.asarray(forces)
    if arr.dtype.kind not in "fiu":
        raise format_error(path, index, key, f"forces must be numeric, got dtype {arr.dtype}")
    if arr.shape == (1, natoms, 3):
        arr = arr[0]
    if arr.shape != (natoms, 3):
        raise format_error(path, index, key, f"forces have shape {arr.shape}, expected ({natoms}, 3)")
    return arr


def to_energy(value, *, path: str, index: int, key: str) -> np.ndarray:
    """A scalar energy as a 0-d float array (accepts shapes (), (1,), (1, 1))."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise format_error(path, index, key, f"energy must be a number, got {value!r}")
    if arr.size != 1:
        raise format_error(path, index, key, f"energy must be a scalar, got shape {arr.shape}")
    arr = arr.reshape(())
    if arr.dtype.kind in "iu":
        if abs(int(arr)) > 2**53:  # float64 would round it silently
            raise format_error(path, index, key, f"integer energy {int(arr)} is beyond 2**53: not exact as a float")
        arr = arr.astype(np.float64)
    return arr


def finalize_labels(
    *,
    energy,
    forces,
    stress,
    keys: dict[str, str],
    natoms: int,
    cell: np.ndarray,
    path: str,
    index: int,
) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """Validate and normalise raw label values found under ``keys`` (label -> key actually used)."""
    if energy is not None:
        energy = to_energy(energy, path=path, index=index, key=keys["energy"])
        check_finite(energy, path=path, index=index, key=keys["energy"])
    if forces is not None:
        forces = check_forces_shape(forces, natoms, path=path, index=index, key=keys["forces"])
        check_finite(forces, path=path, index=index, key=keys["forces"])
    if stress is not None:
        stress = to_stress_matrix(stress, key=keys["stress"], cell=cell, path=path, index=index)
        check_finite(stress, path=path, index=index, key=keys["stress"])
    return energy, forces, stress


def find_extras(
    sources: Sequence[Mapping],
    names: Sequence[str],
    keys: KeyRegistry,
    *,
    natoms: int,
    path: str,
    index: int,
    decode: Optional[Callable[[Mapping, str], Any]] = None,
) -> dict:
    """The extras ``names`` found in ``sources`` (mappings searched in order, e.g. calculator
    results, key-value pairs, ``row.data``), each validated by its declaration (``Key.check``:
    dtype, shape, value checks). ``decode(source, name)`` reads a value (default: ``source[name]``).
    A key in no source is absent from the result."""
    out = {}
    for name in names:
        for source in sources:
            if name in source:
                value = decode(source, name) if decode is not None else source[name]
                out[name] = keys.require(name).check(value, natoms=natoms, path=path, index=index)
                break
    return out


# -- did the keys find the labels? ---------------------------------------------------------------

#: structures looked at when a dataset is opened (the CLI's ``stats``/``validate`` look at all)
PROBE_STRUCTURES = 20
#: structures whose keys are listed when looking for candidates
CANDIDATE_STRUCTURES = 5


@dataclass
class LabelReport:
    """What the label keys found in a file.

    total: structures in the file; looked_at: how many of them the counts cover (the first ones);
    found: label -> structures (of those) carrying it; keys: label or property -> the key(s) it
    was read from; candidates: label -> keys that may hold a label the keys found in none of them.
    """

    path: str
    total: int
    looked_at: int
    found: dict[str, int] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, list[str]] = field(default_factory=dict)

    @property
    def unlabeled(self) -> bool:
        """No structure looked at has an energy label."""
        return self.found.get("energy", 0) == 0

    def message(self) -> Optional[str]:
        """The warning text when a label was found nowhere but candidates exist, else None."""
        if not self.candidates:
            return None
        where = (f"any of its {self.total} structures" if self.looked_at >= self.total
                 else f"its first {self.looked_at} structures")
        parts = []
        for label, keys in self.candidates.items():
            tried = ", ".join(DEFAULT_ALIASES[label])
            option = KEY_OPTIONS[label]
            parts.append(f"no {label} label under the default keys ({tried}); candidates: {', '.join(keys)} "
                         f"-> pass {option}={keys[0]!r} (CLI --{option.replace('_', '-')} {keys[0]})")
        hint = " (and energy_unit=... / --energy-unit if those values are not in eV)" if "energy" in self.candidates else ""
        return f"{self.path}: in {where}: " + "; ".join(parts) + hint

    def as_dict(self) -> dict:
        return {"label_keys": dict(self.keys), "candidates": {k: list(v) for k, v in self.candidates.items()},
                "looked_at": self.looked_at}


def used_keys(reader) -> dict[str, str]:
    """label/property -> the key(s) ``reader`` has read it from so far (members of a multi-file
    reader merged; a reader that does not record them, e.g. packed, reads labels by their names)."""
    merged: dict[str, set] = {}
    for member in getattr(reader, "readers", None) or [reader]:
        for name, keys in (getattr(member, "used_keys", None) or {}).items():
            merged.setdefault(name, set()).update(keys)
    return {name: ", ".join(sorted(keys)) for name, keys in merged.items() if keys}


def inspect_labels(
    reader,
    structures: Optional[Sequence] = None,
    *,
    found: Optional[Mapping[str, int]] = None,
    first: int = PROBE_STRUCTURES,
    warn: bool = True,
) -> LabelReport:
    """Which labels ``reader``'s keys find, and candidates for those found nowhere.

    The counts come from ``found`` (label -> structures carrying it, e.g. a whole-file scan's),
    else from ``structures``, else from the first ``first`` structures read here. A label found
    in none of them while left at its default key gets candidates from the keys the first
    structures hold (``label_candidates``); ``warn``: then a ``LabelWarning`` says so, once.
    """
    total = len(reader)
    if found is None:
        if structures is None:
            structures = reader.read_many(range(min(first, total))) if total else []
        found = {label: sum(getattr(s, label) is not None for s in structures) for label in DEFAULT_KEYS}
        looked_at = len(structures)
    else:
        looked_at = total
    report = LabelReport(str(getattr(reader, "display_path", reader)), total, looked_at, dict(found))
    report.keys = used_keys(reader)
    for label in DEFAULT_KEYS:  # readers that do not record keys (packed) store labels under their names
        if found.get(label, 0) and label not in report.keys:
            report.keys[label] = label
    for label in DEFAULT_KEYS:
        if found.get(label, 0) or not reader.keys.is_default(label) or not total:
            continue
        held: list[str] = []
        for i in range(min(CANDIDATE_STRUCTURES, total)):
            try:
                held.extend(k for k in reader.label_keys(i) if k not in held)
            except (ValueError, KeyError, IndexError, OSError):
                break
        keys = label_candidates(label, held, exclude=DEFAULT_ALIASES[label])
        if keys:
            report.candidates[label] = keys
    text = report.message()
    if warn and text:
        warnings.warn(text, LabelWarning, stacklevel=3)
    return report
