"""Sample transforms: physics-preserving augmentation and invertible label normalisation.

A transform is a callable ``sample -> sample`` on the dict a dataset returns (``positions`` [N, 3] Å,
``cell`` [3, 3] Å, ``forces`` [N, 3] eV/Å, ``stress`` [3, 3] eV/Å³, ``energy`` [] eV, ... and optionally
``atoms``). Transforms never modify their input: they return a shallow copy of the dict holding new
tensors, so a dataset may cache samples safely.

Geometry conventions. Positions, forces and cell rows are row vectors, so an orthogonal matrix ``Q``
acts as ``x @ Q.T``; stress is a rank-2 tensor and becomes ``Q @ σ @ Q.T``; energy is unchanged.
Rotations are about the origin: with the cell rotated too, fractional coordinates (and hence the
periodic structure) are unchanged. A reflection leaves a left-handed cell (negative determinant), which
is the same lattice; ASE handles such cells.

Randomness. A random transform draws from, in this order: its own generator when it was given
``seed=`` (seeded with ``seed`` in the main process, and in a DataLoader worker with ``seed`` mixed
with that worker's torch seed, so workers and epochs differ); else the generator passed to
``transform.apply(sample, generator)`` — ``MolecularDataLoader(..., seed=)`` passes one of its own,
so augmentations are reproducible without touching torch's global RNG; else torch's global RNG
(``torch.manual_seed`` makes it reproducible; DataLoader workers are seeded by torch).

How each key turns under a rotation is declared in the key registry (``keys.py``: ``rotation`` is
'invariant', 'vector' or 'tensor'); ``keys=`` adds declarations and ``key_kinds=`` overrides the
rule of single keys.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from .keys import LIST, ROTATIONS, registry_of

Sample = dict[str, Any]

__all__ = [
    "Transform",
    "Compose",
    "RandomRotation",
    "RandomReflection",
    "AddNoise",
    "NormalizeEnergy",
    "NormalizeForces",
    "random_rotation_matrix",
    "random_reflection_matrix",
    "apply_orthogonal_transform",
]

# ----------------------------------------------------------------------------- base classes


class Transform(ABC):
    """Base class of every transform: subclass it and implement ``__call__(sample) -> sample``.

    Prefer returning a new dict (``out = dict(sample)``) over writing into ``sample``.
    ``repr`` lists the public attributes, so subclasses need not call ``super().__init__``.
    """

    @abstractmethod
    def __call__(self, sample: Sample) -> Sample:
        """Return the transformed sample."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply ``transforms`` in order. ``inverse`` undoes the invertible ones (the normalisations) in
    reverse order; augmentations are not undone (they change the frame or positions, not units)."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def apply(self, sample: Sample, generator: Optional[torch.Generator]) -> Sample:
        """Apply the transforms in order; random ones draw from ``generator`` (see module docstring)."""
        for t in self.transforms:
            apply = getattr(t, "apply", None)
            sample = apply(sample, generator) if callable(apply) else t(sample)
        return sample

    def inverse(self, data: Sample) -> Sample:
        """Map a normalised sample, batch or dict of predictions back to physical units."""
        for t in reversed(self.transforms):
            inv = getattr(t, "inverse", None)
            if callable(inv):
                data = inv(data)
        return data

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        body = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{body}\n])" if self.transforms else "Compose([])"


# ----------------------------------------------------------------------------- randomness


def _check_probability(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    return p


class _RandomTransform(Transform):
    """Shared machinery: probability ``p`` and the RNG (global torch RNG, or a private seeded one)."""

    def __init__(self, p: float, seed: Optional[int]):
        self.p = _check_probability(p)
        self.seed = None if seed is None else int(seed)
        self._generator: Optional[torch.Generator] = None
        self._generator_owner: Optional[tuple] = None

    def __call__(self, sample: Sample) -> Sample:
        return self.apply(sample, None)

    def apply(self, sample: Sample, generator: Optional[torch.Generator]) -> Sample:
        """Transform ``sample`` drawing from the own generator (``seed=``), else ``generator``,
        else torch's global RNG."""
        own = self._rng()
        return self._transform(sample, own if own is not None else generator)

    @abstractmethod
    def _transform(self, sample: Sample, rng: Optional[torch.Generator]) -> Sample:
        """The transform with random draws from ``rng`` (None: torch's global RNG)."""

    def _rng(self) -> Optional[torch.Generator]:
        """None unless ``seed`` was given; then a generator per process (and worker seed)."""
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        owner = (os.getpid(), None if info is None else info.seed)
        if self._generator is None or self._generator_owner != owner:
            if info is None:
                seed = self.seed
            else:  # mix the user's seed with this worker's (per-epoch) torch seed
                state = np.random.SeedSequence([self.seed, info.seed]).generate_state(2, np.uint32)
                seed = (int(state[0]) << 31) ^ int(state[1])
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_owner = owner
        return self._generator

    def _applies(self, rng: Optional[torch.Generator]) -> bool:
        if self.p <= 0.0:
            return False
        if self.p >= 1.0:
            return True
        return bool(torch.rand((), generator=rng, dtype=torch.float64) < self.p)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_generator"] = None
        state["_generator_owner"] = None
        return state


# ----------------------------------------------------------------------------- orthogonal matrices


def _quaternion_rows(w, x, y, z) -> list:
    """Rows of the rotation matrix of the unit quaternion (w, x, y, z) (floats or tensors)."""
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]


