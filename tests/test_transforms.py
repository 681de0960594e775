"""Transforms: rotations/reflections checked against a real EMT calculator, uniformity of the drawn
rotations, probability and seeding semantics (also inside DataLoader workers), and exact inverses of
the label normalisations."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from mlff_distiller.data.keys import Key
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron
from torch.utils.data import DataLoader, Dataset

from mlff_distiller.data.transforms import (
    AddNoise,
    Compose,
    NormalizeEnergy,
    NormalizeForces,
    RandomReflection,
    RandomRotation,
    apply_orthogonal_transform,
    random_reflection_matrix,
    random_rotation_matrix,
)

TOL = 1e-6  # eV, eV/Å, eV/Å³ in float64


# ----------------------------------------------------------------------------- structures and samples


def _bulk() -> Atoms:
    """A periodic, sheared, rattled Cu/Ni/Al fcc supercell (anisotropic, off-diagonal stress)."""
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((2, 2, 2))
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[::3] = "Ni"
    symbols[1::5] = "Al"
    atoms.set_chemical_symbols(list(symbols))
    strain = np.array([[1.03, 0.04, 0.0], [0.0, 0.97, 0.02], [0.03, 0.0, 1.01]])
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.rattle(0.06, seed=3)
    return atoms


def _cluster() -> Atoms:
    """A small non-periodic Cu cluster (zero cell, pbc False): energy and forces, no stress."""
    atoms = Icosahedron("Cu", noshells=2)
    atoms.positions += 1.0  # away from the origin, so rotation about the origin moves it
    atoms.rattle(0.05, seed=4)
    atoms.cell[:] = 0.0
    atoms.pbc = False
    return atoms


def emt_labels(atoms: Atoms) -> dict:
    """Energy, forces (and stress when periodic) from a fresh EMT calculator, float64."""
    a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    a.calc = EMT()
    out = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
    if a.pbc.all():
        out["stress"] = a.get_stress(voigt=False)
    return out


def make_sample(atoms: Atoms, dtype=torch.float64, with_atoms: bool = True, idx: int = 0) -> dict:
    labels = emt_labels(atoms)
    f = lambda x: torch.tensor(np.asarray(x), dtype=dtype)  # noqa: E731
    sample = {
        "positions": f(atoms.positions),
        "species": torch.tensor(atoms.numbers, dtype=torch.int64),
        "cell": f(atoms.cell.array),
        "pbc": torch.tensor(atoms.pbc, dtype=torch.bool),
        "natoms": torch.tensor(len(atoms), dtype=torch.int64),
        "idx": torch.tensor(idx, dtype=torch.int64),
    }
    sample.update({k: f(v) for k, v in labels.items()})
    if with_atoms:
        labelled = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        labelled.calc = SinglePointCalculator(labelled, **labels)
        sample["atoms"] = labelled
    return sample


def atoms_from_tensors(sample: dict) -> Atoms:
    return Atoms(
        numbers=sample["species"].numpy(),
        positions=sample["positions"].double().numpy(),
        cell=sample["cell"].double().numpy(),
        pbc=sample["pbc"].numpy(),
    )


def fitted_matrix(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """Q with after = before @ Q.T, by least squares over the atoms."""
    qt, *_ = np.linalg.lstsq(before.double().numpy(), after.double().numpy(), rcond=None)
    return qt.T


@pytest.fixture(scope="module")
def bulk_sample() -> dict:
    return make_sample(_bulk())


@pytest.fixture(scope="module")
def cluster_sample() -> dict:
    return make_sample(_cluster())


def _snapshot(sample: dict) -> dict:
    return {k: v.clone() for k, v in sample.items() if isinstance(v, torch.Tensor)}


# ----------------------------------------------------------------------------- physics against EMT


@pytest.mark.parametrize("cls, det", [(RandomRotation, 1.0), (RandomReflection, -1.0)])
@pytest.mark.parametrize("which", ["bulk", "cluster"])
@pytest.mark.parametrize("seed", [0, 1])
def test_transformed_labels_equal_emt_on_transformed_structure(cls, det, which, seed, request):
    sample = request.getfixturevalue(f"{which}_sample")
    before = _snapshot(sample)
    before_atoms_pos = sample["atoms"].positions.copy()
    out = cls(p=1.0, seed=seed)(sample)

    # it is really a (proper / improper) orthogonal map of the structure, and it moved the atoms
    q = fitted_matrix(sample["positions"], out["positions"])
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(q) == pytest.approx(det, abs=1e-10)
    assert (out["positions"] - sample["positions"]).abs().max() > 0.5
    assert (out["forces"] - sample["forces"]).abs().max() > 1e-2

    # the transformed labels are what a real calculator gives on the transformed structure
    ref = emt_labels(atoms_from_tensors(out))
    assert out["energy"].item() == pytest.approx(ref["energy"], abs=TOL)
    assert torch.equal(out["energy"], sample["energy"])
    np.testing.assert_allclose(out["forces"].numpy(), ref["forces"], atol=TOL)
    if which == "bulk":
        np.testing.assert_allclose(out["stress"].numpy(), ref["stress"], atol=TOL)
        assert np.abs(ref["stress"] - sample["stress"].numpy()).max() > 1e-3  # stress did change
        volume = np.abs(np.linalg.det(out["cell"].numpy()))
        np.testing.assert_allclose(volume, _bulk().get_volume(), rtol=1e-12)
    else:
        assert "stress" not in out and torch.equal(out["cell"], torch.zeros(3, 3, dtype=torch.float64))
    # the wrong convention (F @ Q instead of F @ Qᵀ) would be caught by this comparison
    assert np.abs(sample["forces"].numpy() @ q - ref["forces"]).max() > 1e-2

    # atoms follows the tensors and its calculator returns the transformed labels
    atoms = out["atoms"]
    assert atoms is not sample["atoms"]
    np.testing.assert_allclose(atoms.positions, out["positions"].numpy(), atol=1e-12)
    np.testing.assert_allclose(atoms.cell.array, out["cell"].numpy(), atol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(out["energy"].item(), abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), out["forces"].numpy(), atol=1e-12)
    if which == "bulk":
        np.testing.assert_allclose(atoms.get_stress(voigt=False), out["stress"].numpy(), atol=1e-12)
    ref_atoms = emt_labels(atoms)
    np.testing.assert_allclose(ref_atoms["forces"], atoms.get_forces(), atol=TOL)

    # the input sample (possibly a cached one) is untouched
    for k, v in before.items():
        assert torch.equal(sample[k], v), k
    np.testing.assert_array_equal(sample["atoms"].positions, before_atoms_pos)
    np.testing.assert_array_equal(sample["atoms"].get_forces(), sample["forces"].numpy())


def test_float32_sample_keeps_dtype_and_matches_float64():
    atoms = _bulk()
    s64, s32 = make_sample(atoms), make_sample(atoms, dtype=torch.float32)
    o64, o32 = RandomRotation(p=1, seed=11)(s64), RandomRotation(p=1, seed=11)(s32)
    for key in ("positions", "cell", "forces", "stress", "energy"):
        assert o32[key].dtype == torch.float32
        np.testing.assert_allclose(o32[key].numpy(), o64[key].numpy(), rtol=1e-5, atol=1e-5)
    # atoms keeps full float64 precision: the same numbers as the float64 path
    np.testing.assert_allclose(o32["atoms"].positions, o64["atoms"].positions, atol=1e-12)


def test_apply_orthogonal_transform_rules():
    sample = make_sample(_bulk(), with_atoms=False)
    q = random_rotation_matrix(generator=torch.Generator().manual_seed(2))
    out = apply_orthogonal_transform(sample, q)
    torch.testing.assert_close(out["positions"], sample["positions"] @ q.T)
    torch.testing.assert_close(out["cell"], sample["cell"] @ q.T)
    torch.testing.assert_close(out["stress"], q @ sample["stress"] @ q.T)
    for key in ("species", "pbc", "natoms", "idx", "energy"):
        assert out[key] is sample[key]
    with pytest.raises(ValueError, match="orthogonal"):
        apply_orthogonal_transform(sample, 2 * torch.eye(3))
    # an undeclared floating key is never left silently unrotated
    with pytest.raises(ValueError, match="my_dipole"):
        apply_orthogonal_transform({**sample, "my_dipole": torch.ones(3)}, q)
    dipole = torch.ones(3, dtype=torch.float64)
    out = apply_orthogonal_transform({**sample, "my_dipole": dipole}, q, {"my_dipole": "vector"})
    torch.testing.assert_close(out["my_dipole"], torch.ones(3, dtype=torch.float64) @ q.T)
    out = apply_orthogonal_transform({**sample, "my_dipole": dipole}, q,
                                     keys=[Key("my_dipole", "structure", (3,), rotation="vector")])
    torch.testing.assert_close(out["my_dipole"], torch.ones(3, dtype=torch.float64) @ q.T)
    # a declared key turns by its declaration: dipole is a vector
    out = apply_orthogonal_transform({**sample, "dipole": dipole}, q)
    torch.testing.assert_close(out["dipole"], dipole @ q.T)
    with pytest.raises(ValueError, match="key_kinds"):
        apply_orthogonal_transform(sample, q, {"x": "spinor"})
    with pytest.raises(ValueError, match="key_kinds"):
        RandomRotation(key_kinds={"x": "spinor"})
    out = RandomRotation(p=1.0, key_kinds={"dipole": "invariant"})({**sample, "dipole": torch.ones(3)})
    assert torch.equal(out["dipole"], torch.ones(3))


def test_atoms_momenta_and_unknown_arrays():
    sample = make_sample(_cluster())
    atoms = sample["atoms"].copy()
    atoms.calc = sample["atoms"].calc
    momenta = np.random.default_rng(0).normal(size=(len(atoms), 3))
    atoms.set_momenta(momenta)
    q = random_reflection_matrix(generator=torch.Generator().manual_seed(5)).numpy()
    out = apply_orthogonal_transform({**sample, "atoms": atoms}, q)
    np.testing.assert_allclose(out["atoms"].get_momenta(), momenta @ q.T, atol=1e-12)
    atoms.new_array("my_vectors", np.ones((len(atoms), 3)))
    with pytest.raises(ValueError, match="my_vectors"):
        apply_orthogonal_transform({**sample, "atoms": atoms}, q)


# ----------------------------------------------------------------------------- uniformity


def _ks_rotation_angle(r: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance of the rotation angles from Haar's CDF (θ - sin θ) / π."""
    cos = ((torch.diagonal(r, dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    theta = np.sort(torch.arccos(cos).numpy())
    cdf = (theta - np.sin(theta)) / np.pi
    n = len(theta)
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


def test_random_rotations_are_uniform_on_so3():
    n = 20000
    r = random_rotation_matrix(n, generator=torch.Generator().manual_seed(0))
    assert r.shape == (n, 3, 3) and r.dtype == torch.float64
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(n, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(n, dtype=torch.float64))
    # Haar moments: E[R] = 0, E[R_ij^2] = 1/3, E[tr R] = 0, E[(tr R)^2] = 1 (tolerances ~5 sigma)
    assert r.mean(0).abs().max() < 0.021
    assert ((r**2).mean(0) - 1 / 3).abs().max() < 0.011
    trace = torch.diagonal(r, dim1=-2, dim2=-1).sum(-1)
    assert abs(trace.mean().item()) < 0.04
    assert abs((trace**2).mean().item() - 1.0) < 0.05
    assert _ks_rotation_angle(r) < 1.95 / math.sqrt(n)  # KS at the 0.1 % level


def test_random_reflections_are_uniform_improper():
    n = 20000
    q = random_reflection_matrix(n, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(q @ q.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(n, 3, 3))
    torch.testing.assert_close(torch.linalg.det(q), -torch.ones(n, dtype=torch.float64))
    assert q.mean(0).abs().max() < 0.021
    assert _ks_rotation_angle(-q) < 1.95 / math.sqrt(n)


def test_random_rotation_transform_gives_uniform_directions():
    """Through the transform itself: a fixed unit vector ends up uniform on the sphere."""
    sample = {"positions": torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)}
    transform = RandomRotation(p=1.0, seed=123)
    v = torch.cat([transform(sample)["positions"] for _ in range(3000)])
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3000, dtype=torch.float64))
    assert v.mean(0).abs().max() < 0.055  # se = 1/sqrt(3 * 3000)
    assert ((v**2).mean(0) - 1 / 3).abs().max() < 0.03
    # Archimedes: each coordinate is uniform on [-1, 1]
    z = np.sort(v[:, 2].numpy())
    assert np.max(np.abs((z + 1) / 2 - np.arange(1, 3001) / 3000)) < 1.95 / math.sqrt(3000)


# ----------------------------------------------------------------------------- probability


def _tiny() -> dict:
    return {"positions": torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)}


