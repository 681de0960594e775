"""Splits: disjoint, complete, deterministic; group-aware; saved and loaded."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
from ase.db import connect

from mlff_distiller.data import MolecularDataset, MolecularSubset, train_test_split
from mlff_distiller.data.split import (
    composition_groups,
    group_train_test_split,
    load_split,
    save_split,
    split_sizes,
)


@pytest.fixture(scope="module")
def dataset(data_files):
    return MolecularDataset(data_files["ase"], format="ase")


class Sized:
    """A stand-in dataset of n structures (splits only need len)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"idx": i}


@pytest.mark.parametrize("n", [0, 1, 7, 10, 101])
def test_splits_are_disjoint_complete_and_deterministic(n):
    ds = Sized(n)
    a = train_test_split(ds, 0.7, 0.2, 0.1, shuffle=True, random_seed=3)
    b = train_test_split(ds, 0.7, 0.2, 0.1, shuffle=True, random_seed=3)
    assert all(isinstance(s, MolecularSubset) and s.dataset is ds for s in a)
    flat = [i for s in a for i in s.indices]
    assert sorted(flat) == list(range(n))  # complete and disjoint
    assert [s.indices for s in a] == [s.indices for s in b]
    assert [len(s) for s in a] == split_sizes(n, [0.7, 0.2, 0.1]).tolist()
    if n > 10:
        c = train_test_split(ds, 0.7, 0.2, 0.1, shuffle=True, random_seed=4)
        assert [s.indices for s in a] != [s.indices for s in c]


def test_split_sizes_follow_the_ratios():
    assert split_sizes(10, [0.8, 0.1, 0.1]).tolist() == [8, 1, 1]
    assert split_sizes(7, [0.5, 0.25, 0.25]).tolist() == [3, 2, 2]  # largest remainders 0.75, 0.75
    assert split_sizes(3, [1.0, 0.0, 0.0]).tolist() == [3, 0, 0]
    for n in range(0, 50):
        assert split_sizes(n, [0.6, 0.3, 0.1]).sum() == n


def test_no_shuffle_gives_consecutive_runs():
    train, val, test = train_test_split(Sized(10), 0.6, 0.2, 0.2, shuffle=False)
    assert train.indices == list(range(6)) and val.indices == [6, 7] and test.indices == [8, 9]


@pytest.mark.parametrize(
    "ratios", [(0.8, 0.1, 0.2), (0.5, 0.1, 0.1), (1.2, -0.1, -0.1), (0.8, 0.3, -0.1), (float("nan"), 0.5, 0.5)]
)
def test_bad_ratios_are_a_value_error(ratios):
    with pytest.raises(ValueError, match="ratio"):
        train_test_split(Sized(10), *ratios)


def test_subsets_support_the_dataset_api(dataset):
    train, val, test = train_test_split(dataset, random_seed=42)
    i = val.indices[0]
    atoms = val.get_atoms(0)
    ref = dataset.get_atoms(i)
    np.testing.assert_array_equal(atoms.positions, ref.positions)
    assert atoms.get_potential_energy() == ref.get_potential_energy()
    stats = train.get_statistics()
    assert stats["num_samples"] == len(train)
    assert stats["num_atoms"] == int(dataset.natoms_array()[train.indices].sum())
    np.testing.assert_array_equal(train.natoms_array(), dataset.natoms_array()[train.indices])
    # the guide's step 6: the indices applied to another dataset over the same file
    other = MolecularDataset(dataset.data_path, format="ase")
    sub = MolecularSubset(other, train.indices)
    assert int(sub[0]["idx"]) == train.indices[0]
    # a split of a subset indexes the subset
    inner = train_test_split(train, 0.5, 0.5, 0.0, random_seed=0)
    assert sorted(j for s in inner for j in s.indices) == list(range(len(train)))


def _molecule_db(path, names=("CH4", "H2O", "NH3", "CH3OH", "C2H6"), n=40):
    """``n`` conformers of the molecules ``names`` (repeated compositions) labeled with EMT."""
    from ase.build import molecule
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    formulas = []
    with connect(path) as db:
        for k in range(n):
            name = names[rng.integers(len(names))]
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
            atoms.calc = EMT()
            e, f = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
            db.write(atoms)
            formulas.append(atoms.get_chemical_formula(mode="hill"))
    return formulas


