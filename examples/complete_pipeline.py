"""The guide's "Complete Training Pipeline Example" (steps 1-8), runnable end to end.

    python examples/complete_pipeline.py                      # in a scratch directory
    python examples/complete_pipeline.py --workdir /tmp/run --num-workers 0 --epochs 2

It first writes ``structures.db`` in the working directory (60 rattled Cu/Al clusters of 6 to 38
atoms labeled with ASE's EMT calculator) unless that file exists already, then follows the guide's
steps as written, filling in what the guide leaves to the reader: a small real model, an optimizer,
``num_epochs`` and the imports (``torch``, ``F``, ``masked_mse_loss``).

Note on step 0: the guide writes labels with ``db.write(atoms, energy=..., data={'forces': ...})``,
which ASE rejects (ASE 3.29: "ValueError: Bad key: energy"). The working way is to attach the labels to the
Atoms with a ``SinglePointCalculator`` and call ``db.write(atoms)``, as done below.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mlff_distiller.data import (
    AddNoise,
    Compose,
    MolecularDataset,
    NormalizeEnergy,
    NormalizeForces,
    RandomRotation,
    create_dataloaders,
    masked_mse_loss,
    train_test_split,
)


# ----------------------------------------------------------------------------- data


def write_structures_db(path: str | os.PathLike = "structures.db", n: int = 60, seed: int = 0) -> Path:
    """``n`` EMT-labeled, rattled Cu/Al clusters (6, 13, 19 or 38 atoms, no periodicity) in an ASE db."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.cluster import Icosahedron, Octahedron
    from ase.db import connect

    rng = np.random.default_rng(seed)
    makers = [
        lambda: Octahedron("Cu", 2),  # 6 atoms
        lambda: Icosahedron("Cu", noshells=2),  # 13 atoms
        lambda: Octahedron("Cu", 3),  # 19 atoms
        lambda: Octahedron("Cu", 4, cutoff=1),  # 38 atoms
    ]
    path = Path(path)
    with connect(path) as db:
        for k in range(n):
            atoms = makers[k % len(makers)]()
            numbers = atoms.numbers.copy()
            numbers[rng.random(len(atoms)) < 0.3] = 13  # some Al
            atoms.numbers = numbers
            atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
            atoms.pbc = False
            atoms.cell = np.zeros((3, 3))
            atoms.calc = EMT()
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
            db.write(atoms)
    return path


# ----------------------------------------------------------------------------- model