@pytest.mark.parametrize("make", [lambda p: RandomRotation(p=p), lambda p: RandomReflection(p=p),
                                  lambda p: AddNoise(std=0.1, p=p)])
def test_probability_semantics(make):
    sample = _tiny()
    torch.manual_seed(0)
    identity = make(0.0)
    for _ in range(50):
        assert identity(sample) is sample
    always = make(1.0)
    assert all(not torch.equal(always(sample)["positions"], sample["positions"]) for _ in range(50))
    sometimes = make(0.3)
    applied = [not torch.equal(sometimes(sample)["positions"], sample["positions"]) for _ in range(3000)]
    assert abs(np.mean(applied) - 0.3) < 0.05  # binomial se 0.0084
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="probability"):
            make(bad)


# ----------------------------------------------------------------------------- reproducibility


def _draws(transform, n=5) -> list:
    return [transform(_tiny())["positions"] for _ in range(n)]


@pytest.mark.parametrize("cls", [RandomRotation, RandomReflection, lambda p: AddNoise(0.1, p=p)])
def test_global_seed_reproducible(cls):
    torch.manual_seed(42)
    a = _draws(cls(p=0.5), 20)
    torch.manual_seed(42)
    b = _draws(cls(p=0.5), 20)
    torch.manual_seed(43)
    c = _draws(cls(p=0.5), 20)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_private_seed_reproducible_and_independent_of_global_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = _draws(RandomRotation(p=0.5, seed=7), 20)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG not consumed
    torch.manual_seed(99)
    b = _draws(RandomRotation(p=0.5, seed=7), 20)
    c = _draws(RandomRotation(p=0.5, seed=8), 20)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert len({tuple(x.flatten().tolist()) for x in a}) > 5  # a stream, not one repeated draw
    # a pickled copy (spawned worker) restarts the stream from the seed
    t = RandomRotation(p=0.5, seed=7)
    _draws(t, 3)
    assert all(torch.equal(x, y) for x, y in zip(_draws(pickle.loads(pickle.dumps(t)), 20), a))


