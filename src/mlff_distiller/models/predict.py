"""``predict``: energy, forces, stress and Hessian-vector products of a student on a graph batch.

A student's energy depends on positions and cell only through the edge vectors
``D_e = x_j - x_i + S_e @ cell`` (e = (i, j, S)). One backward pass gives g_e = ∂E/∂D_e [E, 3];
then, without further autograd calls,

- forces     F_k = Σ_{e: i=k} g_e - Σ_{e: j=k} g_e          (= -∂E/∂x_k)
- stress     σ_b = (1/V_b) Σ_{e in b} D_e ⊗ g_e              (= (1/V) ∂E/∂ε for x -> x(I+ε))
- H·v        s = Σ_e g_e · (v_j - v_i) = Σ_k ∂E/∂x_k · v_k; h_e = ∂s/∂D_e; (H v)_k = Σ_{e: j=k} h_e - Σ_{e: i=k} h_e

(D is linear in x and ε, so these are the exact chain rule.)
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from .base import StudentModel, edge_vectors

__all__ = ["predict"]


def _edges_to_atoms(values: torch.Tensor, i: torch.Tensor, j: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Σ_{e: i=k} values_e - Σ_{e: j=k} values_e  -> [n_atoms, ...]."""
    out = torch.zeros((n_atoms,) + values.shape[1:], dtype=values.dtype, device=values.device)
    return out.index_add(0, i, values).index_add(0, j, values, alpha=-1)


def predict(
    model: StudentModel,
    batch: Mapping[str, torch.Tensor],
    *,
    forces: bool = True,
    stress: bool = False,
    hvp_directions: Optional[torch.Tensor] = None,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Energies and derivatives of ``model`` on a graph ``batch`` (keys in ``data.keys``).

    Returns ``energy`` [B] eV; with ``forces`` ``forces`` [T, 3] eV/Å = -∂E/∂positions; with
    ``stress`` ``stress`` [B, 3, 3] eV/Å³ = (1/V) ∂E/∂ε (zero where the cell volume is 0, e.g.
    molecules); with ``hvp_directions`` [T, K, 3] ``hvp`` [T, K, 3] eV/Å² = H·v_k
    (H = ∂²E/∂x∂x, by double backward). ``create_graph=True`` keeps the graph so a loss on
    forces/stress/hvp can be backpropagated to the parameters. All outputs are in the model's
    dtype. The batch dict and its tensors are not modified.
    """
    want_hvp = hvp_directions is not None
    vectors = edge_vectors(batch, model.dtype)
    if not (forces or stress or want_hvp):
        return {"energy": model(batch, vectors)}
    if not vectors.requires_grad:
        vectors.requires_grad_(True)  # a fresh leaf: positions/cell do not require grad
    energy = model(batch, vectors)
    n_atoms = batch["positions"].shape[0]
    i, j = batch["edge_index"][0], batch["edge_index"][1]
    if vectors.shape[0] == 0:  # no edges: nothing depends on positions
        grad = torch.zeros_like(vectors)
    else:
        (grad,) = torch.autograd.grad(energy.sum(), vectors, create_graph=create_graph or want_hvp)
    out = {"energy": energy if create_graph else energy.detach()}
    if forces:
        out["forces"] = _edges_to_atoms(grad, i, j, n_atoms)
    if stress:
        out["stress"] = _stress(batch, vectors.detach() if not create_graph else vectors, grad, model.dtype)
    if want_hvp:
        out["hvp"] = _hvp(vectors, grad, hvp_directions.to(model.dtype), i, j, n_atoms, create_graph)
    if not create_graph:
        out = {k: v.detach() for k, v in out.items()}
    return out


def _stress(batch: Mapping[str, torch.Tensor], vectors: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    cell = batch["cell"].to(dtype)
    n_struct = cell.shape[0]
    if n_struct == 1:
        virial = (vectors.transpose(0, 1) @ grad).unsqueeze(0)
    else:
        edge_struct = batch["batch"].index_select(0, batch["edge_index"][0])
        outer = vectors.unsqueeze(2) * grad.unsqueeze(1)  # [E, 3, 3]
        virial = torch.zeros((n_struct, 3, 3), dtype=dtype, device=cell.device).index_add(0, edge_struct, outer)
    volume = torch.linalg.det(cell).abs()
    safe = torch.where(volume > 0, volume, torch.ones_like(volume))
    return torch.where((volume > 0).view(-1, 1, 1), virial / safe.view(-1, 1, 1), torch.zeros_like(virial))


def _hvp(vectors, grad, directions, i, j, n_atoms: int, create_graph: bool) -> torch.Tensor:
    if directions.dim() != 3 or directions.shape[0] != n_atoms or directions.shape[2] != 3:
        raise ValueError(f"hvp_directions must have shape [T={n_atoms}, K, 3], got {list(directions.shape)}")
    if vectors.shape[0] == 0 or not grad.requires_grad or directions.shape[1] == 0:
        return torch.zeros_like(directions)
    out = []
    k_count = directions.shape[1]
    for k in range(k_count):
        v = directions[:, k]
        dv = v.index_select(0, j) - v.index_select(0, i)  # [E, 3]
        s = (grad * dv).sum()
        (h,) = torch.autograd.grad(s, vectors, create_graph=create_graph, retain_graph=create_graph or k < k_count - 1)
        # (H v)_k = Σ_{e: j=k} h_e - Σ_{e: i=k} h_e  (the opposite sign of _edges_to_atoms)
        out.append(-_edges_to_atoms(h, i, j, n_atoms))
    return torch.stack(out, dim=1)