@pytest.fixture(scope="module")
def six_compositions(tmp_path_factory):
    """40 structures in 6 composition groups, and the Hill formula of each structure."""
    path = tmp_path_factory.mktemp("groups") / "six.db"
    formulas = _molecule_db(path, names=("CH4", "H2O", "NH3", "CH3OH", "C2H6", "CO2"))
    assert len(set(formulas)) == 6
    return MolecularDataset(path, format="ase"), formulas


def _check_group_split(splits, labels, n):
    """Disjoint, complete, every group wholly inside one split."""
    flat = [i for s in splits for i in s.indices]
    assert sorted(flat) == list(range(n))
    owner = {}
    for k, s in enumerate(splits):
        for i in s.indices:
            assert owner.setdefault(labels[i], k) == k, f"group {labels[i]!r} is in two splits"


@pytest.mark.parametrize("seed", range(8))
def test_group_split_fills_every_split_when_there_are_enough_groups(six_compositions, seed):
    # regression: train won every tie of the absolute shortfall, e.g. seed 3 gave sizes [40, 0, 0]
    ds, formulas = six_compositions
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "gets no structure" warning
        splits = group_train_test_split(ds, random_seed=seed)
    _check_group_split(splits, formulas, len(ds))
    sizes = np.array([len(s) for s in splits])
    assert (sizes > 0).all(), sizes
    # sizes approximate the ratios: no split exceeds its target by a whole group or more
    largest_group = max(Counter(formulas).values())
    assert (sizes < np.array([0.8, 0.1, 0.1]) * len(ds) + largest_group).all(), sizes
    assert sizes[0] == sizes.max()


@pytest.mark.parametrize("seed", range(20))
def test_group_split_with_explicit_labels_fills_every_split(seed):
    labels = np.random.default_rng(100 + seed).integers(0, 6, size=40)
    splits = group_train_test_split(Sized(40), groups=labels, random_seed=seed)
    _check_group_split(splits, labels.tolist(), 40)
    assert all(len(s) > 0 for s in splits)
    # a zero ratio still gets nothing, and the others are both filled
    splits = group_train_test_split(Sized(40), groups=labels, train_ratio=0.9, val_ratio=0.0, test_ratio=0.1,
                                    random_seed=seed)
    _check_group_split(splits, labels.tolist(), 40)
    assert [len(s) > 0 for s in splits] == [True, False, True]


def test_group_split_keeps_each_composition_in_one_split(tmp_path):
    path = tmp_path / "molecules.db"
    formulas = _molecule_db(path)
    ds = MolecularDataset(path, format="ase")
    group, names = composition_groups(ds)
    assert [names[g] for g in group] == formulas  # same as ASE's Hill formula
    splits = group_train_test_split(ds, train_ratio=0.6, val_ratio=0.2, test_ratio=0.2, random_seed=1)
    flat = [i for s in splits for i in s.indices]
    assert sorted(flat) == list(range(len(ds)))
    owner = {}
    for k, s in enumerate(splits):
        for i in s.indices:
            assert owner.setdefault(formulas[i], k) == k  # one composition, one split
    again = group_train_test_split(ds, train_ratio=0.6, val_ratio=0.2, test_ratio=0.2, random_seed=1)
    assert [s.indices for s in again] == [s.indices for s in splits]