class _SameStructureDataset(Dataset):
    """Every index is the same EMT-labelled structure, so any difference comes from the transform."""

    def __init__(self, sample: dict, transform, n: int = 8):
        self.sample, self.transform, self.n = sample, transform, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.transform({**self.sample, "idx": torch.tensor(i)})


def _as_list(batch: list) -> list:
    return batch


def _epochs(dataset: Dataset, seed: int, epochs: int = 2) -> list[dict[int, torch.Tensor]]:
    loader = DataLoader(
        dataset, batch_size=2, shuffle=False, num_workers=2, collate_fn=_as_list,
        generator=torch.Generator().manual_seed(seed),
    )
    result = []
    for _ in range(epochs):
        drawn = {}
        for batch in loader:
            for s in batch:
                # forces must follow the positions inside the worker, too
                q = fitted_matrix(dataset.sample["positions"], s["positions"])
                expected = dataset.sample["forces"].numpy() @ q.T
                np.testing.assert_allclose(s["forces"].numpy(), expected, atol=1e-10)
                drawn[int(s["idx"])] = s["positions"]
        result.append(drawn)
    return result


@pytest.mark.parametrize("seed_arg", [None, 5])
def test_dataloader_workers_differ_and_reproduce(seed_arg):
    sample = make_sample(_cluster(), with_atoms=False)
    dataset = _SameStructureDataset(sample, RandomRotation(p=1.0, seed=seed_arg))
    first = _epochs(dataset, seed=0)
    again = _epochs(dataset, seed=0)
    other = _epochs(dataset, seed=1)
    e1, e2 = first
    # every sample of an epoch got its own rotation, across both workers
    flat = [tuple(np.round(e1[i].numpy().ravel(), 10)) for i in range(8)]
    assert len(set(flat)) == 8
    # a new epoch draws new rotations
    assert all(not torch.equal(e1[i], e2[i]) for i in range(8))
    # the same loader generator seed reproduces everything; another seed does not
    for ep, ep_again in zip(first, again):
        assert all(torch.equal(ep[i], ep_again[i]) for i in range(8))
    assert all(not torch.equal(e1[i], other[0][i]) for i in range(8))


