"""StudentCalculator: equals the model's direct predictions, derivatives of its own energy, skin == rebuild."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlff_distiller.calculator import StudentCalculator, load_calculator
from mlff_distiller.models import atoms_to_batch, build_model, predict, save
from mlff_distiller.structures import builtin


def _model(species, dtype=torch.float64, seed=0, cutoff=4.0):
    torch.manual_seed(seed)
    model = build_model("schnet", species=species, cutoff=cutoff, dtype=dtype)
    model.set_scale_shift(0.5, -0.1)
    return model


@pytest.fixture(scope="module")
def mol_model():
    return _model([1, 6, 8])


@pytest.fixture(scope="module")
def metal_model():
    return _model([29], cutoff=3.0)


def _rattled(name, sigma=0.05, seed=1):
    atoms = builtin(name)
    atoms.positions += np.random.default_rng(seed).normal(0, sigma, atoms.positions.shape)
    return atoms


def test_equals_direct_prediction_molecule(mol_model):
    atoms = _rattled("aspirin")
    atoms.calc = StudentCalculator(mol_model)
    ref = predict(mol_model, atoms_to_batch(atoms, mol_model.cutoff, dtype=torch.float64))
    assert atoms.get_potential_energy() == float(ref["energy"][0])
    assert atoms.get_potential_energy(force_consistent=True) == float(ref["energy"][0])
    np.testing.assert_array_equal(atoms.get_forces(), ref["forces"].numpy())
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    np.testing.assert_allclose(energies.sum(), atoms.get_potential_energy(), rtol=1e-12)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_equals_direct_prediction_periodic(metal_model):
    atoms = _rattled("cu32", sigma=0.08)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.02, 0], [0, 1.0, 0.01], [0, 0, 0.98]]), scale_atoms=True)
    atoms.calc = StudentCalculator(metal_model, skin=0.3)
    ref = predict(metal_model, atoms_to_batch(atoms, metal_model.cutoff, dtype=torch.float64), stress=True)
    np.testing.assert_allclose(atoms.get_potential_energy(), float(ref["energy"][0]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"].numpy(), rtol=0, atol=1e-12)
    from ase.stress import full_3x3_to_voigt_6_stress

    np.testing.assert_allclose(atoms.get_stress(), full_3x3_to_voigt_6_stress(ref["stress"][0].numpy()), atol=1e-12)


def test_forces_and_stress_are_derivatives_of_its_energy(metal_model, mol_model):
    atoms = _rattled("aspirin", sigma=0.1)
    atoms.calc = StudentCalculator(mol_model, skin=0.0)
    forces = atoms.get_forces()
    h = 1e-4
    for a, c in [(0, 0), (5, 1), (13, 2), (20, 0)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[a, c] += h
        minus.positions[a, c] -= h
        plus.calc = minus.calc = StudentCalculator(mol_model)
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert abs(fd - forces[a, c]) < 1e-6, (a, c, fd, forces[a, c])

    cu = _rattled("cu32", sigma=0.1)
    calc = StudentCalculator(metal_model)
    cu.calc = calc
    stress = cu.get_stress(voigt=False)
    volume = cu.get_volume()
    for i, j in [(0, 0), (1, 1), (0, 1), (1, 2)]:
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / 2
            strain[j, i] += sign * h / 2
            strained = cu.copy()
            strained.set_cell(cu.cell.array @ strain, scale_atoms=True)
            strained.calc = StudentCalculator(metal_model)
            energies.append(strained.get_potential_energy())
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert abs(fd - stress[i, j]) < 1e-7, (i, j, fd, stress[i, j])


def _nve(model, atoms, skin, steps):
    atoms = atoms.copy()
    calc = StudentCalculator(model, skin=skin)
    atoms.calc = calc
    thermalize_momenta(atoms, 1000, rng=np.random.default_rng(3))
    VelocityVerlet(atoms, timestep=1.0 * units.fs).run(steps)
    return atoms, calc.neighbor_builds


@pytest.mark.parametrize("name", ["aspirin", "cu32"])
def test_md_with_skin_equals_md_with_rebuilds(mol_model, metal_model, name):
    model = mol_model if name == "aspirin" else metal_model
    start = _rattled(name, sigma=0.05)
    steps = 40
    rebuilt, builds_rebuild = _nve(model, start, 0.0, steps)
    skinned, builds_skin = _nve(model, start, 0.4, steps)
    assert builds_rebuild == steps + 1
    assert 1 < builds_skin < steps / 2  # the cache was used, and also refreshed as atoms moved
    np.testing.assert_array_equal(skinned.positions, rebuilt.positions)
    np.testing.assert_array_equal(skinned.get_velocities(), rebuilt.get_velocities())


def test_cell_or_atoms_change_rebuilds(metal_model):
    atoms = _rattled("cu32")
    calc = StudentCalculator(metal_model, skin=1.0)
    atoms.calc = calc
    atoms.get_forces()
    bigger = atoms.copy()
    bigger.set_cell(atoms.cell.array * 1.03, scale_atoms=True)
    bigger.calc = calc
    ref = predict(metal_model, atoms_to_batch(bigger, metal_model.cutoff, dtype=torch.float64))
    np.testing.assert_allclose(bigger.get_forces(), ref["forces"].numpy(), atol=1e-12)
    fewer = atoms[:-1]
    fewer.calc = calc
    ref = predict(metal_model, atoms_to_batch(fewer, metal_model.cutoff, dtype=torch.float64))
    np.testing.assert_allclose(fewer.get_potential_energy(), float(ref["energy"][0]), atol=1e-12)


def test_batched_predict_equals_single_calls(mol_model, metal_model):
    calc = StudentCalculator(mol_model)
    structures = [_rattled("aspirin", seed=s) for s in range(3)] + [builtin("water"), builtin("ethanol")]
    out = calc.predict(structures, max_atoms_per_batch=50)
    assert len(out) == len(structures)
    for atoms, res in zip(structures, out):
        atoms.calc = StudentCalculator(mol_model)
        np.testing.assert_allclose(res["energy"], atoms.get_potential_energy(), atol=1e-10)
        np.testing.assert_allclose(res["forces"], atoms.get_forces(), atol=1e-10)
        assert res["stress"] is None
    cu = [_rattled("cu32", seed=s) for s in range(2)]
    out = StudentCalculator(metal_model).predict(cu, stress=True)
    for atoms, res in zip(cu, out):
        atoms.calc = StudentCalculator(metal_model)
        np.testing.assert_allclose(res["stress"], atoms.get_stress(voigt=False), atol=1e-10)


def test_threads_unknown_elements_and_saved_file(tmp_path, mol_model):
    before = torch.get_num_threads()
    try:
        atoms = builtin("ethanol")
        atoms.calc = StudentCalculator(mol_model, num_threads=1)
        torch.set_num_threads(2)
        atoms.get_forces()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    copper = Atoms("CuH", positions=[[0, 0, 0], [1.5, 0, 0]])
    copper.calc = StudentCalculator(mol_model)
    with pytest.raises(ValueError, match="Cu"):
        copper.get_potential_energy()
    path = save(mol_model, tmp_path / "student.safetensors")
    water = builtin("water")
    water.calc = load_calculator(path)
    ref = predict(mol_model, atoms_to_batch(water, mol_model.cutoff, dtype=torch.float64))
    np.testing.assert_array_equal(water.get_forces(), ref["forces"].numpy())


def test_ase_db_round_trip_and_optimiser(tmp_path, mol_model):
    from ase.db import connect
    from ase.optimize import BFGS

    atoms = _rattled("water", sigma=0.02)
    atoms.calc = StudentCalculator(mol_model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    with connect(tmp_path / "x.db") as db:
        db.write(atoms)
    row = connect(tmp_path / "x.db").get(1)
    assert row.energy == energy
    np.testing.assert_array_equal(row.forces, forces)
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    assert np.abs(atoms.get_forces()).max() < 0.05


def _langevin(model, atoms, skin, steps, seed=7):
    from ase.md.langevin import Langevin

    atoms = atoms.copy()
    calc = StudentCalculator(model, skin=skin)
    atoms.calc = calc
    thermalize_momenta(atoms, 600, rng=np.random.default_rng(3))
    energies = []
    dyn = Langevin(atoms, timestep=1.0 * units.fs, temperature_K=600, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(seed))
    dyn.attach(lambda: energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()))
    dyn.run(steps)
    return atoms, np.array(energies), calc.neighbor_builds


@pytest.mark.parametrize("name", ["aspirin", "cu32"])
def test_langevin_with_skin_equals_langevin_with_rebuilds(mol_model, metal_model, name):
    """Langevin MD (thermostat noise from a fixed seed) runs with the calculator, and the cached
    neighbor list (skin > 0) gives the same trajectory as a rebuild at every call (skin = 0)."""
    model = mol_model if name == "aspirin" else metal_model
    start = _rattled(name, sigma=0.05)
    steps = 30
    rebuilt, e_rebuild, builds_rebuild = _langevin(model, start, 0.0, steps)
    skinned, e_skin, builds_skin = _langevin(model, start, 0.4, steps)
    assert len(e_rebuild) == steps + 1 and np.isfinite(e_rebuild).all()
    assert builds_rebuild == steps + 1
    assert 1 <= builds_skin < steps / 2  # the cached list was reused
    assert not np.array_equal(rebuilt.positions, start.positions)  # the atoms moved
    np.testing.assert_array_equal(skinned.positions, rebuilt.positions)
    np.testing.assert_array_equal(skinned.get_velocities(), rebuilt.get_velocities())
    np.testing.assert_array_equal(e_skin, e_rebuild)
    # the noise is the seed's: another seed gives another trajectory
    other, _, _ = _langevin(model, start, 0.4, steps, seed=8)
    assert not np.allclose(other.positions, rebuilt.positions)
    # the final state's energy and forces are the model's direct prediction there
    ref = predict(model, atoms_to_batch(rebuilt, model.cutoff, dtype=torch.float64))
    np.testing.assert_allclose(rebuilt.get_potential_energy(), float(ref["energy"][0]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(rebuilt.get_forces(), ref["forces"].numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["water", "cu32"])
def test_extxyz_round_trip(tmp_path, mol_model, metal_model, name):
    """ase.io.write of atoms carrying the calculator stores its results; ase.io.read gives them back."""
    import ase.io

    model = mol_model if name == "water" else metal_model
    atoms = _rattled(name, sigma=0.05)
    atoms.calc = StudentCalculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    periodic = bool(atoms.pbc.all())
    stress = atoms.get_stress() if periodic else None
    ref = predict(model, atoms_to_batch(atoms, model.cutoff, dtype=torch.float64), stress=periodic)
    ase.io.write(tmp_path / "x.extxyz", atoms)
    back = ase.io.read(tmp_path / "x.extxyz")
    assert back.calc is not None
    np.testing.assert_array_equal(back.numbers, atoms.numbers)
    np.testing.assert_allclose(back.positions, atoms.positions, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(back.pbc, atoms.pbc)
    # extxyz stores the energy in full precision, per-atom arrays with 8 decimals
    np.testing.assert_allclose(back.get_potential_energy(), energy, rtol=1e-12, atol=0)
    np.testing.assert_allclose(back.get_potential_energy(), float(ref["energy"][0]), rtol=1e-12, atol=0)
    np.testing.assert_allclose(back.get_forces(), forces, rtol=0, atol=1e-7)
    np.testing.assert_allclose(back.get_forces(), ref["forces"].numpy(), rtol=0, atol=1e-7)
    if periodic:
        from ase.stress import full_3x3_to_voigt_6_stress

        np.testing.assert_allclose(back.cell.array, atoms.cell.array, rtol=0, atol=1e-7)
        np.testing.assert_allclose(back.get_stress(), stress, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(back.get_stress(), full_3x3_to_voigt_6_stress(ref["stress"][0].numpy()),
                                   rtol=1e-8, atol=1e-12)
    else:
        with pytest.raises(PropertyNotImplementedError):
            back.get_stress()


def _device_check(tmp_path, device):
    """A float32 student saved to a file, loaded on ``device``: energy, forces, stress as a
    separate CPU calculator (and the model's direct CPU prediction) give them."""
    molecule = _model([1, 6, 8], dtype=torch.float32, seed=4)
    metal = _model([29], dtype=torch.float32, seed=5, cutoff=3.0)
    for model, name in ((molecule, "aspirin"), (metal, "cu32")):
        path = save(model, tmp_path / f"{name}.safetensors")
        atoms = _rattled(name, sigma=0.05)
        periodic = bool(atoms.pbc.all())
        calc = load_calculator(path, device=device)
        assert calc.device == torch.device(device)
        assert next(calc.model.parameters()).device.type == torch.device(device).type
        atoms.calc = calc
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        assert forces.dtype == np.float64 and np.isfinite(forces).all()
        ref = predict(model, atoms_to_batch(atoms, model.cutoff, dtype=torch.float32), stress=periodic)
        cpu = atoms.copy()
        cpu.calc = load_calculator(path)  # the default device
        np.testing.assert_allclose(energy, cpu.get_potential_energy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(energy, float(ref["energy"][0]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(forces, cpu.get_forces(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(forces, ref["forces"].numpy(), rtol=1e-4, atol=1e-5)
        if periodic:
            from ase.stress import full_3x3_to_voigt_6_stress

            np.testing.assert_allclose(atoms.get_stress(), cpu.get_stress(), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(atoms.get_stress(), full_3x3_to_voigt_6_stress(ref["stress"][0].numpy()),
                                       rtol=1e-4, atol=1e-6)
        # a few MD steps on the device: the cached neighbor list and tensors stay on it
        atoms.calc = StudentCalculator(calc.model, device=device, skin=0.3)
        thermalize_momenta(atoms, 300, rng=np.random.default_rng(0))
        VelocityVerlet(atoms, timestep=0.5 * units.fs).run(5)
        assert np.isfinite(atoms.get_forces()).all()


def test_device_cpu_explicit(tmp_path):
    _device_check(tmp_path, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda.is_available() is False: no CUDA device")
def test_device_cuda_equals_cpu(tmp_path):
    _device_check(tmp_path, "cuda")