def test_group_split_with_explicit_labels_and_few_groups():
    labels = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] * 10
    train, val, test = group_train_test_split(Sized(20), groups=labels, train_ratio=0.5, val_ratio=0.25,
                                              test_ratio=0.25, random_seed=0)
    for s in (train, val, test):
        assert len({labels[i] for i in s.indices} & {labels[i] for t in (train, val, test) if t is not s
                                                     for i in t.indices}) == 0
    assert sorted(i for s in (train, val, test) for i in s.indices) == list(range(20))
    with pytest.warns(UserWarning, match="no structure"):
        group_train_test_split(Sized(4), groups=["x"] * 4, random_seed=0)
    # two groups for three splits: the first two splits get one each, test none (warned)
    with pytest.warns(UserWarning, match="test gets no structure"):
        splits = group_train_test_split(Sized(6), groups=list("xxxxyy"), random_seed=0)
    assert [len(s) > 0 for s in splits] == [True, True, False]
    _check_group_split(splits, list("xxxxyy"), 6)
    with pytest.raises(ValueError, match="one label per structure"):
        group_train_test_split(Sized(4), groups=["x"] * 3)


def test_save_and_load_split_round_trip(dataset, tmp_path):
    splits = train_test_split(dataset, random_seed=7)
    path = save_split(tmp_path / "split.json", splits)
    document = json.loads(path.read_text())
    assert document["counts"] == {"train": len(splits[0]), "val": len(splits[1]), "test": len(splits[2])}
    loaded = load_split(path, dataset)
    assert [s.indices for s in loaded] == [s.indices for s in splits]
    assert all(s.dataset is dataset for s in loaded)
    with pytest.raises(FileExistsError):
        save_split(path, splits)
    save_split(path, splits, overwrite=True)


def test_load_split_refuses_another_dataset(dataset, tmp_path, emt_atoms):
    path = save_split(tmp_path / "split.json", train_test_split(dataset, random_seed=7))
    with pytest.raises(ValueError, match="length"):
        load_split(path, Sized(len(dataset) + 1))
    # same length, other structures: the atom-count fingerprint differs
    other_path = tmp_path / "other.db"
    with connect(other_path) as db:
        for atoms in reversed(emt_atoms):
            db.write(atoms)
    other = MolecularDataset(other_path, format="ase")
    assert Counter(other.natoms_array().tolist()) == Counter(dataset.natoms_array().tolist())
    with pytest.raises(ValueError, match="atom counts"):
        load_split(path, other)
    broken = tmp_path / "broken.json"
    document = json.loads(path.read_text())
    document["splits"]["val"].append(document["splits"]["train"][0])
    broken.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="disjoint"):
        load_split(broken, dataset)


# -- groups from a string property; isolated-atom frames left out ---------------------------------
def _tagged_file(tmp_path):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    path = tmp_path / "tagged.xyz"
    frames = []
    for i in range(12):
        atoms = Atoms("H", positions=[[0, 0, 0]]) if i in (0, 7) else Atoms("H2O", positions=np.eye(3) * (1 + i / 50))
        atoms.info["config_type"] = "IsolatedAtom" if i in (0, 7) else f"md{i % 4}"
        atoms.calc = SinglePointCalculator(atoms, energy=-float(i))
        frames.append(atoms)
    from ase.io import write

    write(path, frames, format="extxyz")
    return path


def test_group_split_by_a_string_property_and_without_isolated_atoms(tmp_path):
    from mlff_distiller.data.split import isolated_atom_indices, property_groups

    dataset = MolecularDataset(_tagged_file(tmp_path))
    labels = property_groups(dataset, "config_type")
    assert labels[0] == "IsolatedAtom" and labels[5] == "md1"
    assert isolated_atom_indices(dataset).tolist() == [0, 7]
    parts = group_train_test_split(dataset, "config_type", 0.5, 0.25, 0.25, random_seed=3,
                                   exclude_isolated_atoms=True)
    members = [set(p.indices) for p in parts]
    assert set().union(*members) == set(range(12)) - {0, 7}
    for group in {labels[i] for i in range(12)} - {"IsolatedAtom"}:
        owners = [k for k, m in enumerate(members) if any(labels[i] == group for i in m)]
        assert len(owners) == 1, group  # every config_type in exactly one split
    random_parts = train_test_split(dataset, 0.5, 0.25, 0.25, random_seed=3, exclude_isolated_atoms=True)
    assert sorted(i for p in random_parts for i in p.indices) == [i for i in range(12) if i not in (0, 7)]
    with pytest.raises(ValueError, match="do not carry 'sample_group'"):
        group_train_test_split(dataset, "sample_group")
