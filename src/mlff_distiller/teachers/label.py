"""``label_structure``: one structure through a teacher -> a ``Structure`` with its labels.

Labels: energy [] eV, forces [N, 3] eV/Å, stress [3, 3] eV/Å³ for fully periodic cells (when the
calculator implements it), per-atom ``energies`` [N] eV when the calculator returns them in the same
calculation, and with ``hvp=K`` the Hessian-vector products ``hvp`` [N, K, 3] eV/Å² along
``hvp_directions`` [N, K, 3] (see ``hvp.py`` for the sign convention). Provenance keys found in
``atoms.info`` (``sample_method``, ``sample_seed``, ``sample_temperature``, ``sample_group``,
``sample_step``, ``config_type``, ``source_index``) are copied into ``Structure.extras``
(``label_file`` then sets ``source_index`` to the structure's index in its input).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..data.keys import PROVENANCE_KEYS, STRUCTURE_LABELS
from ..data.structure import Structure
from .hvp import cartesian_directions, compute_hvp, random_directions


def provenance(info: dict) -> dict:
    """The provenance entries of an ``atoms.info`` / extras dict, as plain Python scalars."""
    out = {}
    for key in PROVENANCE_KEYS:
        if key in info and info[key] is not None:
            value = info[key]
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _check_finite(name: str, value, atoms) -> None:
    if value is not None and not np.all(np.isfinite(value)):
        raise ValueError(f"non-finite {name} for {atoms.symbols}; refusing to label it")


#: the calculator results a sample keeps: the structure labels and per-atom energies
_KEPT_RESULTS = STRUCTURE_LABELS + ("energies",)


def kept_results(atoms, calc) -> Optional[dict]:
    """The calculator's energy/forces(/stress/energies) when they belong to ``atoms`` exactly as it is
    now (same positions, cell, numbers), else None. Lets MD/relaxation samples keep the teacher call
    that produced them instead of labeling the same geometry twice."""
    results = getattr(calc, "results", None) or {}
    if "energy" not in results or "forces" not in results or getattr(calc, "atoms", None) is None:
        return None
    if calc.check_state(atoms, tol=0.0):
        return None
    return {k: np.array(v, dtype=np.float64) for k, v in results.items() if k in _KEPT_RESULTS}


def _compute(atoms, calc, want_stress: bool) -> dict:
    atoms.calc = calc
    out = {
        "energy": float(atoms.get_potential_energy()),
        "forces": np.array(atoms.get_forces(), dtype=np.float64),
    }
    if want_stress:
        out["stress"] = np.array(atoms.get_stress(voigt=True), dtype=np.float64)
    energies = calc.results.get("energies")  # from the calculation just made for these positions
    if energies is not None:
        out["energies"] = np.array(energies, dtype=np.float64)
    return out


def label_structure(
    teacher_or_calc,
    atoms,
    *,
    hvp: int = 0,
    hvp_step: Optional[float] = None,
    rng: Optional[np.random.Generator] = None,
    hessian: bool = False,
    hvp_method: str = "auto",
    results: Optional[dict] = None,
    calc=None,
) -> Structure:
    """Label ``atoms`` with a teacher (a ``Teacher``, a name or an ASE calculator instance).

    hvp:        number K of random unit directions for Hessian-vector products (0: none)
    hvp_step:   central-difference step in Å (default: the teacher's ``default_hvp_step``, else 1e-3)
    rng:        draws the directions (required when ``hvp > 0``); labeling uses ``structure_rng(seed, i)``
    hessian:    store the full Hessian as K = 3N Cartesian directions (small molecules; 6N force calls)
    hvp_method: ``"auto"`` (teacher autograd when it has one, else finite differences), ``"fd"``, ``"autograd"``
    results:    energy/forces(/stress/energies) already computed for exactly these positions (MD samples)
    calc:       a calculator of this teacher to reuse (one per process); a fresh one when None

    ``atoms`` is not modified. Raises ValueError for non-finite positions or labels, a structure the
    teacher cannot label, or ``hvp > 0`` without ``rng``.
    """
    from .base import Teacher
    from .registry import as_teacher

    if isinstance(teacher_or_calc, (Teacher, str)):
        teacher = as_teacher(teacher_or_calc)
        teacher.check(atoms)
    else:  # a bare ASE calculator
        teacher, calc = None, calc if calc is not None else teacher_or_calc
    for name, value in (("positions", atoms.positions), ("cell", atoms.cell.array)):
        _check_finite(name, value, atoms)
    if hvp < 0:
        raise ValueError(f"hvp must be >= 0 (number of directions), got {hvp}")
    if hvp > 0 and hessian:
        raise ValueError("pass either hvp=K (random directions) or hessian=True (all 3N directions), not both")
    if hvp > 0 and rng is None:
        raise ValueError("hvp > 0 needs an rng for the directions (e.g. structure_rng(seed, index))")
    calc = calc if calc is not None else teacher.calculator()
    work = atoms.copy()
    work.set_constraint()
    periodic = bool(np.all(work.pbc)) and "stress" in getattr(calc, "implemented_properties", ())
    if results is None:
        if hasattr(calc, "reset"):
            calc.reset()  # no state from an earlier structure (tblite's SCF restart, cached results)
        labels = _compute(work, calc, periodic)
    else:
        labels = {k: np.array(v, dtype=np.float64) for k, v in results.items()}
        if "energy" not in labels or "forces" not in labels:
            raise ValueError("results= must hold at least energy and forces")
        labels["energy"] = float(labels["energy"])
        if not periodic:
            labels.pop("stress", None)
    stress = labels.get("stress")
    if stress is not None:
        from ase.stress import voigt_6_to_full_3x3_stress

        stress = voigt_6_to_full_3x3_stress(stress) if np.shape(stress) == (6,) else np.asarray(stress)
    extras = provenance(atoms.info)
    n = len(work)
    if hvp > 0 or hessian:
        directions = cartesian_directions(n) if hessian else random_directions(n, hvp, rng)
        step = float(hvp_step) if hvp_step is not None else getattr(teacher, "default_hvp_step", 1e-3)
        extras["hvp"] = compute_hvp(teacher, calc, work, directions, step, hvp_method)
        extras["hvp_directions"] = directions
    if labels.get("energies") is not None:
        extras["energies"] = labels["energies"]
    structure = Structure(
        positions=np.array(atoms.positions, dtype=np.float64),
        numbers=np.array(atoms.numbers, dtype=np.int64),
        cell=np.array(atoms.cell.array, dtype=np.float64),
        pbc=np.array(atoms.pbc, dtype=bool),
        energy=np.asarray(labels["energy"], dtype=np.float64),
        forces=np.asarray(labels["forces"], dtype=np.float64),
        stress=None if stress is None else np.asarray(stress, dtype=np.float64),
        extras=extras,
    )
    for name in STRUCTURE_LABELS:
        _check_finite(name, getattr(structure, name), atoms)
    for name in ("energies", "hvp"):
        _check_finite(name, extras.get(name), atoms)
    if structure.forces.shape != (n, 3):
        raise ValueError(f"teacher {getattr(teacher, 'name', type(calc).__name__)!r} returned forces of shape {list(structure.forces.shape)} for {n} atoms")
    return structure


def sample_to_structure(atoms) -> Structure:
    """A ``Structure`` of a sample: geometry, provenance (``extras``) and the teacher results it carries
    (an MD/relaxation frame's energy, forces, stress for periodic cells, per-atom energies), float64."""
    from ase.stress import voigt_6_to_full_3x3_stress

    extras = provenance(atoms.info)
    labels: dict = {}
    results = getattr(atoms.calc, "results", None) or {}
    if "energy" in results and "forces" in results:
        labels["energy"] = np.asarray(float(results["energy"]), dtype=np.float64)
        labels["forces"] = np.array(results["forces"], dtype=np.float64)
        if "stress" in results and np.all(atoms.pbc):
            stress = np.asarray(results["stress"], dtype=np.float64)
            labels["stress"] = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress
        if "energies" in results:
            extras["energies"] = np.array(results["energies"], dtype=np.float64)
    return Structure(
        positions=np.array(atoms.positions, dtype=np.float64),
        numbers=np.array(atoms.numbers, dtype=np.int64),
        cell=np.array(atoms.cell.array, dtype=np.float64),
        pbc=np.array(atoms.pbc, dtype=bool),
        extras=extras,
        **labels,
    )


__all__ = ["sample_to_structure", "label_structure", "kept_results", "provenance", "PROVENANCE_KEYS"]