class TinyForceField(nn.Module):
    """A small pair-feature network on padded batches.

    forward(positions [B, M, 3] Å, species [B, M], mask [B, M]) -> (energy [B], forces [B, M, 3]),
    both in the normalised units of the targets. Atom features: an element embedding plus a sum of
    Gaussian radial features over neighbours within ``cutoff``; energy is the mean atomic output
    (targets are per-atom normalised). Forces are predicted directly as a sum of learned pair
    weights times unit vectors, so they rotate with the structure.
    """

    def __init__(self, cutoff: float = 5.0, n_radial: int = 8, hidden: int = 16, max_z: int = 100) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("centers", torch.linspace(0.5, cutoff, n_radial))
        self.width = cutoff / n_radial
        self.embed = nn.Embedding(max_z + 1, hidden, padding_idx=0)
        self.radial = nn.Linear(n_radial, hidden)
        self.atom_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.pair_mlp = nn.Sequential(nn.Linear(n_radial + hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, positions: torch.Tensor, species: torch.Tensor, mask: torch.Tensor):
        n_max = positions.shape[1]
        diff = positions.unsqueeze(1) - positions.unsqueeze(2)  # [B, M, M, 3]: r_j - r_i
        eye = torch.eye(n_max, dtype=torch.bool, device=positions.device)
        pair = mask.unsqueeze(1) & mask.unsqueeze(2) & ~eye
        dist = torch.linalg.vector_norm(diff, dim=-1)
        pair = pair & (dist < self.cutoff)
        safe = torch.where(pair, dist, torch.ones_like(dist))
        envelope = 0.5 * (torch.cos(math.pi * safe / self.cutoff) + 1.0) * pair
        rbf = torch.exp(-(((safe.unsqueeze(-1) - self.centers) / self.width) ** 2)) * envelope.unsqueeze(-1)
        h = self.embed(species)  # [B, M, H]
        neighbours = self.radial(rbf).sum(dim=2)  # [B, M, H]
        atomic = self.atom_mlp(torch.cat([h, neighbours], dim=-1)).squeeze(-1) * mask
        energy = atomic.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        pair_h = h.unsqueeze(1) * h.unsqueeze(2)  # [B, M, M, H]
        weight = self.pair_mlp(torch.cat([rbf, pair_h], dim=-1)).squeeze(-1) * envelope
        forces = -(weight.unsqueeze(-1) * diff / safe.unsqueeze(-1)).sum(dim=2)  # [B, M, 3]
        return energy, forces * mask.unsqueeze(-1)


# ----------------------------------------------------------------------------- the guide


def main(num_workers: int = 4, num_epochs: int = 2, seed: int = 0) -> dict:
    """Run the guide's steps 1-8 in the current directory; return the statistics and loss history."""
    torch.manual_seed(seed)
    if not os.path.exists("structures.db"):
        write_structures_db("structures.db", seed=seed)

    # 1. Load full dataset
    full_dataset = MolecularDataset('structures.db', format='ase')

    # 2. Compute statistics for normalization
    stats = full_dataset.get_statistics()
    print(f"Dataset: {stats['num_samples']} samples")
    print(f"Energy per atom: {stats['energy_per_atom_mean']:.3f} ± {stats['energy_per_atom_std']:.3f} eV")
    print(f"Forces RMS: {stats['forces_rms']:.3f} eV/Å")

    # 3. Create augmentation transform (training only)
    train_transform = Compose([
        RandomRotation(p=0.5),
        AddNoise(std=0.01, p=0.3),
        NormalizeEnergy(
            mean=stats['energy_per_atom_mean'],
            std=stats['energy_per_atom_std'],
            per_atom=True
        ),
        NormalizeForces(rms=stats['forces_rms']),
    ])

    # 4. Create normalization transform (validation/test)
    eval_transform = Compose([
        NormalizeEnergy(
            mean=stats['energy_per_atom_mean'],
            std=stats['energy_per_atom_std'],
            per_atom=True
        ),
        NormalizeForces(rms=stats['forces_rms']),
    ])

    # 5. Split dataset
    train_indices, val_indices, test_indices = train_test_split(
        full_dataset,
        train_ratio=0.8,
        val_ratio=0.1,
        test_ratio=0.1,
        shuffle=True,
        random_seed=42
    )

    # 6. Create datasets with transforms
    train_dataset = MolecularDataset('structures.db', format='ase', transform=train_transform)
    val_dataset = MolecularDataset('structures.db', format='ase', transform=eval_transform)
    test_dataset = MolecularDataset('structures.db', format='ase', transform=eval_transform)

    # Apply subset indices
    from mlff_distiller.data import MolecularSubset
    train_dataset = MolecularSubset(train_dataset, train_indices.indices)
    val_dataset = MolecularSubset(val_dataset, val_indices.indices)
    test_dataset = MolecularSubset(test_dataset, test_indices.indices)

    # 7. Create dataloaders
    loaders = create_dataloaders(
        train_dataset,
        val_dataset,
        test_dataset,
        batch_size=32,
        num_workers=num_workers,
        use_padding=True
    )

    # 8. Training loop (the model, optimizer and num_epochs are the reader's; here a tiny one)
    model = TinyForceField()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def evaluate(loader) -> dict[str, float]:
        """Mean over structures of the energy, forces and total loss (normalised units)."""
        totals = {"loss": 0.0, "energy_loss": 0.0, "forces_loss": 0.0}
        count = 0
        with torch.no_grad():
            for batch in loader:
                pred_energy, pred_forces = model(batch['positions'], batch['species'], batch['mask'])
                energy_loss = F.mse_loss(pred_energy, batch['energy'])
                forces_loss = masked_mse_loss(pred_forces, batch['forces'], batch['mask'])
                n = len(batch['energy'])
                totals["energy_loss"] += float(energy_loss) * n
                totals["forces_loss"] += float(forces_loss) * n
                totals["loss"] += float(energy_loss + forces_loss) * n
                count += n
        return {key: value / count for key, value in totals.items()}

    initial = evaluate(loaders["val"])
    history = {"initial_val_loss": initial["loss"], "initial_val_forces_loss": initial["forces_loss"], "epochs": []}
    print(f"val loss before training {initial['loss']:.4f} (forces {initial['forces_loss']:.4f})")
    for epoch in range(num_epochs):
        model.train()
        seen: list[int] = []
        for batch in loaders['train']:
            positions = batch['positions']
            species = batch['species']
            mask = batch['mask']
            energy = batch['energy']
            forces = batch['forces']

            # Forward pass
            pred_energy, pred_forces = model(positions, species, mask)

            # Compute loss (with mask for forces)
            energy_loss = F.mse_loss(pred_energy, energy)
            forces_loss = masked_mse_loss(pred_forces, forces, mask)
            loss = energy_loss + forces_loss

            # Backward pass
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen.extend(batch['idx'].tolist())

        # Validation
        model.eval()
        val = evaluate(loaders['val'])
        print(f"epoch {epoch}: last train loss {loss.item():.4f}, val loss {val['loss']:.4f} "
              f"(forces {val['forces_loss']:.4f})")
        history["epochs"].append({
            "train_loss": loss.item(),
            "val_loss": val["loss"],
            "val_forces_loss": val["forces_loss"],
            "train_indices_seen": seen,
        })

    test_loss = evaluate(loaders['test'])["loss"]
    print(f"test loss {test_loss:.4f}")
    return {
        "stats": stats,
        "splits": {"train": train_indices.indices, "val": val_indices.indices, "test": test_indices.indices},
        "history": history,
        "test_loss": test_loss,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".", help="directory holding (or receiving) structures.db")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader workers (the guide uses 4)")
    parser.add_argument("--epochs", type=int, default=2, help="num_epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    os.chdir(args.workdir)
    main(num_workers=args.num_workers, num_epochs=args.epochs, seed=args.seed)
