"""Sampling: deterministic for a seed, provenance on every sample, MD at the temperature asked for,
strains/rattles of the size asked for, and teacher results kept only where they equal a fresh label."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.io import write

from mlff_distiller.structures import builtin
from mlff_distiller.teachers import get_teacher, label_structure, load_seeds, sample_structures

PROVENANCE = ("sample_method", "sample_seed", "sample_group", "sample_step")


@pytest.fixture(scope="module")
def emt():
    return get_teacher("emt")


@pytest.fixture(scope="module")
def mixed(emt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'strain' skips the molecule (tested below)
        return sample_structures(["cu32", "ethanol"], emt, methods=("seed", "md", "rattle", "strain", "relax"),
                                 temperatures=(300.0, 600.0), n=3, seed=5, md_interval=5, md_equilibration=10)


def _same(a, b) -> bool:
    return (len(a) == len(b) and all(np.array_equal(x.positions, y.positions) and np.array_equal(x.cell, y.cell)
                                     and x.info == y.info for x, y in zip(a, b)))


def test_order_and_provenance(mixed):
    methods = [(a.info["sample_seed"], a.info["sample_method"], a.info.get("sample_temperature")) for a in mixed]
    cu = [(0, "seed", None)] + [(0, "md", 300.0)] * 3 + [(0, "md", 600.0)] * 3 + [(0, "rattle", None)] * 3 + \
         [(0, "strain", None)] * 3 + [(0, "relax", None)] * 3
    eth = [(1, m, t) for _, m, t in cu if m != "strain"]
    assert methods == cu + eth
    for a in mixed:
        assert all(k in a.info for k in PROVENANCE)
        assert a.info["sample_group"] == f"seed{a.info['sample_seed']}"
        assert isinstance(a.info["sample_step"], int) and a.info["sample_step"] >= 0
    md_steps = [a.info["sample_step"] for a in mixed if a.info["sample_method"] == "md"][:3]
    assert md_steps == [15, 20, 25]  # 10 equilibration steps, then every 5


def test_deterministic_prefix_stable_and_seed_dependent(emt, mixed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = sample_structures(["cu32", "ethanol"], emt, methods=("seed", "md", "rattle", "strain", "relax"),
                                  temperatures=(300.0, 600.0), n=3, seed=5, md_interval=5, md_equilibration=10)
    assert _same(mixed, again)
    small = sample_structures(["cu32"], emt, methods=("md", "rattle"), temperatures=(300.0,), n=2, seed=5,
                              md_interval=5, md_equilibration=10)
    big = sample_structures(["cu32"], emt, methods=("md", "rattle"), temperatures=(300.0,), n=3, seed=5,
                            md_interval=5, md_equilibration=10)
    assert _same(small, big[:2] + big[3:5])
    other = sample_structures(["cu32"], emt, methods=("md", "rattle"), temperatures=(300.0,), n=2, seed=6,
                              md_interval=5, md_equilibration=10)
    assert not any(np.allclose(a.positions, b.positions) for a, b in zip(small, other))


def test_md_runs_at_the_requested_temperature():
    """A light-and-heavy molecule (CH3 on springs): Langevin with ASE's old default fixcm=True runs it at
    ~475 K for a 300 K target; with fixcm=False the mean kinetic temperature of the frames is the target
    (within the fluctuations of 4 atoms)."""
    from ase import Atoms

    from mlff_distiller.teachers.toy import HarmonicTeacher

    tetrahedron = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) * 1.3 / np.sqrt(8)
    frames = sample_structures([Atoms("CH3", positions=tetrahedron)], HarmonicTeacher(k=5.0, r0=1.3), methods=("md",),
                               temperatures=(300.0,), n=300, seed=1, md_interval=5, timestep_fs=0.5)
    temperatures = np.array([a.get_temperature() for a in frames])
    assert 240.0 < temperatures.mean() < 360.0, temperatures.mean()
    assert all(a.info["sample_temperature"] == 300.0 for a in frames)


def test_rattle_and_strain_sizes(emt):
    base = builtin("cu32")
    rattled = sample_structures([base], None, methods=("rattle",), n=20, rattle_sigma=0.07, seed=0)
    displacement = np.concatenate([a.positions - base.positions for a in rattled])
    assert abs(displacement.std() - 0.07) < 0.005 and abs(displacement.mean()) < 0.005
    strained = sample_structures([base], None, methods=("strain",), n=20, max_strain=0.03, seed=0)
    for a in strained:
        deformation = np.linalg.solve(base.cell.array, a.cell.array)  # cell' = cell @ (I + eps)
        eps = deformation - np.eye(3)
        assert np.allclose(eps, eps.T, atol=1e-12) and np.abs(eps).max() <= 0.03 + 1e-12
        np.testing.assert_allclose(a.get_scaled_positions(), base.get_scaled_positions(), atol=1e-12)
    assert np.ptp([a.get_volume() for a in strained]) > 0.01 * base.get_volume()


def test_kept_teacher_results_equal_a_fresh_label(mixed, emt):
    kept = [a for a in mixed if a.calc is not None]
    assert {a.info["sample_method"] for a in kept} == {"md", "relax"}  # rattles/strains are unlabeled
    assert not any(a.calc is not None for a in mixed if a.info["sample_method"] in ("rattle", "strain", "seed"))
    for a in kept:
        fresh = label_structure(emt, a)
        # equal up to floating-point summation order (EMT's neighbor list was built at an earlier MD step)
        np.testing.assert_allclose(a.get_potential_energy(), float(fresh.energy), rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(a.get_forces(), fresh.forces, rtol=0, atol=1e-12)
        if a.pbc.all():
            np.testing.assert_allclose(a.get_stress(voigt=False), fresh.stress, rtol=0, atol=1e-14)


def test_relax_lowers_the_energy_of_the_rattled_structure(emt):
    base = builtin("cu32")
    relaxed = sample_structures([base], emt, methods=("relax",), n=1, rattle_sigma=0.1, relax_steps=10, seed=3)[0]
    rattled = sample_structures([base], None, methods=("rattle",), n=1, rattle_sigma=0.1, seed=3)
    start = rattled[0].copy()
    start.calc = emt.calculator()
    assert relaxed.info["sample_method"] == "relax"
    assert relaxed.get_potential_energy() < start.get_potential_energy() - 0.05


def test_seeds_from_files_and_builtin_names(tmp_path):
    path = tmp_path / "seeds.traj"
    write(path, [builtin("water"), builtin("methane")])
    seeds = load_seeds([str(path), "builtin:cu32", "ethanol"])
    assert [len(a) for a in seeds] == [3, 5, 32, 9]
    samples = sample_structures(str(path), None, methods=("rattle",), n=2, seed=0)
    assert [a.info["sample_seed"] for a in samples] == [0, 0, 1, 1]
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        load_seeds("nope.xyz")


def test_bad_plans(emt):
    with pytest.raises(ValueError, match="unknown sampling method"):
        sample_structures(["cu32"], emt, methods=("anneal",))
    with pytest.raises(ValueError, match=r"\['md'\] need a teacher"):
        sample_structures(["cu32"], None, methods=("md",))
    with pytest.raises(ValueError, match="needs periodic seed"):
        sample_structures(["water"], None, methods=("strain",))
    with pytest.warns(UserWarning, match=r"skips seed structure\(s\) \[1\]"):
        sample_structures(["cu32", "water"], None, methods=("strain",), n=1)
    with pytest.raises(ValueError, match="temperatures"):
        sample_structures(["cu32"], emt, methods=("md",), temperatures=(-1.0,))
    with pytest.raises(ValueError, match="seed structure 0: teacher .* molecules only"):
        from mlff_distiller.teachers.toy import HarmonicTeacher

        sample_structures(["cu32"], HarmonicTeacher(), methods=("relax",))