def random_rotation_matrix(
    n: Optional[int] = None, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Rotation matrices drawn uniformly (Haar measure) from SO(3), float64: [3, 3], or [n, 3, 3].

    A normalised 4-d Gaussian is a uniform unit quaternion, and unit quaternions cover SO(3) twice
    uniformly; the quaternion's rotation matrix is therefore Haar-distributed.
    """
    if n is None:  # one matrix: plain floats are ~20x faster than tiny tensor ops
        quat = torch.randn(4, generator=generator, dtype=torch.float64).tolist()
        norm = math.sqrt(sum(c * c for c in quat))
        return torch.tensor(_quaternion_rows(*(c / norm for c in quat)), dtype=torch.float64)
    quat = torch.randn((int(n), 4), generator=generator, dtype=torch.float64)
    rows = _quaternion_rows(*(quat / quat.norm(dim=-1, keepdim=True)).unbind(-1))
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def random_reflection_matrix(
    n: Optional[int] = None, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Improper orthogonal matrices (det = -1) drawn uniformly: a uniform rotation composed with the
    inversion ``-I`` (equivalently, with a mirror plane). float64, [3, 3] or [n, 3, 3]."""
    return -random_rotation_matrix(n, generator)


# ----------------------------------------------------------------------------- applying Q to a sample

_KINDS = ROTATIONS

#: how each ASE calculator property transforms (per-atom or not, the rule is the same)
_RESULT_KINDS: dict[str, str] = {
    "energy": "invariant",
    "free_energy": "invariant",
    "energies": "invariant",
    "charges": "invariant",
    "magmom": "invariant",
    "forces": "vector",
    "dipole": "vector",
    "polarization": "vector",
    "stress": "tensor",
    "stresses": "tensor",
    "dielectric_tensor": "tensor",
    "born_effective_charges": "tensor",
}


def _check_orthogonal(q: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    q = torch.as_tensor(q, dtype=torch.float64)
    if q.shape != (3, 3):
        raise ValueError(f"expected a [3, 3] orthogonal matrix, got shape {tuple(q.shape)}")
    err = (q @ q.T - torch.eye(3, dtype=torch.float64)).abs().max().item()
    if not err < 1e-10:
        raise ValueError(f"matrix is not orthogonal (max |Q Qᵀ - I| = {err:.3g})")
    return q


def _apply_to_tensor(x: torch.Tensor, q: torch.Tensor, kind: str) -> torch.Tensor:
    """Vectors (last dim 3): x @ Qᵀ; rank-2 tensors (last dims 3x3): Q x Qᵀ. Computed in float64."""
    if kind == "invariant":
        return x
    qd = q.to(x.device)
    xd = x.to(torch.float64)
    out = xd @ qd.T if kind == "vector" else qd @ xd @ qd.T
    return out.to(x.dtype)


def _apply_to_array(x: np.ndarray, q: np.ndarray, kind: str, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if kind == "vector":
        return x @ q.T
    if kind == "tensor":
        voigt = x.shape[-1] == 6
        full = voigt_6_to_full_3x3_stress(x) if voigt else x
        out = q @ full @ q.T
        return full_3x3_to_voigt_6_stress(out) if voigt else out
    raise AssertionError(name)


def _result_kind(name: str, value: Any) -> str:
    if name == "magmoms":  # collinear moments [N] are invariant; non-collinear [N, 3] are axial
        if np.ndim(value) == 1:
            return "invariant"
    elif name in _RESULT_KINDS:
        return _RESULT_KINDS[name]
    raise ValueError(
        f"cannot transform calculator result {name!r} (shape {np.shape(value)}) of sample['atoms'] "
        "under a rotation/reflection"
    )


def _calculator_results(atoms: Atoms) -> dict[str, Any]:
    calc = atoms.calc
    return {} if calc is None else dict(getattr(calc, "results", {}) or {})


def _relabelled(
    atoms: Atoms,
    positions: np.ndarray,
    cell: np.ndarray,
    results: dict,
    arrays: Optional[dict[str, np.ndarray]] = None,
) -> Atoms:
    """A copy of ``atoms`` with new positions/cell (and per-atom ``arrays``) and a
    SinglePointCalculator holding ``results``."""
    for c in atoms.constraints:
        if not isinstance(c, FixAtoms):
            raise ValueError(
                f"sample['atoms'] carries constraint {type(c).__name__}, which cannot be carried through "
                "a geometric transform; remove it"
            )
    new = atoms.copy()
    new.calc = None
    new.set_cell(cell, scale_atoms=False)
    new.set_positions(positions, apply_constraint=False)
    for name, value in (arrays or {}).items():
        new.arrays[name] = value
    if results:
        new.calc = SinglePointCalculator(new, **results)
    return new


#: per-atom arrays of an Atoms object that are unchanged by a rotation/reflection
_INVARIANT_ARRAYS = ("numbers", "positions", "masses", "tags", "initial_charges")


def _transform_atoms(atoms: Atoms, q: np.ndarray, kinds: Mapping[str, str]) -> Atoms:
    results = {}
    for name, value in _calculator_results(atoms).items():
        kind = _result_kind(name, value)
        results[name] = value if kind == "invariant" else _apply_to_array(value, q, kind, name)
    arrays = {}
    for name, value in atoms.arrays.items():
        kind = "vector" if name == "momenta" else kinds.get(name) if name not in _INVARIANT_ARRAYS else None
        if kind in ("vector", "tensor"):
            arrays[name] = _apply_to_array(value, q, kind, name)
        elif kind is None and name not in _INVARIANT_ARRAYS and value.ndim > 1 and np.issubdtype(value.dtype, np.floating):
            raise ValueError(
                f"cannot transform per-atom array {name!r} (shape {value.shape}) of sample['atoms'] "
                "under a rotation/reflection"
            )
    return _relabelled(atoms, atoms.positions @ q.T, atoms.cell.array @ q.T, results, arrays)


def apply_orthogonal_transform(
    sample: Sample, q: Union[torch.Tensor, np.ndarray], key_kinds: Optional[Mapping[str, str]] = None, keys=None
) -> Sample:
    """Apply the orthogonal matrix ``q`` [3, 3] (rotation or improper) to a sample, about the origin.

    Every key turns by its declared rotation (``keys.py``): positions/forces/cell rows/hvp/
    hvp_directions -> ``x @ q.T`` (last axis), stress -> ``q @ σ @ q.T``; energy, energies unchanged;
    integer and bool tensors (species, pbc, natoms, idx, ...) unchanged; ``atoms`` is copied with its
    positions, cell, momenta, declared arrays and calculator results transformed alike. ``keys`` adds
    declarations (a ``KeyRegistry``, Keys or a dataset); ``key_kinds`` overrides single keys with
    ``'vector'`` ([..., 3]), ``'tensor'`` ([..., 3, 3]) or ``'invariant'``. A floating tensor of an
    undeclared key with ndim >= 1 raises ``ValueError`` rather than being left silently untransformed.
    """
    return _apply(sample, _check_orthogonal(q), _merged_kinds(key_kinds, keys))


def _merged_kinds(key_kinds: Optional[Mapping[str, str]], keys=None) -> dict[str, str]:
    registry = registry_of(keys)
    kinds = {name: key.rotation for name, key in registry.items() if key.kind != LIST}
    for key, kind in (key_kinds or {}).items():
        if kind not in _KINDS:
            raise ValueError(f"key_kinds[{key!r}] must be one of {_KINDS}, got {kind!r}")
        kinds[key] = kind
    return kinds


def _apply(sample: Sample, q: torch.Tensor, kinds: Mapping[str, str]) -> Sample:
    out = dict(sample)
    for key, value in sample.items():
        if key == "atoms" and isinstance(value, Atoms):
            out[key] = _transform_atoms(value, q.numpy(), kinds)
        elif isinstance(value, (torch.Tensor, np.ndarray)):
            kind = kinds.get(key)
            if kind is None:
                floating = value.dtype.is_floating_point if isinstance(value, torch.Tensor) else (
                    np.issubdtype(value.dtype, np.floating))
                if floating and value.ndim >= 1:
                    raise ValueError(
                        f"don't know how sample key {key!r} transforms under rotation/reflection; "
                        f"declare it (keys=[Key({key!r}, ..., rotation=...)]) or pass "
                        f"key_kinds={{{key!r}: 'vector' | 'tensor' | 'invariant'}}"
                    )
                continue
            tensor = torch.as_tensor(value)
            new = _apply_to_tensor(tensor, q, kind)
            out[key] = new.numpy() if isinstance(value, np.ndarray) else new
    return out


class RandomRotation(_RandomTransform):
    """With probability ``p``, rotate the sample by a uniformly random rotation in SO(3).

    positions, forces and cell rows become ``x @ Rᵀ``, stress ``R σ Rᵀ``; energy is unchanged; ``atoms``
    (when present) is a rotated copy whose calculator returns the rotated labels. ``p=0`` is the
    identity, ``p=1`` always rotates. ``seed``: see the module docstring. ``key_kinds``, ``keys``: see
    :func:`apply_orthogonal_transform` (pass ``keys=dataset`` for keys declared on a dataset).
    """

    def __init__(
        self,
        p: float = 1.0,
        seed: Optional[int] = None,
        key_kinds: Optional[Mapping[str, str]] = None,
        *,
        keys=None,
    ):
        super().__init__(p, seed)
        self.key_kinds = dict(key_kinds) if key_kinds else None
        self._kinds = _merged_kinds(key_kinds, keys)

    def _matrix(self, rng: Optional[torch.Generator]) -> torch.Tensor:
        return random_rotation_matrix(generator=rng)

    def _transform(self, sample: Sample, rng: Optional[torch.Generator]) -> Sample:
        if not self._applies(rng):
            return sample
        return _apply(sample, self._matrix(rng), self._kinds)


class RandomReflection(RandomRotation):
    """With probability ``p``, apply a uniformly random improper orthogonal transform Q (det Q = -1,
    a random rotation composed with a mirror), exactly as :class:`RandomRotation` applies R."""

    def _matrix(self, rng: Optional[torch.Generator]) -> torch.Tensor:
        return random_reflection_matrix(generator=rng)


class AddNoise(_RandomTransform):
    """With probability ``p``, add i.i.d. Gaussian noise of standard deviation ``std`` (Å) to every
    Cartesian coordinate of ``positions``.

    It does NOT relabel: energy, forces and stress are returned unchanged, so after the noise they no
    longer belong to the perturbed positions. This is a denoising-style augmentation (the model learns
    to map slightly displaced inputs to the labels of the clean structure), not a physics-preserving
    one; use small ``std`` or leave it out when exact labels matter. Positions are not wrapped back
    into the cell. ``atoms`` (when present) is copied with the noisy positions and a calculator that
    returns the same, un-relabelled labels, so it stays consistent with the tensors.
    """

    def __init__(self, std: float = 0.01, p: float = 1.0, seed: Optional[int] = None):
        std = float(std)
        if not (std >= 0.0 and math.isfinite(std)):
            raise ValueError(f"AddNoise: std must be a finite non-negative length in Å, got {std}")
        self.std = std
        super().__init__(p, seed)

    def _transform(self, sample: Sample, rng: Optional[torch.Generator]) -> Sample:
        if not self._applies(rng):
            return sample
        pos = sample["positions"]
        noise = self.std * torch.randn(tuple(pos.shape), generator=rng, dtype=torch.float64)
        out = dict(sample)
        out["positions"] = (pos.to(torch.float64) + noise.to(pos.device)).to(pos.dtype)
        atoms = sample.get("atoms")
        if isinstance(atoms, Atoms):
            out["atoms"] = _relabelled(
                atoms, atoms.positions + noise.numpy(), atoms.cell.array, _calculator_results(atoms)
            )
        return out


# ----------------------------------------------------------------------------- normalisation


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def _keep_masked_zero(data: Sample, key: str, new: torch.Tensor) -> torch.Tensor:
    """In a batch, entries whose ``<key>_mask`` is False stay zero-filled."""
    mask = data.get(f"{key}_mask")
    if mask is None:
        return new
    mask = mask.to(torch.bool).reshape(mask.shape + (1,) * (new.ndim - mask.ndim))
    return torch.where(mask, new, torch.zeros((), dtype=new.dtype, device=new.device))


class NormalizeEnergy(Transform):
    """Normalise ``energy`` (eV) with fitted statistics; ``inverse`` maps back exactly.

    ``per_atom=True``: ``mean`` and ``std`` are per-atom statistics in eV/atom (e.g.
    ``stats['energy_per_atom_mean']``/``['energy_per_atom_std']``) and
    ``e = (E / N - mean) / std``, with N = ``natoms``; the inverse is ``E = (e * std + mean) * N``.
    ``per_atom=False``: ``mean``/``std`` are in eV per structure and ``e = (E - mean) / std``.

    Gradient consistency (positions stay in Å): ``-de/dx`` equals ``F / std`` (per_atom=False) or
    ``F / (N * std)`` (per_atom=True), while :class:`NormalizeForces` gives ``F / rms``. So normalised
    forces are the negative gradient of normalised energy only when per_atom=False and ``rms == std``;
    with per_atom=True they never are in general (the factor depends on N). A model that predicts
    energy and obtains forces by autograd should map its prediction to eV with :meth:`inverse_energy`
    (differentiable), take ``F = -dE/dx``, and compare ``F / rms`` with the normalised forces.

    Samples without ``energy`` (inference data) pass through unchanged. ``atoms`` keeps physical units.
    In a batch, entries with ``energy_mask`` False stay zero.
    """

    def __init__(self, mean: float, std: float, per_atom: bool = True):
        self.mean = float(mean)
        if not math.isfinite(self.mean):
            raise ValueError(f"NormalizeEnergy: mean must be finite, got {self.mean}")
        self.std = _positive("NormalizeEnergy: std", std)
        self.per_atom = bool(per_atom)

    def _natoms(self, natoms: Any, like: torch.Tensor) -> torch.Tensor:
        if natoms is None:
            raise ValueError("NormalizeEnergy(per_atom=True) needs natoms (sample['natoms'])")
        return torch.as_tensor(natoms, device=like.device).to(like.dtype)

    def normalize_energy(self, energy: torch.Tensor, natoms: Any = None) -> torch.Tensor:
        """eV -> normalised. energy [] or [B]; natoms [] or [B] (needed when per_atom)."""
        if self.per_atom:
            energy = energy / self._natoms(natoms, energy)
        return (energy - self.mean) / self.std

    def inverse_energy(self, energy: torch.Tensor, natoms: Any = None) -> torch.Tensor:
        """Normalised (a target or a model prediction) -> eV per structure. Differentiable."""
        energy = energy * self.std + self.mean
        if self.per_atom:
            energy = energy * self._natoms(natoms, energy)
        return energy

    def _map(self, data: Sample, fn) -> Sample:
        if "energy" not in data:
            return data
        out = dict(data)
        out["energy"] = _keep_masked_zero(data, "energy", fn(data["energy"], data.get("natoms")))
        return out

    def __call__(self, sample: Sample) -> Sample:
        return self._map(sample, self.normalize_energy)

    def inverse(self, data: Sample) -> Sample:
        """Map ``energy`` of a normalised sample, batch or prediction dict back to eV."""
        return self._map(data, self.inverse_energy)


class NormalizeForces(Transform):
    """Divide ``forces`` (eV/Å) by ``rms`` (eV/Å, e.g. ``stats['forces_rms']``); ``inverse``
    multiplies back. Positions, energy and stress are untouched; see :class:`NormalizeEnergy` for when
    normalised forces remain the gradient of normalised energy. Samples without ``forces`` pass
    through; ``atoms`` keeps physical units; padding zeros stay zero.
    """

    def __init__(self, rms: float):
        self.rms = _positive("NormalizeForces: rms", rms)

    def normalize_forces(self, forces: torch.Tensor) -> torch.Tensor:
        """eV/Å -> normalised; any shape ([N, 3], [B, M, 3], [T, 3])."""
        return forces / self.rms

    def inverse_forces(self, forces: torch.Tensor) -> torch.Tensor:
        """Normalised (target or prediction) -> eV/Å. Differentiable."""
        return forces * self.rms

    def _map(self, data: Sample, fn) -> Sample:
        if "forces" not in data:
            return data
        out = dict(data)
        out["forces"] = fn(data["forces"])
        return out

    def __call__(self, sample: Sample) -> Sample:
        return self._map(sample, self.normalize_forces)

    def inverse(self, data: Sample) -> Sample:
        """Map ``forces`` of a normalised sample, batch or prediction dict back to eV/Å."""
        return self._map(data, self.inverse_forces)