# ----------------------------------------------------------------------------- AddNoise


def test_add_noise_perturbs_positions_only_and_does_not_relabel():
    sample = make_sample(_bulk())
    before = _snapshot(sample)
    noise = AddNoise(std=0.02, p=1.0, seed=3)
    displacements = []
    for _ in range(40):
        out = noise(sample)
        displacements.append((out["positions"] - sample["positions"]).numpy())
        for key in ("energy", "forces", "stress", "cell", "species", "pbc", "natoms"):
            assert torch.equal(out[key], sample[key]), key
    d = np.concatenate(displacements).ravel()
    assert abs(d.std() / 0.02 - 1) < 0.05 and abs(d.mean()) < 0.02 * 0.05
    for k, v in before.items():
        assert torch.equal(sample[k], v), k

    # atoms follows the noisy positions but keeps the clean structure's labels ...
    atoms = out["atoms"]
    np.testing.assert_allclose(atoms.positions, out["positions"].numpy(), atol=1e-12)
    np.testing.assert_array_equal(atoms.get_forces(), sample["forces"].numpy())
    assert atoms.get_potential_energy() == sample["energy"].item()
    # ... which no longer belong to those positions (documented: no relabelling)
    assert np.abs(emt_labels(atoms)["forces"] - sample["forces"].numpy()).max() > 1e-2
    doc = AddNoise.__doc__.lower()
    assert "not relabel" in doc and "denoising" in doc


