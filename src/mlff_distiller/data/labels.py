"""Which keys hold the labels, how stress/virial arrays become the contract's [3, 3] stress, and the
lookup of declared extras (``find_extras``).

Shared by every reader that finds labels by name (ASE db, extended XYZ). The user configures
``energy_key``/``forces_key``/``stress_key``; when a key is left at its default, the common
spellings real files use are tried too (``force`` for ``forces``, ``virial`` for ``stress``...).
An explicitly configured key is matched exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .errors import format_error
from .keys import STRUCTURE_LABELS, KeyRegistry

DEFAULT_KEYS = {"energy": "energy", "forces": "forces", "stress": "stress"}

#: spellings tried, in order, when a key is left at its default
DEFAULT_ALIASES = {
    "energy": ("energy", "Energy"),
    "forces": ("forces", "force"),
    "stress": ("stress", "stresses", "virial", "virials"),
}


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
