"""Many files as one dataset: global indices, atom counts, statistics and errors naming the file.

The reference is the concatenation of the single-file readers/datasets (and what ASE itself
reads from the ASE-db and XYZ members, bit for bit in float64).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from conftest import emt_structures, write_guide_hdf5
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.readers.base import Reader
from mlff_distiller.data.readers.multi import MultiReader, expand_paths, is_many, open_many
from mlff_distiller.data.stats import compute_statistics
from mlff_distiller.data.structure import LABEL_NAMES, Structure

PARTS = {"part0.db": (0, 5), "part1.xyz": (5, 8), "part2.h5": (8, 12)}


def _write(path, atoms_list):
    from ase.db import connect
    from ase.io import write

    if path.suffix == ".db":
        with connect(path) as db:
            for atoms in atoms_list:
                db.write(atoms)
    elif path.suffix == ".xyz":
        write(path, atoms_list, format="extxyz")
    else:
        write_guide_hdf5(path, atoms_list)


@pytest.fixture(scope="module")
def structures():
    return emt_structures(12, seed=3)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, structures):
    """12 structures split over an ASE db, an extended XYZ and a guide-layout HDF5 file."""
    root = tmp_path_factory.mktemp("mixed")
    paths = []
    for name, (a, b) in PARTS.items():
        _write(root / name, structures[a:b])
        paths.append(str(root / name))
    return paths


@pytest.fixture(scope="module")
def shards(tmp_path_factory, structures):
    """The same 12 structures as three extended XYZ shards (4 each)."""
    root = tmp_path_factory.mktemp("shards")
    for k in range(3):
        _write(root / f"shard_{k}.xyz", structures[4 * k : 4 * k + 4])
    return root


def assert_same_structure(a: Structure, b: Structure) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell, b.cell)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    for label in LABEL_NAMES:
        va, vb = getattr(a, label), getattr(b, label)
        assert (va is None) == (vb is None), label
        if va is not None:
            np.testing.assert_array_equal(va, vb)


# -- paths --------------------------------------------------------------------------------
def test_expand_glob_sorted_and_list_order(shards):
    expected = [str(shards / f"shard_{k}.xyz") for k in range(3)]
    assert expand_paths(str(shards / "shard_*.xyz")) == expected
    assert expand_paths(shards / "shard_?.xyz") == expected
    reversed_list = expected[::-1]
    assert expand_paths(reversed_list) == reversed_list  # a list keeps its order
    assert is_many(expected) and is_many(str(shards / "*.xyz")) and not is_many(expected[0])
    assert not is_many("postgresql://u:p@127.0.0.1:5432/db?sslmode=disable")


def test_existing_file_with_pattern_characters_is_taken_literally(shards, tmp_path):
    odd = tmp_path / "run[1].xyz"
    odd.write_bytes((shards / "shard_0.xyz").read_bytes())
    assert not is_many(str(odd))
    assert expand_paths(str(odd)) == [str(odd)]


def test_glob_matching_nothing_is_a_clear_error(tmp_path):
    pattern = str(tmp_path / "nothing_*.xyz")
    with pytest.raises(FileNotFoundError, match="no file matches") as info:
        expand_paths(pattern)
    assert pattern in str(info.value)
    with pytest.raises(FileNotFoundError, match="nothing_"):
        open_many(pattern)


def test_missing_member_empty_list_and_duplicates(shards):
    first = str(shards / "shard_0.xyz")
    missing = str(shards / "missing.xyz")
    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        expand_paths([first, missing])
    with pytest.raises(ValueError, match="empty"):
        expand_paths([])
    with pytest.raises(ValueError, match="named twice"):
        expand_paths([first, str(shards / "*.xyz")])


# -- the reader ----------------------------------------------------------------------------
def test_multireader_equals_concatenation_of_single_readers(mixed):
    singles = [open_reader(p) for p in mixed]
    multi = open_many(mixed)  # formats chosen per file from the suffix
    assert isinstance(multi, MultiReader)
    assert len(multi) == sum(len(r) for r in singles) == 12
    np.testing.assert_array_equal(multi.natoms_array(), np.concatenate([r.natoms_array() for r in singles]))
    reference = [s for r in singles for s in r.read_many(range(len(r)))]
    for i, ref in enumerate(reference):
        assert_same_structure(multi.read(i), ref)
    starts = [a for a, _ in PARTS.values()]
    expected = [(k, i - starts[k]) for k, (a, b) in enumerate(PARTS.values()) for i in range(a, b)]
    assert [multi.locate(i) for i in range(12)] == expected
    member, local = multi.locate_many(range(12))
    assert list(zip(member.tolist(), local.tolist())) == expected
    # a shuffled batch spanning every file comes back in the order asked for
    order = np.random.default_rng(0).permutation(12)
    for s, i in zip(multi.read_many(order), order):
        assert_same_structure(s, reference[int(i)])
    assert_same_structure(multi.read(-1), reference[-1])
    with pytest.raises(IndexError, match="out of range"):
        multi.read(12)
    with pytest.raises(IndexError, match="out of range"):
        multi.read_many([0, 12])


def test_values_are_what_ase_reads(mixed, structures):
    """The ASE-db and XYZ members read back exactly what ASE reads (float64, bit for bit)."""
    from ase.io import read

    multi = open_many(mixed)
    for path, (a, b) in zip(mixed, PARTS.values()):
        if path.endswith(".h5"):
            continue
        for i, atoms in zip(range(a, b), read(path, index=":")):
            s = multi.read(i)
            np.testing.assert_array_equal(s.positions, atoms.positions)
            np.testing.assert_array_equal(s.numbers, atoms.numbers)
            assert float(s.energy) == atoms.get_potential_energy()
            np.testing.assert_array_equal(s.forces, atoms.get_forces())
    # the HDF5 member holds the arrays the guide's snippet wrote
    for i in range(8, 12):
        s = multi.read(i)
        np.testing.assert_array_equal(s.positions, structures[i].positions)
        np.testing.assert_array_equal(s.forces, structures[i].get_forces())


class _ListReader(Reader):
    """A reader over in-memory structures (to test the index mapping with empty members)."""

    def __init__(self, name: str, items: list[Structure]) -> None:
        super().__init__(name)
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def natoms_array(self) -> np.ndarray:
        return np.array([s.natoms for s in self.items], dtype=np.int64)

    def read(self, index: int) -> Structure:
        return self.items[index]


def _tiny(n: int) -> Structure:
    return Structure(
        positions=np.zeros((n, 3)), numbers=np.ones(n, np.int64), cell=np.zeros((3, 3)), pbc=np.zeros(3, bool)
    )


def test_empty_members_are_skipped_by_the_index_mapping():
    members = [_ListReader("empty0", []), _ListReader("a", [_tiny(1), _tiny(2)]), _ListReader("empty1", []),
               _ListReader("b", [_tiny(3)]), _ListReader("empty2", [])]
    multi = MultiReader(members)
    assert len(multi) == 3
    assert [multi.locate(i) for i in range(3)] == [(1, 0), (1, 1), (3, 0)]
    np.testing.assert_array_equal(multi.natoms_array(), [1, 2, 3])
    assert [s.natoms for s in multi.read_many([2, 0, 1])] == [3, 1, 2]


def test_units_merged_per_file():
    a, b, c = _ListReader("a.h5", []), _ListReader("b.h5", []), _ListReader("c.xyz", [])
    a.units = {"energy": "Hartree -> eV"}
    b.units = {"energy": "Hartree -> eV"}
    assert MultiReader([a, b]).units == {"energy": "Hartree -> eV"}
    merged = MultiReader([a, c]).units
    assert merged["energy"].startswith("a.h5: Hartree -> eV") and "c.xyz" not in merged["energy"]


# -- errors name the file -------------------------------------------------------------------
def test_corrupt_member_error_names_the_file(shards, tmp_path, structures):
    good = [str(shards / "shard_0.xyz"), str(shards / "shard_1.xyz")]
    bad = tmp_path / "bad.xyz"
    _write(bad, structures[:2])
    lines = bad.read_text().splitlines()
    # second frame: replace the x coordinate of its first atom with text
    second = 2 + int(lines[0])
    fields = lines[second + 2].split()
    fields[1] = "not_a_number"
    lines[second + 2] = " ".join(fields)
    bad.write_text("\n".join(lines) + "\n")
    multi = open_many(good + [str(bad)])
    assert len(multi) == 10
    multi.read(8)  # the bad file's first frame is fine
    with pytest.raises(ValueError) as info:
        multi.read(9)
    assert str(bad) in str(info.value)
    with pytest.raises(ValueError) as info:
        multi.read_many([0, 9])
    assert str(bad) in str(info.value)


def test_unreadable_member_fails_at_opening_naming_it(shards, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an ASE database\n" * 10)
    with pytest.raises(Exception) as info:
        open_many([str(shards / "shard_0.xyz"), str(junk)])
    assert str(junk) in str(info.value)


def test_fixed_format_must_match_every_member(mixed):
    with pytest.raises(ValueError, match="part1.xyz"):
        open_many(mixed, format="ase")


# -- the dataset ------------------------------------------------------------------------------
def _samples_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key


def test_dataset_over_files_equals_concatenated_datasets(mixed):
    from mlff_distiller.data import MolecularDataset

    singles = [MolecularDataset(p, format=None, dtype=torch.float64, return_atoms=False) for p in mixed]
    concat = ConcatDataset(singles)
    multi = MolecularDataset(mixed, format=None, dtype=torch.float64, return_atoms=False)
    assert len(multi) == len(concat) == 12
    np.testing.assert_array_equal(multi.natoms_array(), np.concatenate([d.natoms_array() for d in singles]))
    for i in range(len(multi)):
        sample, ref = multi[i], dict(concat[i])
        assert int(sample["idx"]) == i  # global index
        ref["idx"] = torch.tensor(i)
        _samples_equal(sample, ref)
    # statistics over all files = statistics of the concatenated structures
    structures = [s for d in singles for s in d.get_structures(range(len(d)))]
    expected = compute_statistics(structures)
    stats = multi.get_statistics()
    for key in ("num_samples", "num_atoms", "energy_mean", "energy_std", "forces_rms", "element_counts",
                "num_with_stress"):
        assert stats[key] == pytest.approx(expected[key], rel=1e-12), key
    assert "part0.db" in repr(multi) and "part2.h5" in repr(multi)


def test_dataset_from_glob_through_dataloader_workers(shards):
    from mlff_distiller.data import MolecularDataset

    from ase.io import read

    # what ASE reads from the shards, in sorted file order (extxyz stores 8 decimals)
    expected = [a for k in range(3) for a in read(shards / f"shard_{k}.xyz", index=":")]
    dataset = MolecularDataset(str(shards / "shard_*.xyz"), format="xyz", dtype=torch.float64)
    assert len(dataset) == 12
    for i in (0, 5, 11):
        np.testing.assert_array_equal(dataset[i]["positions"].numpy(), expected[i].positions)
    loader = DataLoader(dataset, batch_size=5, shuffle=True, num_workers=2, collate_fn=lambda b: list(b),
                        generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        for sample in batch:
            i = int(sample["idx"])
            seen.append(i)
            np.testing.assert_array_equal(sample["forces"].numpy(), expected[i].get_forces())
    assert sorted(seen) == list(range(12))