def test_add_noise_arguments():
    assert torch.equal(AddNoise(std=0.0, p=1.0)(_tiny())["positions"], _tiny()["positions"])
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="std"):
            AddNoise(std=bad)
    out = AddNoise(std=0.1, p=1.0)({"positions": torch.zeros(4, 3, dtype=torch.float32)})
    assert out["positions"].dtype == torch.float32 and out["positions"].abs().sum() > 0


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("per_atom", [True, False])
def test_normalize_energy_formula_and_exact_inverse(per_atom, bulk_sample):
    e, n = bulk_sample["energy"].item(), int(bulk_sample["natoms"])
    mean, std = (0.35, 0.12) if per_atom else (10.0, 3.0)
    t = NormalizeEnergy(mean=mean, std=std, per_atom=per_atom)
    out = t(bulk_sample)
    expected = (e / n - mean) / std if per_atom else (e - mean) / std
    assert out["energy"].item() == pytest.approx(expected, rel=1e-14)
    assert out["energy"].dtype == torch.float64 and out["energy"].shape == ()
    for key in ("positions", "forces", "stress"):
        assert out[key] is bulk_sample[key]
    back = t.inverse(out)
    assert back["energy"].item() == pytest.approx(e, rel=1e-14)
    # predictions: a batch of normalised energies and atom counts back to eV
    natoms = torch.tensor([1, 32, 7])
    energies = torch.tensor([-3.0, 11.5, 0.25], dtype=torch.float64)
    pred = t.normalize_energy(energies, natoms)
    torch.testing.assert_close(t.inverse_energy(pred, natoms), energies, rtol=1e-14, atol=1e-12)
    manual = (energies / natoms - mean) / std if per_atom else (energies - mean) / std
    torch.testing.assert_close(pred, manual)


def test_normalize_energy_batch_respects_mask():
    t = NormalizeEnergy(mean=-3.0, std=0.5, per_atom=True)
    batch = {
        "energy": torch.tensor([-30.0, 0.0, -12.5], dtype=torch.float64),
        "energy_mask": torch.tensor([True, False, True]),
        "natoms": torch.tensor([10, 4, 5]),
    }
    out = t(batch)
    torch.testing.assert_close(out["energy"], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(t.inverse(out)["energy"], batch["energy"])
    assert out["energy"][1] == 0.0


def test_normalize_forces_exact_inverse_and_padding():
    t = NormalizeForces(rms=0.37)
    forces = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    forces[1, 3:] = 0.0  # padding
    out = t({"forces": forces})
    torch.testing.assert_close(out["forces"], forces / 0.37)
    assert torch.equal(out["forces"][1, 3:], torch.zeros(2, 3, dtype=torch.float64))
    torch.testing.assert_close(t.inverse(out)["forces"], forces, rtol=1e-15, atol=0)
    torch.testing.assert_close(t.inverse_forces(t.normalize_forces(forces)), forces, rtol=1e-15, atol=0)


def test_normalisation_is_a_no_op_without_labels_and_validates():
    sample = {"positions": torch.zeros(2, 3), "natoms": torch.tensor(2)}
    assert NormalizeEnergy(0.0, 1.0)(sample) is sample
    assert NormalizeForces(1.0)(sample) is sample
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="std"):
            NormalizeEnergy(mean=0.0, std=bad)
        with pytest.raises(ValueError, match="rms"):
            NormalizeForces(rms=bad)
    with pytest.raises(ValueError, match="mean"):
        NormalizeEnergy(mean=float("nan"), std=1.0)
    with pytest.raises(ValueError, match="natoms"):
        NormalizeEnergy(0.0, 1.0, per_atom=True)({"energy": torch.tensor(1.0)})


