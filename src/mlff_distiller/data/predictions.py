"""Model predictions for a batch, back onto ``ase.Atoms`` (and into a file) beside the labels.

>>> # doctest: +SKIP
>>> batch = next(iter(loader))                      # a graph (or padded) batch, return_atoms=True
>>> out = predict(model, batch, stress=True)        # energy [B], forces [T, 3], stress [B, 3, 3]
>>> images = predictions_to_atoms(batch, out)       # one Atoms per structure
>>> images[0].info["pred_energy"], images[0].get_potential_energy()   # prediction, label
>>> write_predictions("predictions.xyz", images)    # extended XYZ, readable by ase.io.read

Predictions are stored MACE-style next to the labels: per-structure values in ``atoms.info``
(``pred_energy`` eV, ``pred_stress`` [3, 3] eV/Å³, ...), per-atom ones in ``atoms.arrays``
(``pred_forces`` [N, 3] eV/Å, ``pred_energies``...), so the labels stay in the calculator where ASE
(and ``ase.io.read``) find them. ``as_calculator=True`` instead puts the predictions in a
``SinglePointCalculator`` (``atoms.get_forces()`` returns the prediction) and keeps the labels the
Atoms had as ``REF_energy``/``REF_forces``/``REF_stress`` (MACE's convention). Values are float64.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from .keys import ATOM, DEFAULT_KEYS, STRUCTURE, KeyRegistry



def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if hasattr(value, "double") and value.is_floating_point():
            value = value.double()
        value = value.numpy()
    return np.asarray(value)


def _copy(atoms):
    """A copy of ``atoms`` with its calculator's results (``Atoms.copy`` drops the calculator)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = atoms.copy()
    results = getattr(atoms.calc, "results", None) if atoms.calc is not None else None
    if results:
        out.calc = SinglePointCalculator(out, **{k: np.copy(v) if np.ndim(v) else v for k, v in results.items()})
    return out


def _atoms_of_batch(batch: Mapping, counts: np.ndarray, starts: np.ndarray, padded: bool) -> list:
    """Atoms rebuilt from the batch tensors (species, positions, cell, pbc)."""
    from ase import Atoms

    species, positions = _numpy(batch["species"]), _numpy(batch["positions"]).astype(np.float64)
    cell, pbc = _numpy(batch["cell"]).astype(np.float64), _numpy(batch["pbc"]).astype(bool)
    out = []
    for b, (n, s) in enumerate(zip(counts, starts)):
        z = species[b, :n] if padded else species[s : s + n]
        x = positions[b, :n] if padded else positions[s : s + n]
        out.append(Atoms(numbers=z, positions=x, cell=cell[b], pbc=pbc[b]))
    return out


def predictions_to_atoms(
    batch: Mapping,
    predictions: Mapping,
    atoms: Optional[Sequence] = None,
    *,
    prefix: str = "pred_",
    as_calculator: bool = False,
    keys: KeyRegistry = DEFAULT_KEYS,
) -> list:
    """One ``ase.Atoms`` per structure of ``batch`` holding ``predictions`` (see module docstring).

    batch: a graph batch (``ptr``/``natoms``, per-atom values [T, ...]) or a padded one
        (``mask``, per-atom values [B, M, ...]); its ``atoms`` (``return_atoms=True``) are used
        unless ``atoms`` is given, else Atoms are rebuilt from species/positions/cell/pbc.
    predictions: name -> tensor/array (what ``models.predict`` returns); per structure [B, ...]
        or per atom as the key registry declares the name (``keys``: e.g. a dataset's
        ``key_registry`` for keys of your own; an undeclared name is a KeyError).
    The Atoms given are copied, never modified. ValueError when a prediction's leading size
    fits neither B nor the atom count.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    counts = _numpy(batch["natoms"]).astype(np.int64).reshape(-1)
    nb = counts.shape[0]
    padded = "mask" in batch and "ptr" not in batch
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    source = atoms if atoms is not None else batch.get("atoms")
    images = [_copy(a) for a in source] if source is not None else _atoms_of_batch(batch, counts, starts, padded)
    if len(images) != nb:
        raise ValueError(f"{len(images)} Atoms for a batch of {nb} structures")
    for a, n in zip(images, counts):
        if len(a) != n:
            raise ValueError(f"Atoms with {len(a)} atoms for a structure of {n}")
    total = int(counts.sum())
    per_structure: dict[str, np.ndarray] = {}
    per_atom: dict[str, list] = {}
    for name, value in predictions.items():
        arr = _numpy(value)
        arr = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
        kind = keys.require(name, where="predictions").kind
        if kind == STRUCTURE:
            if arr.shape[:1] != (nb,):
                raise ValueError(f"prediction {name!r} has shape {list(arr.shape)}, expected [{nb}, ...] (per structure)")
            per_structure[name] = arr
        elif kind == ATOM and padded:
            if arr.shape[:1] != (nb,):
                raise ValueError(f"prediction {name!r} has shape {list(arr.shape)}, expected [{nb}, M, ...] (padded)")
            per_atom[name] = [arr[b, :n] for b, n in enumerate(counts)]
        elif kind == ATOM:
            if arr.shape[:1] != (total,):
                raise ValueError(f"prediction {name!r} has shape {list(arr.shape)}, expected [{total}, ...] (per atom)")
            per_atom[name] = [arr[s : s + n] for s, n in zip(starts, counts)]
        else:
            raise ValueError(f"prediction {name!r}: a {kind!r} key cannot be put on Atoms")
    for b, a in enumerate(images):
        if as_calculator:
            labels = dict(a.calc.results) if a.calc is not None else {}
            for name, value in labels.items():
                target = a.arrays if np.ndim(value) and np.shape(value)[0] == len(a) and name != "stress" else a.info
                target[f"REF_{name}"] = np.array(value) if np.ndim(value) else value
            results = {}
            for name, arr in per_structure.items():
                value = arr[b]
                results[name] = full_3x3_to_voigt_6_stress(value) if name == "stress" and value.shape == (3, 3) else (
                    float(value) if value.ndim == 0 else value)
            results.update({name: parts[b] for name, parts in per_atom.items()})
            a.calc = SinglePointCalculator(a, **results)
        else:
            for name, arr in per_structure.items():
                value = arr[b]
                a.info[f"{prefix}{name}"] = float(value) if value.ndim == 0 else value
            for name, parts in per_atom.items():
                a.arrays[f"{prefix}{name}"] = np.array(parts[b])
    return images


def write_predictions(path: str | os.PathLike, images: Sequence, *, append: bool = False) -> None:
    """Write Atoms holding predictions (``predictions_to_atoms``) to an extended XYZ file that
    ``ase.io.read`` reads back: labels in the calculator (``energy``/``forces``/``stress``),
    predictions as ``pred_*`` info keys and columns. ``append`` adds frames to an existing file."""
    from ase.io import write

    write(os.fspath(path), list(images), format="extxyz", append=append)


__all__ = ["predictions_to_atoms", "write_predictions"]
