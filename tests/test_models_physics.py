"""Physics of every student (float64, random weights): symmetries, periodic images, smooth cutoff.

References are independent recomputations: the same model on rotated / translated / permuted /
repeated structures, finite differences of the energy across the cutoff.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from mlff_distiller.models import StudentModel, atoms_to_batch, available_models, build_model, predict
from mlff_distiller.structures import builtin

SPECIES = [1, 6, 8, 29]
CUTOFF = 4.0
MODELS = available_models()


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_for(name: str, seed: int = 0) -> StudentModel:
    torch.manual_seed(seed)
    model = build_model(name, species=SPECIES, cutoff=CUTOFF, dtype=torch.float64, hidden=16, layers=2, rbf=8)
    model.set_reference_energies({1: -13.6, 6: -1030.0, 8: -2040.0, 29: -3.5})
    model.set_scale_shift(0.9, -0.2)
    return model


def run(model, atoms, **kw):
    return predict(model, atoms_to_batch(atoms, CUTOFF, torch.float64), stress=bool(atoms.pbc.any()), **kw)


def molecule() -> Atoms:
    atoms = builtin("aspirin")
    atoms.rattle(0.05, seed=4)
    return atoms


def periodic() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.06, 0.0], [0.0, 1.03, 0.02], [0.05, 0.0, 0.96]]), scale_atoms=True)
    atoms.rattle(0.1, seed=5)
    return atoms


STRUCTURES = {"molecule": molecule, "periodic": periodic}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", STRUCTURES)
def test_rotation_invariant_energy_equivariant_forces_and_stress(name, kind):
    model = model_for(name)
    atoms = STRUCTURES[kind]()
    rot = Rotation.random(random_state=7).as_matrix()
    turned = atoms.copy()
    turned.positions = atoms.positions @ rot.T
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    a, b = run(model, atoms), run(model, turned)
    assert abs(float(a["energy"] - b["energy"])) < 1e-10 * max(1.0, abs(float(a["energy"])))
    np.testing.assert_allclose(b["forces"].numpy(), a["forces"].numpy() @ rot.T, rtol=0, atol=1e-10)
    assert a["forces"].abs().max() > 1e-5
    if kind == "periodic":
        np.testing.assert_allclose(b["stress"][0].numpy(), rot @ a["stress"][0].numpy() @ rot.T, rtol=0, atol=1e-11)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", STRUCTURES)
def test_translation_and_permutation_invariance(name, kind):
    model = model_for(name)
    atoms = STRUCTURES[kind]()
    base = run(model, atoms)
    moved = atoms.copy()
    moved.positions += np.array([1.7, -2.3, 0.4])
    if kind == "periodic":
        moved.wrap()  # a different periodic image of every atom: same structure
    out = run(model, moved)
    torch.testing.assert_close(out["energy"], base["energy"], rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(out["forces"], base["forces"], rtol=0, atol=1e-10)
    perm = np.random.default_rng(8).permutation(len(atoms))
    shuffled = atoms[perm]
    out = run(model, shuffled)
    torch.testing.assert_close(out["energy"], base["energy"], rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(out["forces"], base["forces"][perm], rtol=0, atol=1e-10)
    if kind == "periodic":
        torch.testing.assert_close(out["stress"], base["stress"], rtol=0, atol=1e-11)


@pytest.mark.parametrize("name", MODELS)
def test_supercell_has_eight_times_the_energy_same_forces_and_stress(name):
    model = model_for(name)
    atoms = periodic()
    big = atoms.repeat((2, 2, 2))
    a, b = run(model, atoms), run(model, big)
    torch.testing.assert_close(b["energy"], 8 * a["energy"], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(b["forces"], a["forces"].repeat(8, 1), rtol=0, atol=1e-10)
    torch.testing.assert_close(b["stress"], a["stress"], rtol=0, atol=1e-11)
    assert a["stress"].abs().max() > 1e-6


@pytest.mark.parametrize("name", MODELS)
def test_smooth_cutoff_energy_and_force_vanish_continuously(name):
    """A C-O pair pulled across the cutoff: E -> E(apart) and F -> 0 continuously (envelope)."""
    model = model_for(name)
    model.set_reference_energies({z: 0.0 for z in SPECIES})  # E = interaction only: no cancellation
    model.set_scale_shift(1.0, 0.0)

    def pair(r):
        out = run(model, Atoms("CO", positions=[[0, 0, 0], [r, 0, 0]]))
        return float(out["energy"][0]), float(out["forces"][1, 0])

    apart, f_apart = pair(CUTOFF + 0.5)
    assert f_apart == 0.0
    assert pair(CUTOFF + 1e-9) == (apart, 0.0)
    assert abs(apart) < 1e-15
    assert abs(pair(CUTOFF - 1.0)[0]) > 1e-6  # there is an interaction
    de, f = zip(*[(abs(e - apart), abs(force)) for e, force in (pair(CUTOFF - d) for d in (1e-1, 1e-2, 1e-3))])
    assert min(de) > 0 and min(f) > 0
    # envelope u ~ (1 - r/rc)^3 at the cutoff: per decade closer, energy differences fall ~1000x, forces ~100x
    assert de[1] / de[0] < 3e-3 and de[2] / de[1] < 3e-3
    assert f[1] / f[0] < 3e-2 and f[2] / f[1] < 3e-2
    # the force is the derivative of the energy right up to the cutoff
    h = 1e-4
    r = CUTOFF - 0.05
    fd = -(pair(r + h)[0] - pair(r - h)[0]) / (2 * h)
    assert abs(pair(r)[1] - fd) < 1e-4 * abs(fd) and abs(fd) > 1e-9


@pytest.mark.parametrize("name", MODELS)
def test_edges_longer_than_the_model_cutoff_are_ignored(name):
    """A batch built with a larger cutoff (a loader shared by several models) gives the same result."""
    model = model_for(name)
    atoms = periodic()
    a = run(model, atoms)
    wide = atoms_to_batch(atoms, CUTOFF + 1.5, torch.float64)
    assert wide["edge_index"].shape[1] > atoms_to_batch(atoms, CUTOFF)["edge_index"].shape[1]
    b = predict(model, wide, stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("name", MODELS)
def test_structure_of_only_isolated_atoms_and_a_single_atom(name):
    model = model_for(name)
    out = run(model, Atoms("Cu", positions=[[0, 0, 0]]))
    assert float(out["energy"][0]) == pytest.approx(-3.5 - 0.2, abs=1e-12)
    assert torch.equal(out["forces"], torch.zeros(1, 3, dtype=torch.float64))
    # one atom in a periodic cell larger than the cutoff: no edges, finite zero stress
    lonely = Atoms("Cu", positions=[[0, 0, 0]], cell=np.eye(3) * (CUTOFF + 1), pbc=True)
    out = run(model, lonely)
    assert float(out["energy"][0]) == pytest.approx(-3.7, abs=1e-12)
    assert torch.equal(out["stress"], torch.zeros(1, 3, 3, dtype=torch.float64))