def _pair_energy(x: torch.Tensor) -> torch.Tensor:
    """A smooth differentiable toy potential (eV) of positions x [N, 3] Å."""
    d = torch.cdist(x, x) + torch.eye(len(x), dtype=x.dtype)
    return 0.5 * (0.1 * (d - 2.5) ** 2 * (1 - torch.eye(len(x), dtype=x.dtype))).sum()


def test_documented_gradient_consistency():
    x = torch.tensor(_cluster().positions, requires_grad=True)
    n = len(x)
    energy = _pair_energy(x)
    (forces,) = torch.autograd.grad(-energy, x, create_graph=True)

    # per_atom=False with rms == std: normalised forces are -d(normalised energy)/dx
    t_e, t_f = NormalizeEnergy(mean=5.0, std=0.7, per_atom=False), NormalizeForces(rms=0.7)
    (g,) = torch.autograd.grad(-t_e.normalize_energy(energy), x, retain_graph=True)
    torch.testing.assert_close(g, t_f.normalize_forces(forces.detach()))

    # per_atom=True: -de/dx = F / (N std), which is not F / rms for rms == std
    t_e = NormalizeEnergy(mean=5.0, std=0.7, per_atom=True)
    (g,) = torch.autograd.grad(-t_e.normalize_energy(energy, n), x, retain_graph=True)
    torch.testing.assert_close(g, forces.detach() / (n * 0.7))
    assert not torch.allclose(g, t_f.normalize_forces(forces.detach()))

    # the documented recipe: prediction -> eV with inverse_energy, F = -dE/dx, then F / rms
    pred = t_e.normalize_energy(_pair_energy(x), n)  # stands for a model's normalised output
    (f_pred,) = torch.autograd.grad(-t_e.inverse_energy(pred, n), x)
    torch.testing.assert_close(t_f.normalize_forces(f_pred), t_f.normalize_forces(forces.detach()))


# ----------------------------------------------------------------------------- Compose and custom


def test_compose_inverse_undoes_normalisation_after_augmentation(bulk_sample):
    mean, std, rms = 0.3, 0.2, 0.5
    pipeline = Compose([
        RandomRotation(p=1.0, seed=4),
        AddNoise(std=0.01, p=0.0),
        NormalizeEnergy(mean=mean, std=std, per_atom=True),
        NormalizeForces(rms=rms),
    ])
    out = pipeline(bulk_sample)
    rotated = RandomRotation(p=1.0, seed=4)(bulk_sample)
    torch.testing.assert_close(out["forces"], rotated["forces"] / rms)
    back = pipeline.inverse(out)
    torch.testing.assert_close(back["forces"], rotated["forces"], rtol=1e-14, atol=1e-14)
    assert back["energy"].item() == pytest.approx(bulk_sample["energy"].item(), rel=1e-14)
    # atoms stays in physical units and matches the de-normalised tensors
    np.testing.assert_allclose(out["atoms"].get_forces(), back["forces"].numpy(), atol=1e-12)
    # inverse of model predictions given as a dict
    preds = {"energy": out["energy"], "natoms": bulk_sample["natoms"], "forces": out["forces"]}
    preds = pipeline.inverse(preds)
    assert preds["energy"].item() == pytest.approx(bulk_sample["energy"].item(), rel=1e-14)
    text = repr(pipeline)
    for part in ("RandomRotation(p=1.0", "AddNoise(std=0.01",
                 "NormalizeEnergy(mean=0.3, std=0.2, per_atom=True)", "NormalizeForces(rms=0.5)"):
        assert part in text
    assert len(pipeline) == 4


