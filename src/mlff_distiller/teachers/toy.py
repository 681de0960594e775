"""Small calculators and teachers for tests, examples and benchmarks (not physical models).

- ``Harmonic(k, r0)``: springs between every pair of atoms, E = ½ k Σ_{i<j} (|x_j − x_i| − r0)² (eV),
  with an analytic Hessian (``Harmonic.hessian(atoms)`` [3N, 3N] eV/Å²); molecules only.
- ``HarmonicTeacher(k, r0)``: a Teacher of that calculator whose Hessian-vector products come from
  torch autograd (double backward), the path a torch teacher takes instead of finite differences.
- ``SlowEMT(delay)``: ASE's EMT that sleeps ``delay`` seconds per calculation (a stand-in for a slow
  teacher: interrupting runs, measuring pipeline overhead).
"""

from __future__ import annotations

import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from .base import Teacher


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


class Harmonic(Calculator):
    """Springs of stiffness ``k`` (eV/Å²) and rest length ``r0`` (Å) between every pair of atoms."""

    implemented_properties = ["energy", "free_energy", "forces", "energies"]
    default_parameters = {"k": 1.0, "r0": 1.5}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise ValueError("Harmonic is for molecules (pbc all False)")
        k, r0 = float(self.parameters.k), float(self.parameters.r0)
        x = self.atoms.positions
        i, j = _pairs(len(x))
        r = x[j] - x[i]
        d = np.linalg.norm(r, axis=1)
        stretch = d - r0
        pair_energy = 0.5 * k * stretch**2
        g = (k * stretch / d)[:, None] * r  # dE/dx_j of each pair
        forces = np.zeros_like(x)
        np.add.at(forces, i, g)
        np.add.at(forces, j, -g)
        energies = np.zeros(len(x))
        np.add.at(energies, i, 0.5 * pair_energy)
        np.add.at(energies, j, 0.5 * pair_energy)
        self.results = {
            "energy": float(pair_energy.sum()),
            "free_energy": float(pair_energy.sum()),
            "forces": forces,
            "energies": energies,
        }

    def hessian(self, atoms) -> np.ndarray:
        """Analytic ∂²E/∂x∂x [3N, 3N] (eV/Å²) at ``atoms``."""
        k, r0 = float(self.parameters.k), float(self.parameters.r0)
        x = atoms.positions
        n = len(x)
        h = np.zeros((n, 3, n, 3))
        for a, b in zip(*_pairs(n)):
            r = x[b] - x[a]
            d = np.linalg.norm(r)
            u = r / d
            block = k * (np.outer(u, u) + (1.0 - r0 / d) * (np.eye(3) - np.outer(u, u)))
            h[a, :, a, :] += block
            h[b, :, b, :] += block
            h[a, :, b, :] -= block
            h[b, :, a, :] -= block
        return h.reshape(3 * n, 3 * n)


class HarmonicTeacher(Teacher):
    """Teacher of ``Harmonic(k, r0)`` with Hessian-vector products by torch autograd."""

    def __init__(self, k: float = 1.0, r0: float = 1.5) -> None:
        super().__init__(
            "mlff_distiller.teachers.toy:Harmonic",
            lambda: Harmonic(k=k, r0=r0),
            version="toy",
            options={"k": k, "r0": r0},
            periodic_ok=False,
            calculator_class="mlff_distiller.teachers.toy.Harmonic",
        )

    def hvp(self, atoms, directions: np.ndarray) -> np.ndarray:
        import torch

        k, r0 = float(self.options["k"]), float(self.options["r0"])
        x = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
        i, j = (torch.as_tensor(p) for p in _pairs(len(atoms)))
        d = (x[j] - x[i]).norm(dim=1)
        energy = 0.5 * k * ((d - r0) ** 2).sum()
        (grad,) = torch.autograd.grad(energy, x, create_graph=True)
        v = torch.as_tensor(np.asarray(directions), dtype=torch.float64)  # [N, K, 3]
        out = [torch.autograd.grad(grad, x, v[:, kk], retain_graph=True)[0] for kk in range(v.shape[1])]
        return torch.stack(out, dim=1).detach().numpy()


class SlowEMT(EMT):
    """ASE's EMT that sleeps ``delay`` seconds in every calculation."""

    def __init__(self, delay: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay = float(delay)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes)
