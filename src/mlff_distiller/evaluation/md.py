"""MD stability of a calculator: an NVE (velocity Verlet) run, its energy drift and whether it stayed physical.

Drift is the slope of a least-squares line through the total energy per atom against time
(eV/atom/ps); a conservative, smooth model conserves energy up to the integrator's error, so
a large drift means force jumps (no smooth cutoff) or an unstable model. "Physical" means: no two
atoms closer than ``min_distance`` Å, the temperature stayed below ``max_temperature`` K, and
every energy stayed finite. The run stops at the first unphysical frame.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np
from ase import Atoms, units

__all__ = ["nve_stability", "min_distance"]


def min_distance(atoms: Atoms, search: float = 2.0) -> float:
    """Smallest interatomic distance in Å (periodic images included); ``search`` when none is closer."""
    from ..data.neighbors import compute_neighbors

    cell = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    edges = compute_neighbors(atoms.positions, cell, atoms.pbc, search, with_vectors=True)
    return float(edges.distances.min()) if edges.distances.size else float(search)


def nve_stability(
    calc,
    atoms: Atoms,
    *,
    temperature: float = 300.0,
    timestep_fs: float = 0.5,
    steps: int = 2000,
    interval: int = 10,
    seed: int = 0,
    min_distance_threshold: float = 0.5,
    max_temperature: Optional[float] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> dict:
    """Run ``steps`` of NVE from ``atoms`` with Maxwell-Boltzmann velocities at ``temperature`` K.

    Records every ``interval`` steps. ``max_temperature`` defaults to 5 × ``temperature``.
    Returns a JSON-able dict: ``drift_ev_per_atom_per_ps``, ``max_abs_energy_change_ev_per_atom``,
    ``stable`` (bool), ``reason`` (why not, or None), ``steps_done``, ``time_ps``, ``min_distance``,
    ``max_temperature``, ``mean_temperature``, ``ms_per_step`` and the ``trace`` (t ps, Etot/atom eV,
    T K) for plots.
    """
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    from ..teachers.sampling import thermalize

    if steps < interval:
        raise ValueError(f"steps ({steps}) must be at least interval ({interval})")
    max_temperature = 5.0 * temperature if max_temperature is None else float(max_temperature)
    atoms = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    atoms.calc = calc
    thermalize(atoms, temperature, np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    n = len(atoms)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    t_ps, e_tot, temps = [], [], []
    d_min = math.inf
    reason = None

    def record(step: int) -> Optional[str]:
        nonlocal d_min
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        temp = ekin / (1.5 * units.kB * n)
        t_ps.append(step * timestep_fs * 1e-3)
        e_tot.append((epot + ekin) / n)
        temps.append(temp)
        d_min = min(d_min, min_distance(atoms))
        if not (math.isfinite(epot) and math.isfinite(ekin)):
            return f"non-finite energy at step {step}"
        if d_min < min_distance_threshold:
            return f"atoms closer than {min_distance_threshold} Å at step {step} ({d_min:.3f} Å)"
        if temp > max_temperature:
            return f"temperature {temp:.0f} K above {max_temperature:.0f} K at step {step}"
        return None

    reason = record(0)
    done = 0
    t0 = time.perf_counter()
    while reason is None and done < steps:
        dyn.run(interval)
        done += interval
        reason = record(done)
        if progress is not None:
            progress(interval)
    elapsed = time.perf_counter() - t0
    t, e = np.array(t_ps), np.array(e_tot)
    drift = float(np.polyfit(t, e, 1)[0]) if len(t) >= 2 and np.isfinite(e).all() else float("nan")
    return {
        "temperature_K": temperature,
        "timestep_fs": timestep_fs,
        "steps": steps,
        "steps_done": done,
        "time_ps": done * timestep_fs * 1e-3,
        "stable": reason is None,
        "reason": reason,
        "drift_ev_per_atom_per_ps": drift,
        "max_abs_energy_change_ev_per_atom": float(np.nanmax(np.abs(e - e[0]))) if len(e) else float("nan"),
        "min_distance": d_min,
        "min_distance_threshold": min_distance_threshold,
        "max_temperature": float(np.max(temps)),
        "max_temperature_allowed": max_temperature,
        "mean_temperature": float(np.mean(temps)),
        "ms_per_step": 1e3 * elapsed / max(done, 1),
        "trace": {"time_ps": t.tolist(), "total_energy_per_atom": e.tolist(), "temperature_K": temps},
    }
