"""Errors of predictions against reference labels: energy per atom, forces, stress (MAE, RMSE).

Inputs are per-structure records (dicts) with ``energy`` (eV), ``forces`` [N, 3] eV/Å and
optionally ``stress`` [3, 3] eV/Å³; the references are the teacher's labels. Force errors are
over every Cartesian component of every atom of every structure; energy errors are of the
energy per atom; stress errors are over the 9 components of the structures whose reference has
a stress (periodic cells).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..data.keys import STRUCTURE_LABELS

__all__ = ["Errors", "compute_errors", "mae_rmse"]

#: labels every reference structure must have (a stress only where the cell is periodic)
_REQUIRED_LABELS = tuple(label for label in STRUCTURE_LABELS if label != "stress")


def mae_rmse(diff: np.ndarray) -> dict:
    """``{"mae", "rmse", "count"}`` of an array of differences (NaN when empty)."""
    diff = np.asarray(diff, dtype=np.float64).ravel()
    if diff.size == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "count": 0}
    return {"mae": float(np.abs(diff).mean()), "rmse": float(np.sqrt(np.mean(diff * diff))), "count": int(diff.size)}


@dataclass
class Errors:
    """Summary numbers and the arrays the plots need.

    summary: {"energy_per_atom": {mae, rmse, count} eV/atom, "forces": {...} eV/Å,
    "stress": {...} eV/Å³ (count 0 without periodic references)}.
    """

    summary: dict
    natoms: np.ndarray  # [S]
    energy_per_atom_ref: np.ndarray  # [S] eV/atom
    energy_per_atom_pred: np.ndarray  # [S] eV/atom
    forces_ref: np.ndarray  # [sum N, 3] eV/Å
    forces_pred: np.ndarray  # [sum N, 3] eV/Å
    force_mae_per_structure: np.ndarray  # [S] eV/Å


def _stress(record: dict) -> Optional[np.ndarray]:
    value = record.get("stress")
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    if value.shape == (6,):  # ASE Voigt order
        from ase.stress import voigt_6_to_full_3x3_stress

        value = voigt_6_to_full_3x3_stress(value)
    return value


def compute_errors(predictions: Sequence[dict], references: Sequence[dict]) -> Errors:
    """Errors of ``predictions`` against ``references`` (same order, one dict per structure)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference structures")
    if not references:
        raise ValueError("no structures to evaluate")
    natoms, e_ref, e_pred, f_ref, f_pred, f_mae, s_diff = [], [], [], [], [], [], []
    for k, (p, r) in enumerate(zip(predictions, references)):
        for key in _REQUIRED_LABELS:
            if r.get(key) is None:
                raise ValueError(f"reference structure {k} has no {key!r} label")
        fr = np.asarray(r["forces"], dtype=np.float64)
        fp = np.asarray(p["forces"], dtype=np.float64)
        if fr.shape != fp.shape:
            raise ValueError(f"structure {k}: forces of shape {fp.shape} predicted for a reference of shape {fr.shape}")
        n = fr.shape[0]
        natoms.append(n)
        e_ref.append(float(r["energy"]) / n)
        e_pred.append(float(p["energy"]) / n)
        f_ref.append(fr)
        f_pred.append(fp)
        f_mae.append(float(np.abs(fp - fr).mean()))
        sr = _stress(r)
        if sr is not None:
            sp = _stress(p)
            if sp is None:
                raise ValueError(f"structure {k}: the reference has a stress but no stress was predicted")
            s_diff.append(sp - sr)
    e_ref_a, e_pred_a = np.array(e_ref), np.array(e_pred)
    f_ref_a, f_pred_a = np.concatenate(f_ref), np.concatenate(f_pred)
    summary = {
        "structures": len(references),
        "atoms": int(sum(natoms)),
        "energy_per_atom": mae_rmse(e_pred_a - e_ref_a),
        "forces": mae_rmse(f_pred_a - f_ref_a),
        "stress": mae_rmse(np.array(s_diff)) if s_diff else mae_rmse(np.zeros(0)),
        "forces_rms_reference": float(np.sqrt(np.mean(f_ref_a**2))),
        "units": {"energy_per_atom": "eV/atom", "forces": "eV/Å", "stress": "eV/Å^3"},
    }
    return Errors(summary, np.array(natoms), e_ref_a, e_pred_a, f_ref_a, f_pred_a, np.array(f_mae))
