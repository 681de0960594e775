"""PNG plots of an evaluation (matplotlib, Agg backend): parity of energies and forces, error vs size, NVE trace."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .metrics import Errors

__all__ = ["write_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _parity(ax, ref: np.ndarray, pred: np.ndarray, label: str, unit: str, mae: float) -> None:
    ax.scatter(ref, pred, s=4, alpha=0.5, linewidths=0)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"teacher {label} ({unit})")
    ax.set_ylabel(f"student {label} ({unit})")
    ax.set_title(f"{label}: MAE {mae:.4g} {unit}")
    ax.set_aspect("equal")


def write_plots(errors: Errors, out_dir: Path, md: Optional[dict] = None) -> dict[str, str]:
    """Write ``parity_energy.png``, ``parity_forces.png``, ``error_vs_size.png`` (and ``nve.png``
    when ``md`` holds a trace) into ``out_dir``; return {name: file name}."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}

    from ..data.publish import write_atomic

    def save(fig, name: str) -> None:
        fig.tight_layout()
        write_atomic(out_dir / f"{name}.png", lambda fh: fig.savefig(fh, format="png"))
        plt.close(fig)
        files[name] = f"{name}.png"

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    _parity(ax, errors.energy_per_atom_ref, errors.energy_per_atom_pred, "energy per atom", "eV/atom",
            errors.summary["energy_per_atom"]["mae"])
    save(fig, "parity_energy")

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    _parity(ax, errors.forces_ref.ravel(), errors.forces_pred.ravel(), "force component", "eV/Å",
            errors.summary["forces"]["mae"])
    save(fig, "parity_forces")

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.scatter(errors.natoms, errors.force_mae_per_structure * 1e3, s=8, alpha=0.6)
    ax.set_xlabel("atoms in structure")
    ax.set_ylabel("force MAE (meV/Å)")
    ax.set_title("force error per held-out structure vs size")
    save(fig, "error_vs_size")

    if md and md.get("trace"):
        trace = md["trace"]
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(5.5, 4.5), dpi=120, sharex=True)
        e = np.asarray(trace["total_energy_per_atom"])
        a1.plot(trace["time_ps"], (e - e[0]) * 1e3)
        a1.set_ylabel("ΔE_total (meV/atom)")
        a1.set_title(f"student NVE: drift {md['drift_ev_per_atom_per_ps'] * 1e3:.3g} meV/atom/ps")
        a2.plot(trace["time_ps"], trace["temperature_K"])
        a2.set_ylabel("T (K)")
        a2.set_xlabel("time (ps)")
        save(fig, "nve")
    return files
