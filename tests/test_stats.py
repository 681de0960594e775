"""Statistics against independent per-structure computations and a known E0 ground truth."""

import warnings

import numpy as np
import pytest

from mlff_distiller.data.stats import StatisticsWarning, compute_statistics
from mlff_distiller.data.structure import Structure

E0_TRUE = {1: -13.6, 6: -1030.5, 8: -2040.25}


def _structure(rng, numbers, energy=True, forces=True, stress=False):
    n = len(numbers)
    numbers = np.asarray(numbers, dtype=np.int64)
    e = sum(E0_TRUE[int(z)] for z in numbers) if energy else None
    return Structure(
        positions=rng.normal(size=(n, 3)),
        numbers=numbers,
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, bool),
        energy=None if e is None else np.asarray(e),
        forces=rng.normal(size=(n, 3)) if forces else None,
        stress=rng.normal(size=(3, 3)) if stress else None,
    )


def test_moments_match_a_per_structure_reference():
    rng = np.random.default_rng(0)
    compositions = [[1, 1, 8], [6, 8, 8], [6, 1, 1, 1, 1], [1, 1], [8, 8], [6, 6, 1, 1, 1, 1], [6, 8]]
    structures = [_structure(rng, c, stress=(k % 2 == 0)) for k, c in enumerate(compositions)]
    stats = compute_statistics(structures)

    natoms = np.array([len(c) for c in compositions])
    energies = np.array([float(s.energy) for s in structures])
    forces = np.concatenate([s.forces for s in structures])
    assert stats["num_samples"] == len(compositions)
    assert stats["num_atoms"] == natoms.sum()
    assert (stats["natoms_min"], stats["natoms_max"]) == (natoms.min(), natoms.max())
    assert stats["natoms_mean"] == pytest.approx(natoms.mean())
    assert stats["energy_mean"] == pytest.approx(np.mean(energies))
    assert stats["energy_std"] == pytest.approx(np.std(energies))
    assert stats["energy_per_atom_mean"] == pytest.approx(np.mean(energies / natoms))
    assert stats["energy_per_atom_std"] == pytest.approx(np.std(energies / natoms))
    assert stats["forces_rms"] == pytest.approx(np.sqrt(np.mean(forces**2)))
    assert stats["forces_max_norm"] == pytest.approx(np.linalg.norm(forces, axis=1).max())
    stresses = np.stack([s.stress for s in structures if s.stress is not None])
    assert stats["stress_rms"] == pytest.approx(np.sqrt(np.mean(stresses**2)))
    assert stats["num_with_stress"] == len(stresses)
    all_numbers = np.concatenate([np.asarray(c) for c in compositions])
    assert stats["element_counts"] == {z: int((all_numbers == z).sum()) for z in (1, 6, 8)}
    assert stats["element_structure_counts"][6] == sum(6 in c for c in compositions)