def test_custom_transform_from_the_guide():
    # the guide's "Custom Transforms" snippet, as written
    from mlff_distiller.data import Compose, RandomRotation, Transform

    class MyCustomTransform(Transform):
        def __init__(self, param1, param2):
            self.param1 = param1
            self.param2 = param2

        def __call__(self, sample):
            sample['positions'] = self.transform_positions(sample['positions'])
            return sample

        def transform_positions(self, positions):
            return positions

    transform = Compose([
        MyCustomTransform(param1=1.0, param2=2.0),
        RandomRotation(p=0.5),
    ])
    sample = make_sample(_cluster(), with_atoms=False)
    out = transform(dict(sample))
    assert out["positions"].shape == sample["positions"].shape
    assert repr(MyCustomTransform(1.0, 2.0)) == "MyCustomTransform(param1=1.0, param2=2.0)"
    assert isinstance(transform.transforms[0], Transform)
    with pytest.raises(TypeError):
        Transform()  # abstract
    with pytest.raises(TypeError):
        Compose([1])


def test_reprs():
    assert repr(RandomRotation(p=0.5)) == "RandomRotation(p=0.5, seed=None, key_kinds=None)"
    assert repr(RandomReflection(p=0.3, seed=1)) == "RandomReflection(p=0.3, seed=1, key_kinds=None)"
    assert repr(AddNoise(std=0.01, p=0.5)) == "AddNoise(std=0.01, p=0.5, seed=None)"
    assert repr(Compose([])) == "Compose([])"


# ----------------------------------------------------------------------------- through MolecularDataset


def _write(fmt: str, path, structures: list[Atoms]) -> None:
    if fmt == "ase":
        from ase.db import connect

        with connect(path) as db:
            for a in structures:
                db.write(a)
    elif fmt == "xyz":
        from ase.io import write

        write(path, structures, format="extxyz")
    else:
        import h5py

        with h5py.File(path, "w") as f:  # the guide's HDF5 layout
            group = f.create_group("structures")
            for i, a in enumerate(structures):
                g = group.create_group(str(i))
                g.create_dataset("positions", data=a.positions)
                g.create_dataset("species", data=a.numbers)
                g.create_dataset("cell", data=a.cell.array)
                g.create_dataset("pbc", data=a.pbc)
                g.create_dataset("energy", data=a.get_potential_energy())
                g.create_dataset("forces", data=a.get_forces())


def _check_against_emt(s: dict) -> None:
    ref = emt_labels(atoms_from_tensors(s))
    assert s["energy"].item() == pytest.approx(ref["energy"], abs=TOL)
    np.testing.assert_allclose(s["forces"].numpy(), ref["forces"], atol=TOL)
    if "stress" in s:
        np.testing.assert_allclose(s["stress"].numpy(), ref["stress"], atol=TOL)


@pytest.mark.parametrize("fmt, suffix", [("ase", ".db"), ("xyz", ".xyz"), ("hdf5", ".h5")])
def test_transforms_through_the_dataset(fmt, suffix, tmp_path):
    from mlff_distiller.data import MolecularDataset
    from mlff_distiller.data.readers import READERS

    module = READERS[fmt].split(":")[0]
    try:
        __import__(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            pytest.skip(f"reader {module} not in the tree yet")
        raise

    structures = []
    for k, a in enumerate([_bulk(), _cluster(), _bulk()]):
        a.rattle(0.01, seed=10 + k)
        labels = emt_labels(a)
        a.calc = SinglePointCalculator(a, **labels)
        structures.append(a)
    path = tmp_path / f"data{suffix}"
    _write(fmt, path, structures)

    for cache in (False, True):
        dataset = MolecularDataset(path, format=fmt, cache=cache, dtype=torch.float64,
                                   transform=Compose([RandomRotation(p=1.0), RandomReflection(p=0.5)]))
        raw = dataset.get_structure(0).positions.copy()
        first, second = dataset[0], dataset[0]
        assert not torch.equal(first["positions"], second["positions"])  # a fresh draw each time
        for i in range(len(dataset)):
            s = dataset[i]
            _check_against_emt(s)
            np.testing.assert_allclose(s["atoms"].get_forces(), s["forces"].numpy(), atol=1e-12)
        # the stored (possibly cached) structure was not modified by the transforms
        np.testing.assert_array_equal(dataset.get_structure(0).positions, raw)
        dataset.transform = None
        np.testing.assert_array_equal(dataset[0]["positions"].numpy(), raw)
        dataset.transform = Compose([RandomRotation(p=1.0), RandomReflection(p=0.5)])

    # inside DataLoader workers (batched fetch, no atoms)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=_as_list,
                        generator=torch.Generator().manual_seed(0))
    seen = [s for batch in loader for s in batch]
    assert len(seen) == len(dataset)
    for s in seen:
        _check_against_emt(s)
