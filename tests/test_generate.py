"""generate: deterministic teacher-labeled structures whose labels are what the teacher computes."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from mlff_distiller.generate import generate_dataset, iter_dataset, load_teacher
from mlff_distiller.data.writers import structure_difference

N = 15  # three runs of five snapshots: bulk, cluster, molecule


@pytest.fixture(scope="module")
def dataset():
    return generate_dataset(N, seed=3)


def _atoms(s) -> Atoms:
    return Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)


def test_deterministic_and_prefix_stable(dataset):
    again = generate_dataset(N, seed=3)
    assert all(structure_difference(a, b) is None for a, b in zip(dataset, again))
    prefix = generate_dataset(7, seed=3)
    assert len(prefix) == 7
    assert all(structure_difference(a, b) is None for a, b in zip(prefix, dataset))
    other = generate_dataset(N, seed=4)
    assert any(structure_difference(a, b) is not None for a, b in zip(dataset, other))


def test_labels_equal_a_fresh_emt_calculation(dataset):
    for s in dataset:
        atoms = _atoms(s)
        atoms.calc = EMT()
        assert s.energy.dtype == np.float64 and s.energy.shape == ()
        np.testing.assert_allclose(float(s.energy), atoms.get_potential_energy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.forces, atoms.get_forces(), rtol=1e-10, atol=1e-10)
        if s.pbc.all():
            np.testing.assert_allclose(s.stress, atoms.get_stress(voigt=False), rtol=1e-10, atol=1e-12)
            assert np.array_equal(s.stress, s.stress.T)
        else:
            assert s.stress is None


def test_provenance(dataset):
    """sample + label in one: each run is one sample group, MD steps count up, the teacher's per-atom energies."""
    for k, s in enumerate(dataset):
        run, frame = divmod(k, 5)
        assert s.extras["sample_method"] == "md" and s.extras["sample_seed"] == run
        assert s.extras["sample_group"] == f"run{run}" and s.extras["sample_step"] == 4 * frame
        assert s.extras["sample_temperature"] == 300.0
        np.testing.assert_allclose(s.extras["energies"].sum(), float(s.energy), rtol=1e-12)


def test_kinds_geometry_and_md(dataset):
    kinds = [s.extras["config_type"] for s in dataset]
    assert kinds == ["bulk"] * 5 + ["cluster"] * 5 + ["molecule"] * 5
    for s in dataset:
        assert s.positions.dtype == np.float64 and s.numbers.dtype == np.int64
        assert s.positions.shape == (s.natoms, 3) and s.forces.shape == (s.natoms, 3)
        assert s.natoms <= 64
        if s.extras["config_type"] == "bulk":
            assert s.pbc.all() and abs(np.linalg.det(s.cell)) > 1.0
        else:
            assert not s.pbc.any() and not s.cell.any()
        if s.extras["config_type"] == "molecule":
            assert set(s.numbers.tolist()) <= {1, 6, 7, 8}
    # snapshots of one run: same atoms, moved by the MD
    run = dataset[:5]
    assert all(np.array_equal(r.numbers, run[0].numbers) for r in run)
    assert all(not np.array_equal(a.positions, b.positions) for a, b in zip(run, run[1:]))


def test_max_atoms_and_kinds_option():
    small = generate_dataset(6, seed=0, kinds=("bulk", "cluster"), max_atoms=20, snapshots_per_run=2)
    assert [s.extras["config_type"] for s in small] == ["bulk", "bulk", "cluster", "cluster"] * 1 + ["bulk", "bulk"]
    assert max(s.natoms for s in small) <= 20
    with pytest.raises(ValueError, match="too small for a cluster"):
        iter_dataset(3, kinds=("cluster",), max_atoms=10)
    with pytest.raises(ValueError, match="unknown structure kind"):
        iter_dataset(3, kinds=("crystal",))


def test_teacher_by_import_path_with_kwargs():
    kwargs = {"sigma": 2.2, "epsilon": 0.3, "rc": 6.0}
    structures = generate_dataset(4, seed=1, teacher="ase.calculators.lj:LennardJones", teacher_kwargs=kwargs,
                                  kinds=("cluster",), snapshots_per_run=2)
    for s in structures:
        atoms = _atoms(s)
        atoms.calc = LennardJones(**kwargs)
        np.testing.assert_allclose(float(s.energy), atoms.get_potential_energy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.forces, atoms.get_forces(), rtol=1e-10, atol=1e-10)
    default = generate_dataset(3, seed=1)
    named = generate_dataset(3, seed=1, teacher="ase.calculators.emt:EMT")
    assert all(structure_difference(a, b) is None for a, b in zip(default, named))


@pytest.mark.parametrize(
    "spec, match",
    [
        ("effective-medium", "unknown teacher 'effective-medium'.*'module:Class'"),
        ("ase.calculators.emt:Nope", "has no attribute"),
        ("no_such_module:Calc", "cannot import module"),
    ],
)
def test_bad_teacher(spec, match):
    with pytest.raises(ValueError, match=match):
        load_teacher(spec)


def test_bad_teacher_kwargs():
    # ASE calculators keep unknown keywords silently: a typo gets a warning
    with pytest.warns(UserWarning, match=r"\['sigam'\] are not among"):
        load_teacher("lj", {"sigam": 2.0})
    with pytest.raises(ValueError, match="bad keyword options"):
        load_teacher("ase.calculators.singlepoint:SinglePointCalculator", {"energy": 1.0})


@pytest.mark.parametrize("temperature", [-5.0, float("nan"), float("inf")])
def test_temperature_must_be_finite_and_non_negative(temperature):
    # a negative temperature gave sqrt(-T) = NaN momenta and NaN positions, silently
    with pytest.raises(ValueError, match="temperature_K"):
        iter_dataset(3, temperature_K=temperature)


def test_zero_temperature_is_allowed():
    structures = generate_dataset(2, seed=0, kinds=("molecule",), temperature_K=0.0)
    assert all(np.isfinite(s.positions).all() and np.isfinite(s.forces).all() for s in structures)


def test_non_finite_positions_are_never_labeled():
    """A teacher that would happily label NaN positions: ``label`` refuses them."""
    from ase.calculators.calculator import Calculator, all_changes

    from mlff_distiller.generate import label

    class Constant(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results = {"energy": 1.0, "forces": np.zeros((len(self.atoms), 3))}

    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]])
    assert label(atoms, Constant()).energy == 1.0  # the teacher itself works
    atoms.positions[1, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite positions"):
        label(atoms, Constant())
