"""Dataset statistics: sizes, label moments, element counts and per-element reference energies (E0s).

Everything is computed with numpy over concatenated arrays; the only Python loop is over
structures while collecting their arrays. Energies in eV, forces in eV/Å, stress in eV/Å³;
standard deviations are population ones (ddof=0).

Reference energies come from a least-squares fit (default), from isolated-atom frames
(``reference_energies='isolated'``: one-atom structures whose ``config_type`` is ``IsolatedAtom``,
MACE's convention, or ``isolated_atom``, libAtoms/wfl's) or are given ({Z: E0 eV}).
``exclude_isolated=True`` leaves those frames out of every other statistic (they are not training
structures; ``split.train_test_split(..., exclude_isolated_atoms=True)`` leaves them out of splits).
A long scan in a terminal shows a progress bar (``progress='auto'``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Iterable, Optional, Union

import numpy as np

from .structure import Structure

#: an element seen in fewer structures than this makes its fitted E0 unreliable (warning)
RARE_ELEMENT_STRUCTURES = 3
#: ``config_type`` values marking an isolated-atom frame (MACE; libAtoms/wfl)
ISOLATED_CONFIG_TYPES = ("IsolatedAtom", "isolated_atom")
#: scans of at least this many structures show a progress bar in a terminal (``progress='auto'``)
PROGRESS_MIN_STRUCTURES = 2000


def is_isolated_atom(structure: Structure, config_types: Sequence[str] = ISOLATED_CONFIG_TYPES) -> bool:
    """A one-atom structure whose ``config_type`` marks it as an isolated atom (its energy is E0)."""
    return structure.natoms == 1 and structure.extras.get("config_type") in tuple(config_types)


def progress_bar(total: int, desc: str):
    """A tqdm bar (``update(n)``, ``close()``) for a scan of ``total`` structures when stderr is a
    terminal and the scan is long (``PROGRESS_MIN_STRUCTURES``), else None."""
    if total < PROGRESS_MIN_STRUCTURES or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="structure", leave=False, dynamic_ncols=True)


def with_progress(items: Iterable, total: Optional[int], progress, desc: str = "statistics") -> Iterable:
    """``items`` wrapped in a tqdm bar: ``progress`` True, or 'auto' (a terminal on stderr and at
    least ``PROGRESS_MIN_STRUCTURES`` items), or a callable ``progress(items, total)``; else as is."""
    if callable(progress):
        return progress(items, total)
    if progress == "auto":
        progress = (total or 0) >= PROGRESS_MIN_STRUCTURES and sys.stderr.isatty()
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit="structure", leave=False, dynamic_ncols=True)


class StatisticsWarning(UserWarning):
    """A statistic that was computed but should not be trusted (rank-deficient E0 fit, rare element)."""


def fit_reference_energies(
    composition: np.ndarray, energies: np.ndarray, elements: np.ndarray
) -> tuple[dict[int, float], int]:
    """Least-squares per-element energies E0 with ``composition @ E0 ≈ energies``.

    composition: [S, E] atom count of each element per structure; energies: [S] eV;
    elements: [E] atomic numbers. Returns ({Z: E0 in eV}, rank). A rank below E (e.g. every
    structure has the same stoichiometry) or an element in very few structures gives a
    ``StatisticsWarning``; the minimum-norm solution is returned then.
    """
    if composition.shape[0] == 0 or composition.shape[1] == 0:
        return {}, 0
    a = composition.astype(np.float64)
    solution, _, rank, _ = np.linalg.lstsq(a, energies.astype(np.float64), rcond=None)
    if rank < a.shape[1]:
        warnings.warn(
            f"per-element reference energies are under-determined (rank {rank} < {a.shape[1]} elements: "
            "compositions are linearly dependent, e.g. one stoichiometry only); returning the "
            "minimum-norm least-squares solution",
            StatisticsWarning,
            stacklevel=3,
        )
    present_in = (composition > 0).sum(axis=0)
    rare = [int(z) for z, n in zip(elements, present_in) if n < RARE_ELEMENT_STRUCTURES]
    if rare and rank == a.shape[1]:
        warnings.warn(
            f"elements {rare} appear in fewer than {RARE_ELEMENT_STRUCTURES} labeled structures; "
            "their reference energies are poorly determined",
            StatisticsWarning,
            stacklevel=3,
        )
    return {int(z): float(e) for z, e in zip(elements, solution)}, int(rank)


def _moments(values: np.ndarray) -> tuple[Optional[float], Optional[float]]:
    if values.size == 0:
        return None, None
    return float(values.mean()), float(values.std())


def isolated_reference_energies(isolated: list[tuple[int, Structure]]) -> dict[int, float]:
    """{Z: E0 eV} from isolated-atom frames ((scan position, structure) pairs). Frames of one
    element that disagree give a StatisticsWarning (the first is used); a frame without an
    energy is a ValueError naming it."""
    e0: dict[int, float] = {}
    first: dict[int, int] = {}
    for row, s in isolated:
        if s.energy is None:
            raise ValueError(f"isolated-atom frame {row} (config_type={s.extras.get('config_type')!r}) has no energy label")
        z, energy = int(s.numbers[0]), float(s.energy)
        if z in e0:
            if energy != e0[z]:
                warnings.warn(f"isolated-atom frames {first[z]} and {row} of element {z} differ in energy "
                              f"({e0[z]!r} vs {energy!r} eV); using frame {first[z]}", StatisticsWarning, stacklevel=4)
            continue
        e0[z], first[z] = energy, row
    return e0


def compute_statistics(
    structures: Iterable[Structure],
    *,
    reference_energies: Union[str, Mapping[int, float]] = "fit",
    exclude_isolated: bool = False,
    isolated_config_types: Sequence[str] = ISOLATED_CONFIG_TYPES,
    progress=None,
    total: Optional[int] = None,
) -> dict:
    """Statistics of ``structures`` (labels missing from some structures are skipped for them).

    Returns a dict with: num_samples, num_atoms, natoms_min/max/mean/std, num_with_energy,
    num_with_forces, num_with_stress, energy_mean/std/min/max (eV), energy_per_atom_mean/std
    (eV/atom), forces_rms (eV/Å, over all components), forces_max_norm, stress_rms (eV/Å³),
    elements [Z...], element_counts {Z: atoms}, element_structure_counts {Z: structures},
    reference_energies {Z: E0 eV}, reference_energies_source ('fit', 'isolated' or 'given'),
    reference_energies_rank (of the fit; None otherwise), energy_per_atom_residual_std (eV/atom
    after subtracting E0s), isolated_atoms [scan positions of the isolated-atom frames], num_excluded.

    reference_energies: 'fit' (least squares, ``fit_reference_energies``), 'isolated' (from the
        isolated-atom frames, see module docstring; an element without one is a ValueError) or a
        mapping {Z: E0 eV}.
    exclude_isolated: leave the isolated-atom frames out of every other statistic.
    progress: None/False, True, 'auto' or a callable (see ``with_progress``); total: the number of
        structures (for the bar).
    """
    if isinstance(reference_energies, str) and reference_energies not in ("fit", "isolated"):
        raise ValueError(f"reference_energies must be 'fit', 'isolated' or a dict {{Z: E0}}, got {reference_energies!r}")
    isolated: list[tuple[int, Structure]] = []
    natoms_list: list[int] = []
    numbers_list: list[np.ndarray] = []
    energies: list[float] = []
    energy_rows: list[int] = []
    force_sq_sum = 0.0
    force_count = 0
    force_max = 0.0
    n_forces = 0
    stress_sq_sum = 0.0
    n_stress = 0
    kept = 0
    for position, s in enumerate(with_progress(structures, total, progress)):
        if is_isolated_atom(s, isolated_config_types):
            isolated.append((position, s))
            if exclude_isolated:
                continue
        row = kept
        kept += 1
        natoms_list.append(s.natoms)
        numbers_list.append(np.asarray(s.numbers, dtype=np.int64))
        if s.energy is not None:
            energies.append(float(s.energy))
            energy_rows.append(row)
        if s.forces is not None:
            f = np.asarray(s.forces, dtype=np.float64)
            force_sq_sum += float(np.einsum("ij,ij->", f, f))
            force_count += f.size
            if f.size:
                force_max = max(force_max, float(np.sqrt((f * f).sum(axis=1)).max()))
            n_forces += 1
        if s.stress is not None:
            st = np.asarray(s.stress, dtype=np.float64)
            stress_sq_sum += float((st * st).sum())
            n_stress += 1

    natoms = np.asarray(natoms_list, dtype=np.int64)
    n = natoms.size
    stats: dict = {"num_samples": int(n), "num_atoms": int(natoms.sum())}
    if n:
        stats.update(
            natoms_min=int(natoms.min()),
            natoms_max=int(natoms.max()),
            natoms_mean=float(natoms.mean()),
            natoms_std=float(natoms.std()),
        )
    else:
        stats.update(natoms_min=None, natoms_max=None, natoms_mean=None, natoms_std=None)

    numbers = np.concatenate(numbers_list) if numbers_list else np.zeros(0, np.int64)
    structure_of_atom = np.repeat(np.arange(n), natoms)
    elements, element_index = np.unique(numbers, return_inverse=True)
    composition = np.zeros((n, elements.size), dtype=np.int64)
    np.add.at(composition, (structure_of_atom, element_index), 1)
    stats["elements"] = [int(z) for z in elements]
    stats["element_counts"] = {int(z): int(c) for z, c in zip(elements, composition.sum(axis=0))}
    stats["element_structure_counts"] = {int(z): int(c) for z, c in zip(elements, (composition > 0).sum(axis=0))}

    e = np.asarray(energies, dtype=np.float64)
    rows = np.asarray(energy_rows, dtype=np.int64)
    stats["num_with_energy"] = int(e.size)
    stats["num_with_forces"] = int(n_forces)
    stats["num_with_stress"] = int(n_stress)
    stats["energy_mean"], stats["energy_std"] = _moments(e)
    stats["energy_min"] = float(e.min()) if e.size else None
    stats["energy_max"] = float(e.max()) if e.size else None
    e_per_atom = e / np.maximum(natoms[rows], 1) if e.size else e
    stats["energy_per_atom_mean"], stats["energy_per_atom_std"] = _moments(e_per_atom)
    stats["forces_rms"] = float(np.sqrt(force_sq_sum / force_count)) if force_count else None
    stats["forces_max_norm"] = force_max if n_forces else None
    stats["stress_rms"] = float(np.sqrt(stress_sq_sum / (9 * n_stress))) if n_stress else None

    labeled_composition = composition[rows]
    # fit only the elements that occur in labeled structures
    used = labeled_composition.sum(axis=0) > 0
    stats["isolated_atoms"] = [position for position, _ in isolated]
    stats["num_excluded"] = len(isolated) if exclude_isolated else 0
    if isinstance(reference_energies, str) and reference_energies == "fit":
        e0, rank = fit_reference_energies(labeled_composition[:, used], e, elements[used])
        stats["reference_energies_source"] = "fit"
    else:
        if isinstance(reference_energies, str):  # 'isolated'
            e0 = isolated_reference_energies(isolated)
            source, what = "isolated", f"isolated-atom frames (config_type in {list(isolated_config_types)})"
        else:
            e0 = {int(z): float(v) for z, v in reference_energies.items()}
            source, what = "given", "the reference energies given"
        lacking = [int(z) for z in elements[used] if int(z) not in e0]
        if lacking:
            raise ValueError(f"no reference energy for elements {lacking} in {what}; "
                             "use reference_energies='fit' or give them")
        e0 = {int(z): e0[int(z)] for z in elements[used]} if source == "isolated" else e0
        rank = None
        stats["reference_energies_source"] = source
    stats["reference_energies"] = e0
    stats["reference_energies_rank"] = rank
    if e0 and used.any():
        e0_vec = np.array([e0[int(z)] for z in elements[used]])
        residual = (e - labeled_composition[:, used] @ e0_vec) / np.maximum(natoms[rows], 1)
        stats["energy_per_atom_residual_std"] = float(residual.std())
    else:
        stats["energy_per_atom_residual_std"] = None
    return stats
