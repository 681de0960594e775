"""Hessian-vector products of a teacher: H·v with H = ∂²E/∂x∂x (eV/Å²), x the 3N Cartesian positions.

Sign convention: ``hvp[:, k] = H·v_k``. From forces F = −∂E/∂x, central differences give

    H·v ≈ −(F(x + h v) − F(x − h v)) / (2h)          (error O(h²) + force noise / h)

so a stable minimum has v·H·v > 0. Directions ``v_k`` are unit vectors over all 3N components of a
structure, stored per atom as ``[N, K, 3]``; they come from the RNG given to ``random_directions``
(``structure_rng(seed, index)`` in labeling), so they do not depend on worker count or resume.
A full Hessian is the special case ``directions = cartesian_directions(N)`` (K = 3N, v_k = e_k):
``hvp[a, k, :]`` is then H[3a:3a+3, k], i.e. the [N, 3N, 3] array holds all of H.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

#: mixed into the per-structure seed so HVP directions never reuse another stream's numbers
_HVP_STREAM = 0x48_56_50  # "HVP"


def structure_rng(seed: int, index: int, stream: int = _HVP_STREAM) -> np.random.Generator:
    """The RNG of structure ``index`` in a run with ``seed`` (independent of order and workers)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def random_directions(natoms: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``[natoms, k, 3]`` float64: k Gaussian random directions, each of norm 1 over its 3N components."""
    if natoms < 1 or k < 1:
        raise ValueError(f"need natoms >= 1 and k >= 1, got natoms={natoms}, k={k}")
    v = rng.standard_normal((k, natoms, 3))
    v /= np.linalg.norm(v.reshape(k, -1), axis=1)[:, None, None]
    return np.ascontiguousarray(v.transpose(1, 0, 2))


def cartesian_directions(natoms: int) -> np.ndarray:
    """``[natoms, 3N, 3]``: the 3N Cartesian unit vectors (e_k has a 1 at atom k // 3, axis k % 3)."""
    return np.ascontiguousarray(np.eye(3 * natoms).reshape(3 * natoms, natoms, 3).transpose(1, 0, 2))


def _forces(calc, atoms) -> np.ndarray:
    atoms.calc = calc
    return np.array(atoms.get_forces(), dtype=np.float64)


def hvp_finite_difference(calc, atoms, directions: np.ndarray, step: float) -> np.ndarray:
    """``[N, K, 3]`` H·v_k by central differences of ``calc``'s forces at ``atoms ± step·v_k`` (Å).

    ``atoms`` is not modified (a copy without constraints is displaced). 2K force calls.
    """
    directions = np.asarray(directions, dtype=np.float64)
    n = len(atoms)
    if directions.ndim != 3 or directions.shape[0] != n or directions.shape[2] != 3:
        raise ValueError(f"directions must be [N={n}, K, 3], got {list(directions.shape)}")
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"hvp step must be a finite number > 0 (Å), got {step}")
    probe = atoms.copy()
    probe.set_constraint()
    x0 = np.array(atoms.positions, dtype=np.float64)
    out = np.empty_like(directions)
    for k in range(directions.shape[1]):
        v = directions[:, k, :]
        probe.positions[:] = x0 + step * v
        f_plus = _forces(calc, probe)
        probe.positions[:] = x0 - step * v
        f_minus = _forces(calc, probe)
        out[:, k, :] = -(f_plus - f_minus) / (2.0 * step)
    return out


def hessian_finite_difference(calc, atoms, step: float) -> np.ndarray:
    """``[3N, 3N]`` Hessian ∂²E/∂x∂x (eV/Å²) by central differences (6N force calls; not symmetrised)."""
    n = len(atoms)
    hvp = hvp_finite_difference(calc, atoms, cartesian_directions(n), step)  # [N, 3N, 3]
    return hvp.transpose(0, 2, 1).reshape(3 * n, 3 * n)


def compute_hvp(teacher, calc, atoms, directions: np.ndarray, step: float, method: str = "auto") -> np.ndarray:
    """H·v by ``method``: ``"autograd"`` (the teacher's own ``hvp``; error if it has none),
    ``"fd"`` (central differences of forces) or ``"auto"`` (autograd when the teacher has it)."""
    if method not in ("auto", "fd", "autograd"):
        raise ValueError(f"hvp method must be 'auto', 'fd' or 'autograd', got {method!r}")
    result: Optional[np.ndarray] = None
    if method in ("auto", "autograd") and teacher is not None:
        result = teacher.hvp(atoms, directions)
    if result is None:
        if method == "autograd":
            name = getattr(teacher, "name", type(calc).__name__)
            raise ValueError(f"teacher {name!r} has no autograd Hessian-vector product; use hvp_method='fd'")
        result = hvp_finite_difference(calc, atoms, directions, step)
    return np.asarray(result, dtype=np.float64)
