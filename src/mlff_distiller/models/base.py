"""``StudentModel``: what every student shares (species, cutoff, config, E0s, scale/shift).

A student maps a graph batch (README, "Samples and batches"; keys in ``data.keys``) to per-atom energies

    E_atom = E0[Z] + shift + scale * (network(Z, edge vectors) - network(Z, no neighbors))   (eV)

and per-structure energies (their sum). The network sees the structure only through its edge
vectors ``D = positions[j] - positions[i] + shifts @ cell`` [E, 3] Å, so forces, stress and
Hessian-vector products all follow from ∂E/∂D (see ``predict``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional, Sequence

import torch
from torch import nn

from .layers import RadialEmbedding

__all__ = ["StudentModel", "edge_vectors", "dtype_name", "parse_dtype"]

#: atomic numbers 1..MAX_Z are accepted in ``species``
MAX_Z = 118
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_dtype(dtype: Any) -> torch.dtype:
    """torch.float32 / torch.float64 or their names -> torch.dtype (else ValueError)."""
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name in _DTYPES:
            return _DTYPES[name]
    elif dtype in (torch.float32, torch.float64):
        return dtype
    raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def edge_vectors(batch: Mapping[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Edge vectors ``D = pos[j] - pos[i] + shifts @ cell[batch[i]]`` [E, 3] Å in ``dtype``.

    Differentiable in ``positions`` and ``cell`` when they require grad.
    """
    positions = batch["positions"].to(dtype)
    edge_index = batch["edge_index"]
    i, j = edge_index[0], edge_index[1]
    vectors = positions.index_select(0, j) - positions.index_select(0, i)
    shifts = batch["shifts"]
    pbc = batch.get("pbc")
    if shifts.shape[0] == 0 or (pbc is not None and not bool(pbc.any())):  # molecules: every shift is zero
        return vectors
    cell = batch["cell"].to(dtype)
    if cell.shape[0] == 1:
        return vectors + shifts.to(dtype) @ cell[0]
    edge_cell = cell.index_select(0, batch["batch"].index_select(0, i))  # [E, 3, 3]
    return vectors + torch.bmm(shifts.to(dtype).unsqueeze(1), edge_cell).squeeze(1)