def test_reference_energies_recover_the_ground_truth():
    rng = np.random.default_rng(1)
    compositions = [[1, 1, 8], [6, 8, 8], [6, 1, 1, 1, 1], [1, 1], [8, 8], [6, 6, 1, 1], [6, 8, 1]]
    stats = compute_statistics([_structure(rng, c) for c in compositions])
    assert stats["reference_energies_rank"] == 3
    for z, e0 in E0_TRUE.items():
        assert stats["reference_energies"][z] == pytest.approx(e0, abs=1e-8)
    assert stats["energy_per_atom_residual_std"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore::mlff_distiller.data.stats.StatisticsWarning")
def test_unlabeled_structures_are_skipped_for_labels_but_counted():
    rng = np.random.default_rng(2)
    structures = [
        _structure(rng, [1, 8]),
        _structure(rng, [1, 1, 8], energy=False, forces=False),
        _structure(rng, [6, 8], forces=False),
    ]
    stats = compute_statistics(structures)
    assert stats["num_samples"] == 3
    assert stats["num_with_energy"] == 2
    assert stats["num_with_forces"] == 1
    assert stats["energy_mean"] == pytest.approx((float(structures[0].energy) + float(structures[2].energy)) / 2)
    assert stats["forces_rms"] == pytest.approx(np.sqrt(np.mean(structures[0].forces ** 2)))


def test_no_labels_at_all():
    rng = np.random.default_rng(3)
    stats = compute_statistics([_structure(rng, [1, 8], energy=False, forces=False)])
    assert stats["energy_mean"] is None and stats["forces_rms"] is None
    assert stats["reference_energies"] == {}


def test_degenerate_fit_warns_instead_of_crashing():
    rng = np.random.default_rng(4)
    # every structure is H2O: H and O energies cannot be separated
    structures = [_structure(rng, [1, 1, 8]) for _ in range(5)]
    with pytest.warns(StatisticsWarning, match="under-determined"):
        stats = compute_statistics(structures)
    assert stats["reference_energies_rank"] == 1
    e0 = stats["reference_energies"]
    # the minimum-norm solution still reproduces the energies
    assert 2 * e0[1] + e0[8] == pytest.approx(float(structures[0].energy))


def test_rare_element_warns():
    rng = np.random.default_rng(5)
    structures = [_structure(rng, c) for c in ([1, 1], [8, 8], [1, 8], [1, 1, 8], [6, 1, 1, 1, 1])]
    with pytest.warns(StatisticsWarning, match="fewer than"):
        compute_statistics(structures)


def test_empty_dataset():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = compute_statistics([])
    assert stats["num_samples"] == 0 and stats["natoms_min"] is None


# -- reference energies from isolated-atom frames (MACE's config_type=IsolatedAtom) ---------------
def _isolated(z, energy, config_type="IsolatedAtom"):
    return Structure(np.zeros((1, 3)), np.array([z]), np.zeros((3, 3)), np.zeros(3, bool),
                     energy=np.asarray(energy), extras={"config_type": config_type})


def test_e0s_from_isolated_atoms_and_their_exclusion():
    rng = np.random.default_rng(3)
    molecules = [_structure(rng, [6, 1, 1, 1, 1]), _structure(rng, [8, 1, 1]), _structure(rng, [6, 8])]
    isolated = [_isolated(1, -13.5), _isolated(6, -1030.0), _isolated(8, -2040.0, "isolated_atom")]
    data = isolated[:1] + molecules + isolated[1:]
    stats = compute_statistics(data, reference_energies="isolated")
    assert stats["reference_energies"] == {1: -13.5, 6: -1030.0, 8: -2040.0}
    assert stats["reference_energies_source"] == "isolated" and stats["isolated_atoms"] == [0, 4, 5]
    assert stats["num_samples"] == 6  # still counted unless excluded
    kept = compute_statistics(data, reference_energies="isolated", exclude_isolated=True)
    assert kept["num_samples"] == 3 and kept["num_excluded"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticsWarning)  # a least-squares fit on three molecules
        reference = compute_statistics(molecules)
    assert kept["energy_mean"] == reference["energy_mean"] and kept["forces_rms"] == reference["forces_rms"]
    # residuals after the isolated-atom E0s, recomputed by hand
    e0 = kept["reference_energies"]
    residual = [(float(s.energy) - sum(e0[int(z)] for z in s.numbers)) / s.natoms for s in molecules]
    assert kept["energy_per_atom_residual_std"] == pytest.approx(np.std(residual), rel=1e-12)
    given = compute_statistics(molecules, reference_energies={1: 0.0, 6: 0.0, 8: 0.0})
    assert given["reference_energies_source"] == "given"


def test_isolated_e0s_need_every_element_and_agreeing_frames():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match=r"no reference energy for elements \[8\]"):
        compute_statistics([_isolated(1, -13.5), _isolated(6, -1030.0), _structure(rng, [8, 1, 1])],
                           reference_energies="isolated")
    with pytest.warns(StatisticsWarning, match="differ in energy"):
        stats = compute_statistics([_isolated(1, -13.5), _isolated(1, -13.4)], reference_energies="isolated")
    assert stats["reference_energies"] == {1: -13.5}
    one_atom_bulk = _isolated(29, -3.0, "bulk")  # one atom, but not an isolated-atom frame
    assert compute_statistics([one_atom_bulk], reference_energies={29: -3.0})["isolated_atoms"] == []
    with pytest.raises(ValueError, match="must be 'fit', 'isolated'"):
        compute_statistics([one_atom_bulk], reference_energies="mean")
