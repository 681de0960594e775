"""The trained student as an ASE calculator: ``StudentCalculator(path)`` drops into any ASE script.

Units are ASE's: energy eV, forces eV/Å, stress eV/Å³ (Voigt order xx yy zz yz xz xy, ASE sign),
per-atom ``energies`` eV.

Per-call overhead is the product for small systems, so between calls the calculator keeps

- the tensors that depend only on the atomic numbers, cell and pbc (species, batch map, cell...),
  rebuilt only when one of those changes;
- a *candidate* neighbor list built by vesin at ``cutoff + skin``, rebuilt only when an atom has
  moved more than ``skin / 2`` since it was built (or the cell, pbc or atoms changed). Every call
  keeps the candidates whose true distance is below the cutoff, so the model sees exactly the
  edges, in exactly the order (sorted by ``(i, j, shift)``), of a list rebuilt from scratch:
  results with a skin equal those with ``skin=0`` (a rebuild every call).

>>> from mlff_distiller.calculator import load_calculator          # doctest: +SKIP
>>> atoms.calc = load_calculator("student.safetensors")            # doctest: +SKIP
>>> atoms.get_forces()                                              # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

__all__ = ["StudentCalculator", "load_calculator", "structures_to_batch"]

PathLike = Union[str, os.PathLike]


def _is_3d_periodic(cell: np.ndarray, pbc: np.ndarray) -> bool:
    """A cell with a volume (stress is defined) and periodic along every axis."""
    return bool(np.all(pbc)) and abs(float(np.linalg.det(cell))) > 1e-12


def _edges(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Full neighbor list within ``cutoff`` Å, sorted by (i, j, S): ``edge_index`` [2, E], ``shifts`` [E, 3]."""
    from .data.neighbors import compute_neighbors

    edges = compute_neighbors(positions, cell, pbc, cutoff)
    return edges.edge_index, edges.shifts