class StudentModel(nn.Module):
    """Base of the students: an energy model on graph batches.

    Attributes: ``cutoff`` (Å), ``species`` (sorted list of atomic numbers it accepts),
    ``config`` (JSON-able dict that rebuilds it with ``build_model(**config)``), buffers
    ``reference_energies`` [S] eV (E0 per entry of ``species``), ``scale`` and ``shift`` (eV).
    Subclasses set ``name`` and implement ``node_outputs``.
    """

    name: ClassVar[str] = ""

    def __init__(self, species: Sequence[int], cutoff: float, dtype: Any = torch.float32) -> None:
        super().__init__()
        species = _check_species(species)
        cutoff = float(cutoff)
        if not (cutoff > 0 and cutoff < float("inf")):
            raise ValueError(f"cutoff must be a finite positive number of Å, got {cutoff!r}")
        self.cutoff = cutoff
        self.species = species
        self._dtype = parse_dtype(dtype)
        self._hyper: dict[str, Any] = {}
        table = torch.full((MAX_Z + 2,), -1, dtype=torch.int64)  # last entry: any Z > MAX_Z
        table[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("z_to_index", table, persistent=False)
        self.register_buffer("species_range", torch.arange(len(species)), persistent=False)
        self.register_buffer("reference_energies", torch.zeros(len(species), dtype=self._dtype))
        self.register_buffer("scale", torch.ones((), dtype=self._dtype))
        self.register_buffer("shift", torch.zeros((), dtype=self._dtype))

    # -- configuration -------------------------------------------------------------------------
    def _set_hyper(self, **hyper: Any) -> None:
        """Record the (resolved) hyperparameters that ``config`` reports."""
        self._hyper = dict(hyper)

    def _init_network(
        self, hidden: int, layers: int, rbf: int, envelope_p: int, avg_neighbors: float
    ) -> tuple[int, int, int]:
        """What the message-passing students share before their own layers: check and record the
        hyperparameters (``config``), set ``hidden`` and ``layers``, and build the species
        embedding ``embedding`` (S -> hidden) and the edge-length embedding ``radial`` (``rbf``
        Bessel functions times the envelope, messages scaled by 1/sqrt(avg_neighbors)).
        Returns ``(hidden, layers, rbf)`` as ints."""
        hidden, layers, rbf, envelope_p = int(hidden), int(layers), int(rbf), int(envelope_p)
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be >= 1, got hidden={hidden}, layers={layers}")
        if not avg_neighbors > 0:
            raise ValueError(f"avg_neighbors must be > 0, got {avg_neighbors}")
        self._set_hyper(hidden=hidden, layers=layers, rbf=rbf, envelope_p=envelope_p, avg_neighbors=float(avg_neighbors))
        self.hidden, self.layers = hidden, layers
        self.embedding = nn.Embedding(len(self.species), hidden)
        self.radial = RadialEmbedding(self.cutoff, rbf, envelope_p, factor=float(avg_neighbors) ** -0.5)
        return hidden, layers, rbf

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "species": list(self.species),
            "cutoff": self.cutoff,
            "dtype": dtype_name(self.dtype),
            **self._hyper,
        }

    @property
    def dtype(self) -> torch.dtype:
        return self.reference_energies.dtype

    @property
    def device(self) -> torch.device:
        return self.reference_energies.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"species={self.species}, cutoff={self.cutoff}, params={self.num_parameters()}"

    # -- normalisation ---------------------------------------------------------------------------
    def set_reference_energies(self, energies: Mapping[int, float]) -> None:
        """Fixed per-element offsets E0 {Z: eV}. Every Z must be in ``species``; species missing
        from ``energies`` get E0 = 0."""
        values = torch.zeros(len(self.species), dtype=torch.float64)
        for z, e0 in energies.items():
            z = int(z)
            if z not in self.species:
                raise ValueError(f"reference energy for atomic number {z}, which is not in the model's species {self.species}")
            values[self.species.index(z)] = float(e0)
        if not torch.isfinite(values).all():
            raise ValueError(f"reference energies must be finite, got {dict(energies)}")
        self.reference_energies.copy_(values.to(self.reference_energies))

    def set_scale_shift(self, scale: float, shift: float) -> None:
        """Per-atom energy = E0[Z] + shift + scale * network output (eV; see ``atomic_energies``)."""
        scale, shift = float(scale), float(shift)
        if not (torch.isfinite(torch.tensor([scale, shift])).all() and scale != 0.0):
            raise ValueError(f"scale must be finite and non-zero and shift finite, got scale={scale}, shift={shift}")
        self.scale.fill_(scale)
        self.shift.fill_(shift)

    def reference_energy_dict(self) -> dict[int, float]:
        return {z: float(e) for z, e in zip(self.species, self.reference_energies.tolist())}

    # -- evaluation ------------------------------------------------------------------------------
    def species_index(self, species: torch.Tensor) -> torch.Tensor:
        """Atomic numbers [T] -> row in ``species`` [T]; ValueError naming any unknown Z."""
        idx = self.z_to_index[species.clamp(0, MAX_Z + 1)]
        if bool((idx < 0).any()):
            unknown = sorted(set(species[idx < 0].tolist()))
            raise ValueError(f"atomic number(s) {unknown} not in the model's species {self.species}")
        return idx

    def node_outputs(self, idx: torch.Tensor, vectors: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Network output per atom [T] (before scale/shift/E0) from species rows ``idx`` [T],
        edge vectors [E, 3] Å and ``edge_index`` [2, E]."""
        raise NotImplementedError

    def isolated_outputs(self) -> torch.Tensor:
        """Network output of an atom without neighbors, per entry of ``species`` [S]."""
        idx = torch.arange(len(self.species), device=self.device)
        empty = torch.zeros((0, 3), dtype=self.dtype, device=self.device)
        return self.node_outputs(idx, empty, torch.zeros((2, 0), dtype=torch.int64, device=self.device))

    def atomic_energies(self, batch: Mapping[str, torch.Tensor], vectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-atom energies [T] eV. ``vectors``: precomputed edge vectors [E, 3] (else computed).

        The network output of an isolated atom is subtracted, so an atom without neighbors has
        exactly ``E0[Z] + shift``; the network describes interactions only. The isolated outputs
        come from S extra edgeless nodes (one per species) appended to the graph: the same tensor
        ops as the structure itself, S rows more.
        """
        if vectors is None:
            vectors = edge_vectors(batch, self.dtype)
        idx = self.species_index(batch["species"])
        n_atoms = idx.shape[0]
        out = self.node_outputs(torch.cat([idx, self.species_range]), vectors, batch["edge_index"])
        interaction = out[:n_atoms] - out[n_atoms:].index_select(0, idx)
        return (self.reference_energies + self.shift).index_select(0, idx) + self.scale * interaction

    def forward(self, batch: Mapping[str, torch.Tensor], vectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-structure energies [B] eV."""
        atomic = self.atomic_energies(batch, vectors)
        n_struct = batch["natoms"].shape[0]
        if n_struct == 1:
            return atomic.sum().unsqueeze(0)
        return torch.zeros(n_struct, dtype=atomic.dtype, device=atomic.device).index_add(0, batch["batch"], atomic)


def _check_species(species: Sequence[int]) -> list[int]:
    try:
        values = sorted({int(z) for z in species})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"species must be a list of atomic numbers, got {species!r}") from exc
    if not values:
        raise ValueError("species must name at least one atomic number")
    bad = [z for z in values if not 1 <= z <= MAX_Z]
    if bad:
        raise ValueError(f"species holds invalid atomic number(s) {bad} (1..{MAX_Z})")
    return values