def structures_to_batch(
    structures: Sequence[Atoms], cutoff: float, *, dtype: torch.dtype = torch.float32, device="cpu"
) -> dict:
    """A graph batch of several ``ase.Atoms`` with neighbor lists at ``cutoff`` Å."""
    counts = np.array([len(a) for a in structures], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    index_parts, shift_parts = [], []
    for b, atoms in enumerate(structures):
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if not pbc.any():
            cell = np.zeros((3, 3))
        edge_index, shifts = _edges(atoms.positions, cell, pbc, cutoff)
        index_parts.append(edge_index + ptr[b])
        shift_parts.append(shifts)
    cells = np.stack([a.cell.array if a.pbc.any() else np.zeros((3, 3)) for a in structures])
    as_tensor = lambda a, t: torch.as_tensor(a, dtype=t, device=device)  # noqa: E731
    return {
        "species": as_tensor(np.concatenate([a.numbers for a in structures]), torch.int64),
        "positions": as_tensor(np.concatenate([a.positions for a in structures]), dtype),
        "batch": torch.repeat_interleave(torch.arange(len(structures), device=device), as_tensor(counts, torch.int64)),
        "ptr": as_tensor(ptr, torch.int64),
        "natoms": as_tensor(counts, torch.int64),
        "cell": as_tensor(cells, dtype),
        "pbc": as_tensor(np.stack([a.pbc for a in structures]), torch.bool),
        "edge_index": as_tensor(np.concatenate(index_parts, axis=1), torch.int64),
        "shifts": as_tensor(np.concatenate(shift_parts), torch.int64),
    }


class _Static:
    """What depends only on numbers, cell and pbc: rebuilt when one of them changes."""

    def __init__(self, atoms: Atoms, dtype: torch.dtype, device: torch.device) -> None:
        n = len(atoms)
        self.numbers = atoms.numbers.copy()
        self.pbc = np.asarray(atoms.pbc, dtype=bool).copy()
        self.cell = np.asarray(atoms.cell.array, dtype=np.float64).copy() if self.pbc.any() else np.zeros((3, 3))
        self.periodic = _is_3d_periodic(self.cell, self.pbc)
        self.tensors = {
            "species": torch.as_tensor(self.numbers, dtype=torch.int64, device=device),
            "batch": torch.zeros(n, dtype=torch.int64, device=device),
            "ptr": torch.tensor([0, n], dtype=torch.int64, device=device),
            "natoms": torch.tensor([n], dtype=torch.int64, device=device),
            "cell": torch.as_tensor(self.cell, dtype=dtype, device=device).unsqueeze(0),
            "pbc": torch.as_tensor(self.pbc, device=device).unsqueeze(0),
        }


class _Candidates:
    """Neighbor candidates within ``cutoff + skin`` of the positions at build time."""

    def __init__(self, positions: np.ndarray, static: _Static, cutoff: float, skin: float) -> None:
        self.reference = positions.copy()
        self.edge_index, self.shifts = _edges(positions, static.cell, static.pbc, cutoff + skin)
        self.i, self.j = self.edge_index[0], self.edge_index[1]
        self.offsets = self.shifts.astype(np.float64) @ static.cell  # [E, 3] Å, fixed while the cell is

    def still_valid(self, positions: np.ndarray, skin: float) -> bool:
        """True while no atom moved more than skin/2 since the build (then no pair can cross in)."""
        if skin <= 0:
            return False
        moved = positions - self.reference
        return float(np.einsum("ij,ij->i", moved, moved).max(initial=0.0)) <= 0.25 * skin * skin

    def within(self, positions: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """The candidates closer than ``cutoff`` now, in candidate (sorted) order."""
        d = positions[self.j] - positions[self.i] + self.offsets
        keep = np.einsum("ij,ij->i", d, d) < cutoff * cutoff
        return self.edge_index[:, keep], self.shifts[keep]


class StudentCalculator(Calculator):
    """An ASE calculator for a student model (``mlff_distiller.models``) or a saved student file.

    Args:
        model_or_path: a ``StudentModel`` or the path of a ``.safetensors`` file from ``models.save``.
        device: torch device of the model ("cpu", "cuda", ...).
        skin: Å added to the cutoff for the cached neighbor list (0: rebuild every call).
        num_threads: torch intra-op threads for every call (None: leave torch's setting alone).

    Properties: ``energy`` and ``free_energy`` (eV, equal), ``forces`` [N, 3] eV/Å, ``stress``
    (Voigt 6, eV/Å³; 3D-periodic cells only), ``energies`` [N] eV (an extra forward pass, only
    when asked). Energy and forces are always computed together, so asking for one after the
    other costs one model call.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model_or_path,
        device: Union[str, torch.device] = "cpu",
        skin: float = 0.5,
        num_threads: Optional[int] = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        from . import models

        if isinstance(model_or_path, (str, os.PathLike)):
            model = models.load(model_or_path, device=str(device))
            self.path: Optional[str] = os.fspath(model_or_path)
        elif isinstance(model_or_path, torch.nn.Module):
            model = model_or_path.to(device)
            self.path = None
        else:
            raise TypeError(
                f"StudentCalculator needs a student model or the path of a saved student, got {type(model_or_path).__name__}"
            )
        if not (np.isfinite(skin) and skin >= 0):
            raise ValueError(f"skin must be a finite number of Å >= 0, got {skin!r}")
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1 (or None), got {num_threads!r}")
        self.model = model.eval()
        self.device = torch.device(device)
        self.cutoff = float(model.cutoff)
        self.skin = float(skin)
        self.num_threads = None if num_threads is None else int(num_threads)
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        self._allowed = frozenset(int(z) for z in model.species)
        self._predict = models.predict
        self._static: Optional[_Static] = None
        self._candidates: Optional[_Candidates] = None
        #: number of neighbor-list builds so far (diagnostics, tests)
        self.neighbor_builds = 0
        self._apply_threads()

    # -- state -----------------------------------------------------------------------------
    def _apply_threads(self) -> None:
        if self.num_threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)

    def _check_species(self, numbers: np.ndarray) -> None:
        unknown = sorted({int(z) for z in np.unique(numbers)} - self._allowed)
        if unknown:
            from ase.data import chemical_symbols

            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            raise ValueError(f"the student was not trained on element(s) {names}; it knows Z={sorted(self._allowed)}")

    def _graph(self, atoms: Atoms, system_changes: Sequence[str]) -> dict:
        """The batch dict of ``atoms``: cached tensors plus this call's positions and edges."""
        positions = np.asarray(atoms.positions, dtype=np.float64)
        if self._static is None or any(c in system_changes for c in ("numbers", "cell", "pbc")):
            self._check_species(atoms.numbers)
            self._static = _Static(atoms, self.dtype, self.device)
            self._candidates = None
        if self._candidates is None or not self._candidates.still_valid(positions, self.skin):
            self._candidates = _Candidates(positions, self._static, self.cutoff, self.skin)
            self.neighbor_builds += 1
        if self.skin > 0:
            edge_index, shifts = self._candidates.within(positions, self.cutoff)
        else:
            edge_index, shifts = self._candidates.edge_index, self._candidates.shifts
        batch = dict(self._static.tensors)
        batch["positions"] = torch.as_tensor(positions, dtype=self.dtype, device=self.device)
        batch["edge_index"] = torch.from_numpy(np.ascontiguousarray(edge_index)).to(self.device)
        batch["shifts"] = torch.from_numpy(np.ascontiguousarray(shifts)).to(self.device)
        return batch

    def reset(self) -> None:
        super().reset()
        self._static = None
        self._candidates = None

    # -- ASE entry points -------------------------------------------------------------------
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last call (ASE's ``compare_atoms`` for what the student reads:
        positions, numbers, cell, pbc), with exact array comparisons instead of ``np.isclose``."""
        old = self.atoms
        if old is None:
            return list(all_changes)
        changes = []
        if len(old) != len(atoms):
            return ["positions", "numbers"]
        if not np.array_equal(old.positions, atoms.positions):
            changes.append("positions")
        if not np.array_equal(old.numbers, atoms.numbers):
            changes.append("numbers")
        if not np.array_equal(old.cell.array, atoms.cell.array):
            changes.append("cell")
        if not np.array_equal(old.pbc, atoms.pbc):
            changes.append("pbc")
        return changes

    def calculate(self, atoms: Optional[Atoms] = None, properties=("energy",), system_changes=all_changes) -> None:
        if atoms is not None:  # what Calculator.calculate does, without a full copy when only positions moved
            if self.atoms is None or len(self.atoms) != len(atoms) or set(system_changes) - {"positions"}:
                self.atoms = atoms.copy()
            else:
                self.atoms.positions[:] = atoms.positions
        atoms = self.atoms
        self._apply_threads()
        batch = self._graph(atoms, system_changes)
        want_stress = "stress" in properties
        if want_stress and not self._static.periodic:
            raise PropertyNotImplementedError("stress needs a cell with a volume that is periodic along all three axes")
        out = self._predict(self.model, batch, forces=True, stress=want_stress)
        energy = float(out["energy"].detach()[0])
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = out["forces"].detach().to("cpu", torch.float64).numpy()
        if want_stress:
            stress = out["stress"].detach()[0].to("cpu", torch.float64).numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
        if "energies" in properties:
            with torch.no_grad():
                energies = self.model.atomic_energies(batch)
            self.results["energies"] = energies.detach().to("cpu", torch.float64).numpy()

    # -- screening -----------------------------------------------------------------------------
    def predict(
        self, structures: Sequence[Atoms], *, stress: bool = False, max_atoms_per_batch: int = 4096
    ) -> list[dict]:
        """Energies and forces (and stress for 3D-periodic cells when ``stress``) of many structures,
        ``max_atoms_per_batch`` atoms per model call: one dict per structure, ``energy`` eV,
        ``forces`` [N, 3] eV/Å, ``stress`` [3, 3] eV/Å³ or None (not periodic / not asked)."""
        self._apply_threads()
        for k, atoms in enumerate(structures):
            try:
                self._check_species(atoms.numbers)
            except ValueError as exc:
                raise ValueError(f"structure {k}: {exc}") from None
        results: list[dict] = []
        start = 0
        while start < len(structures):
            stop, atoms_in = start, 0
            while stop < len(structures) and (stop == start or atoms_in + len(structures[stop]) <= max_atoms_per_batch):
                atoms_in += len(structures[stop])
                stop += 1
            chunk = structures[start:stop]
            batch = structures_to_batch(chunk, self.cutoff, dtype=self.dtype, device=self.device)
            periodic = [_is_3d_periodic(a.cell.array, np.asarray(a.pbc)) for a in chunk]
            out = self._predict(self.model, batch, forces=True, stress=stress and any(periodic))
            energy = out["energy"].detach().to("cpu", torch.float64).numpy()
            forces = out["forces"].detach().to("cpu", torch.float64).numpy()
            stresses = out["stress"].detach().to("cpu", torch.float64).numpy() if stress and any(periodic) else None
            ptr = batch["ptr"].tolist()
            for b in range(len(chunk)):
                results.append(
                    {
                        "energy": float(energy[b]),
                        "forces": forces[ptr[b] : ptr[b + 1]].copy(),
                        "stress": stresses[b].copy() if stresses is not None and periodic[b] else None,
                    }
                )
            start = stop
        return results


def load_calculator(path: PathLike, **kwargs) -> StudentCalculator:
    """``StudentCalculator(path, **kwargs)``: the saved student at ``path`` as an ASE calculator."""
    return StudentCalculator(path, **kwargs)
