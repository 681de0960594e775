"""The key registry and the teacher-label keys (hvp, hvp_directions, energies, provenance)
end to end: Structure.extras -> files (ASE db, packed, HDF5, extended XYZ) -> readers -> samples ->
padded and graph batches -> transforms, checked against ASE's own reading and finite differences."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from mlff_distiller.data import MolecularDataLoader, MolecularDataset, molecular_collate_fn, molecular_collate_fn_no_padding
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.keys import DEFAULT_KEYS, Key, KeyRegistry, infer_kind
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.transforms import RandomRotation, apply_orthogonal_transform, random_rotation_matrix
from mlff_distiller.data.writers import structure_difference, write_structures

K = 2
TEACHER = {"teacher": {"name": "emt", "version": "ase-3.29", "options": {}, "units": {"energy": "eV"}}}


# --------------------------------------------------------------------------- the registry
def test_every_builtin_key_is_declared_once_with_its_rules():
    hvp = DEFAULT_KEYS["hvp"]
    assert (hvp.kind, hvp.shape, hvp.unit, hvp.label, hvp.rotation) == ("atom", ("K", 3), "eV/Å²", True, "vector")
    assert DEFAULT_KEYS["stress"].rotation == "tensor" and DEFAULT_KEYS["energy"].rotation == "invariant"
    assert DEFAULT_KEYS["energies"].kind == "atom" and DEFAULT_KEYS["sample_method"].kind == "list"
    assert set(DEFAULT_KEYS.labels) >= {"energy", "forces", "stress", "energies", "hvp", "hvp_directions"}
    assert DEFAULT_KEYS["edge_index"].axis == 1 and DEFAULT_KEYS["edge_index"].atom_index
    with pytest.raises(ValueError, match="declared twice"):
        DEFAULT_KEYS.extend([Key("hvp", "structure", (3,))])
    same = DEFAULT_KEYS.extend([DEFAULT_KEYS["hvp"]])  # an identical re-declaration is fine
    assert same == DEFAULT_KEYS
    with pytest.raises(KeyError, match="'mystery' is not declared"):
        DEFAULT_KEYS.require("mystery")
    with pytest.raises(ValueError, match="reserved"):
        Key("ptr", "structure")
    with pytest.raises(ValueError, match="vector"):
        Key("v", "structure", (2,), rotation="vector")
    extended = DEFAULT_KEYS.extend([Key("dipole_ref", "structure", (3,), rotation="vector")])
    assert pickle.loads(pickle.dumps(extended)) == extended and "dipole_ref" not in DEFAULT_KEYS


def test_value_checks_name_the_file_structure_and_key():
    species = DEFAULT_KEYS["species"]
    for bad in (0, -1, 119, 200):
        with pytest.raises(DataFormatError, match=r"f\.db, structure 3, key 'species': atomic number"):
            species.check(np.array([1, bad]), natoms=2, path="f.db", index=3)
    with pytest.raises(DataFormatError, match="NaN"):
        DEFAULT_KEYS["energies"].check(np.array([1.0, np.nan]), natoms=2)
    with pytest.raises(DataFormatError, match="negative"):
        DEFAULT_KEYS["sample_seed"].check(-1)
    with pytest.raises(DataFormatError, match=r"expected first dimension 3"):
        DEFAULT_KEYS["hvp"].check(np.zeros((2, K, 3)), natoms=3)
    with pytest.raises(DataFormatError, match=r"expected \[N, K, 3\]"):
        DEFAULT_KEYS["hvp"].check(np.zeros((2, 3)), natoms=2)
    with pytest.raises(DataFormatError, match="norm"):
        DEFAULT_KEYS["hvp_directions"].check(np.ones((2, K, 3)), natoms=2)
    with pytest.raises(DataFormatError, match="must be a string"):
        DEFAULT_KEYS["config_type"].check(3)
    with pytest.raises(DataFormatError, match="2\\*\\*53"):
        DEFAULT_KEYS["energy"].check(np.array(2**53 + 1))
    assert DEFAULT_KEYS["sample_seed"].check(np.int32(4)).dtype == np.int64


def test_undeclared_keys_are_batched_only_when_their_shapes_are_unambiguous():
    assert infer_kind("x", [(3, 2), (5, 2)], [3, 5]) == "atom"
    assert infer_kind("x", [(4,), (4,)], [3, 5]) == "structure"
    assert infer_kind("x", [None, None], [3, 5]) == "list"
    with pytest.raises(ValueError, match="both per-atom and per-structure"):
        infer_kind("x", [(3,), (3,)], [3, 3])  # a 3-vector of 3-atom molecules: never a guess
    with pytest.raises(ValueError, match="neither"):
        infer_kind("x", [(2,), (7,)], [3, 5])


# --------------------------------------------------------------------------- structures with the new keys
def hvp_by_finite_differences(atoms: Atoms, directions: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """[N, K, 3] hvp[:, k] = -(F(x + h v_k) - F(x - h v_k)) / (2h) with EMT."""
    out = np.empty_like(directions)
    for k in range(directions.shape[1]):
        plus, minus = atoms.copy(), atoms.copy()
        plus.calc, minus.calc = EMT(), EMT()
        plus.positions += h * directions[:, k]
        minus.positions -= h * directions[:, k]
        out[:, k] = -(plus.get_forces() - minus.get_forces()) / (2 * h)
    return out


def labeled(atoms: Atoms, seed: int, provenance: dict) -> Structure:
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.calc = EMT()
    directions = rng.normal(size=(len(atoms), K, 3))
    directions /= np.sqrt((directions**2).sum(axis=(0, 2)))[None, :, None]
    extras = {
        "energies": atoms.get_potential_energies(),
        "hvp": hvp_by_finite_differences(atoms, directions),
        "hvp_directions": directions,
        **provenance,
    }
    periodic = bool(atoms.pbc.any())
    return Structure(
        positions=atoms.positions.copy(), numbers=atoms.numbers.astype(np.int64), cell=atoms.cell.array.copy(),
        pbc=atoms.pbc.copy(), energy=np.array(atoms.get_potential_energy()), forces=atoms.get_forces(),
        stress=-np.eye(3) * 0.01 + 0.001 * np.diag([1.0, 2.0, 3.0]) if periodic else None, extras=extras,
    )


@pytest.fixture(scope="module")
def structures() -> list[Structure]:
    rng = np.random.default_rng(0)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    cu.positions += rng.normal(scale=0.05, size=cu.positions.shape)
    mol = molecule("CH4")
    mol.positions += rng.normal(scale=0.03, size=mol.positions.shape)
    al = bulk("Al", "fcc", a=4.05) * (2, 2, 1)
    al.positions += rng.normal(scale=0.05, size=al.positions.shape)
    return [
        labeled(cu, 1, {"sample_method": "md", "sample_seed": 0, "sample_temperature": 300.123456789,
                        "sample_group": "seed0", "sample_step": 10, "config_type": "bulk"}),
        labeled(mol, 2, {"sample_method": "seed", "sample_seed": 1, "sample_group": "seed1", "sample_step": 0}),
        labeled(al, 3, {"sample_method": "rattle", "sample_seed": 2, "sample_group": "seed2", "sample_step": 3,
                        "config_type": "bulk"}),
    ]


def test_hvp_fixture_is_the_hessian_times_the_directions(structures):
    # independent check of the reference: H = d2E/dx2 by finite differences of forces, column by column
    s = structures[1]
    atoms = Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
    n, h = len(atoms), 1e-4
    hessian = np.empty((3 * n, 3 * n))
    for c in range(3 * n):
        step = np.zeros(3 * n)
        step[c] = h
        hessian[:, c] = hvp_by_finite_differences(atoms, step.reshape(n, 1, 3) / h, h)[:, 0].reshape(-1)
    columns = lambda a: np.stack([a[:, k].reshape(-1) for k in range(K)], axis=1)  # noqa: E731  [3N, K]
    np.testing.assert_allclose(columns(s.extras["hvp"]), hessian @ columns(s.extras["hvp_directions"]), atol=1e-5)


@pytest.mark.parametrize("fmt,suffix", [("ase", "db"), ("packed", "h5"), ("hdf5", "h5"), ("xyz", "xyz")])
def test_new_keys_round_trip_bit_for_bit(structures, tmp_path, fmt, suffix):
    path = tmp_path / f"s.{suffix}"
    with pytest.warns(UserWarning, match="no file metadata") if fmt == "xyz" else _no_warning():
        write_structures(path, structures, fmt, metadata=TEACHER)
    ds = MolecularDataset(path, format=fmt, dtype=torch.float64)
    for i, s in enumerate(structures):
        assert structure_difference(s, ds.get_structure(i)) is None, (fmt, i, structure_difference(s, ds.get_structure(i)))
        back = ds.get_structure(i).extras
        assert back["hvp"].dtype == np.float64 and back["sample_seed"].dtype == np.int64
    assert ds.metadata == ({} if fmt == "xyz" else TEACHER)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_ase_db_keeps_the_keys_where_contracts_say(structures, tmp_path):
    from ase.db import connect

    path = tmp_path / "s.db"
    write_structures(path, structures, "ase", metadata=TEACHER)
    db = connect(path)
    assert db.metadata == TEACHER
    for s, row in zip(structures, db.select()):
        atoms = row.toatoms()
        assert atoms.get_potential_energy() == float(s.energy)
        assert np.array_equal(atoms.get_forces(), s.forces)
        assert np.array_equal(row.data["hvp"], s.extras["hvp"]) and row.data["hvp"].shape == (len(s.numbers), K, 3)
        assert np.array_equal(row.data["hvp_directions"], s.extras["hvp_directions"])
        assert np.array_equal(row.data["energies"], s.extras["energies"])  # SQLite has no energies column
        for key in ("sample_method", "sample_seed", "sample_group", "sample_step", "config_type", "sample_temperature"):
            assert row.key_value_pairs.get(key) == s.extras.get(key), key


def test_packed_keeps_the_keys_as_arrays(structures, tmp_path):
    import h5py

    path = tmp_path / "s.h5"
    write_structures(path, structures, "packed", metadata=TEACHER)
    with h5py.File(path, "r") as f:
        assert f["hvp"].shape == (sum(len(s.numbers) for s in structures), K, 3) and f["hvp"].dtype == np.float64
        assert f["sample_temperature_present"][()].tolist() == [True, False, False]
        assert f["config_type_present"][()].tolist() == [True, False, True]
    ds = MolecularDataset(path, format="packed", dtype=torch.float64, cache=True)
    assert ds.metadata == TEACHER
    for i, s in enumerate(structures):
        assert structure_difference(s, ds.get_structure(i)) is None


@pytest.mark.parametrize("fmt,suffix", [("ase", "db"), ("packed", "h5"), ("hdf5", "h5"), ("xyz", "xyz")])
def test_source_index_is_provenance_that_round_trips(structures, tmp_path, fmt, suffix):
    """``source_index`` (the input index a labeling run records per structure) is a declared int provenance
    key: every writer stores it and every reader gives it back as int64, and samples/batches carry it."""
    import dataclasses

    from mlff_distiller.data.keys import PROVENANCE_KEYS, STRUCTURE_EXTRAS

    key = DEFAULT_KEYS["source_index"]
    assert (key.kind, key.shape, key.dtype, key.label) == ("structure", (), "int", False)
    assert "source_index" in PROVENANCE_KEYS and "source_index" in STRUCTURE_EXTRAS
    with pytest.raises(DataFormatError, match="negative"):
        key.check(-1)
    tagged = [dataclasses.replace(s, extras={**s.extras, "source_index": i}) for s, i in zip(structures, (0, 2, 5))]
    path = tmp_path / f"s.{suffix}"
    with pytest.warns(UserWarning, match="no file metadata") if fmt == "xyz" else _no_warning():
        write_structures(path, tagged, fmt, metadata=TEACHER)
    ds = MolecularDataset(path, format=fmt, dtype=torch.float64)
    for i, s in enumerate(tagged):
        back = ds.get_structure(i)
        assert structure_difference(s, back) is None, (fmt, i, structure_difference(s, back))
        assert np.asarray(back.extras["source_index"]).dtype == np.int64
        assert int(back.extras["source_index"]) == (0, 2, 5)[i]
    batch = molecular_collate_fn([ds[i] for i in range(len(ds))])
    assert batch["source_index"].dtype == torch.int64 and batch["source_index"].tolist() == [0, 2, 5]


def test_k_must_be_the_same_in_every_structure_of_a_packed_file(structures, tmp_path):
    other = Structure(**{**vars(structures[0]), "extras": dict(structures[0].extras)})
    other.extras["hvp"] = np.zeros((len(other.numbers), 3, 3))
    other.extras["hvp_directions"] = np.ones((len(other.numbers), 3, 3)) / np.sqrt(3 * len(other.numbers))
    with pytest.raises(DataFormatError, match=r"bad\.h5, structure 3, key 'hvp'.*same (row shape|for every structure)"):
        write_structures(tmp_path / "bad.h5", structures + [other], "packed")
    assert not (tmp_path / "bad.h5").exists()


# --------------------------------------------------------------------------- batches
def _assert_batch_holds(batch: dict, structures: list[Structure], padded: bool, dtype=torch.float64) -> None:
    n = len(structures)
    counts = [len(s.numbers) for s in structures]
    ptr = np.concatenate([[0], np.cumsum(counts)])
    for name in ("hvp", "hvp_directions", "energies"):
        assert batch[f"{name}_mask"].tolist() == [True] * n
        for b, s in enumerate(structures):
            got = batch[name][b, : counts[b]] if padded else batch[name][ptr[b] : ptr[b + 1]]
            assert torch.equal(got, torch.tensor(s.extras[name], dtype=dtype)), name
            if padded:
                assert (batch[name][b, counts[b]:] == 0).all()
    assert batch["sample_method"] == [s.extras["sample_method"] for s in structures]
    assert batch["config_type"] == [s.extras.get("config_type") for s in structures]
    assert batch["config_type_mask"].tolist() == [s.extras.get("config_type") is not None for s in structures]
    assert batch["sample_seed"].tolist() == [s.extras["sample_seed"] for s in structures]
    assert batch["sample_seed"].dtype == torch.int64 and "sample_seed_mask" not in batch
    temps = [s.extras.get("sample_temperature", 0.0) for s in structures]
    assert batch["sample_temperature"].tolist() == temps
    assert batch["sample_temperature_mask"].tolist() == ["sample_temperature" in s.extras for s in structures]


@pytest.mark.parametrize("fmt,suffix", [("ase", "db"), ("packed", "h5")])
def test_batches_carry_the_new_keys(structures, tmp_path, fmt, suffix):
    path = tmp_path / f"s.{suffix}"
    write_structures(path, structures, fmt)
    ds = MolecularDataset(path, format=fmt, dtype=torch.float64)
    for padded in (True, False):
        fast = ds.__getitems__([0, 1, 2]).collate(padded)
        _assert_batch_holds(fast, structures, padded)
        collate = molecular_collate_fn if padded else molecular_collate_fn_no_padding
        per_sample = collate([{k: v for k, v in ds[i].items() if k != "atoms"} for i in range(3)])
        _assert_batch_holds(per_sample, structures, padded)
    assert ds[1]["hvp"].shape == (5, K, 3) and ds[1]["sample_method"] == "seed"


def test_rotation_turns_hvp_like_the_physics(structures):
    """H' v' = R H v: the rotated sample's hvp equals finite differences on the rotated structure
    along the rotated directions."""
    s = structures[0]
    ds_sample = {
        "positions": torch.tensor(s.positions), "species": torch.tensor(s.numbers), "cell": torch.tensor(s.cell),
        "pbc": torch.tensor(s.pbc), "energy": torch.tensor(s.energy), "forces": torch.tensor(s.forces),
        "hvp": torch.tensor(s.extras["hvp"]), "hvp_directions": torch.tensor(s.extras["hvp_directions"]),
        "energies": torch.tensor(s.extras["energies"]),
    }
    q = random_rotation_matrix(generator=torch.Generator().manual_seed(7))
    out = apply_orthogonal_transform(ds_sample, q)
    rotated = Atoms(numbers=s.numbers, positions=out["positions"].numpy(), cell=out["cell"].numpy(), pbc=s.pbc)
    expected = hvp_by_finite_differences(rotated, out["hvp_directions"].numpy())
    np.testing.assert_allclose(out["hvp"].numpy(), expected, atol=2e-6)
    np.testing.assert_allclose(out["hvp_directions"].numpy(), s.extras["hvp_directions"] @ q.numpy().T, atol=1e-14)
    assert torch.equal(out["energies"], ds_sample["energies"])
    # the same through the dataset's transform and the Atoms it carries
    out2 = RandomRotation(p=1.0, seed=3)(ds_sample)
    assert not torch.allclose(out2["hvp"], ds_sample["hvp"])


# --------------------------------------------------------------------------- fault 2 of issue 17
def _three_atom_structures(n: int = 6) -> list[Structure]:
    rng = np.random.default_rng(5)
    return [Structure(positions=rng.normal(size=(3, 3)), numbers=np.array([8, 1, 1]), cell=np.zeros((3, 3)),
                      pbc=np.zeros(3, bool), energy=np.array(float(k)), extras={"field": rng.normal(size=3)})
            for k in range(n)]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_declared_keys_reach_spawned_workers(tmp_path, context):
    """A per-structure 3-vector of 3-atom molecules is [B, 3] in every process: its declaration
    travels with the dataset and the loader's collate function, not a parent-only global."""
    field = Key("field", "structure", (3,), unit="V/Å", rotation="vector")
    path = tmp_path / "f.h5"
    write_structures(path, _three_atom_structures(), "packed", keys=[field])
    ds = MolecularDataset(path, format="packed", dtype=torch.float64, extra_keys=[field])
    kwargs = dict(batch_size=3, use_padding=False, pin_memory=False, seed=0)
    main = list(MolecularDataLoader(ds, num_workers=0, **kwargs))
    workers = list(MolecularDataLoader(ds, num_workers=1, multiprocessing_context=context, **kwargs))
    for a, b in zip(main, workers):
        assert a["field"].shape == b["field"].shape == (3, 3)
        assert torch.equal(a["field"], b["field"])
    # the packed file declared the key itself: a dataset without extra_keys reads it the same way
    assert MolecularDataset(path, format="packed").key_registry["field"] == field


def test_an_undeclared_ambiguous_key_is_an_error_not_a_guess():
    samples = [{"positions": torch.zeros(3, 3), "species": torch.ones(3, dtype=torch.long),
                "field": torch.ones(3)} for _ in range(2)]
    with pytest.raises(ValueError, match="'field'.*both per-atom and per-structure"):
        molecular_collate_fn_no_padding(samples)
    batch = molecular_collate_fn_no_padding(samples, keys=KeyRegistry([Key("field", "structure", (3,))]))
    assert batch["field"].shape == (2, 3)


@pytest.mark.parametrize("fmt,suffix", [("ase", "db"), ("hdf5", "h5"), ("xyz", "xyz")])
def test_k_must_be_the_same_in_every_structure_of_any_file(structures, tmp_path, fmt, suffix):
    other = Structure(**{**vars(structures[1]), "extras": dict(structures[1].extras)})
    n = len(other.numbers)
    other.extras["hvp"] = np.zeros((n, 3, 3))
    other.extras["hvp_directions"] = np.ones((n, 3, 3)) / np.sqrt(3 * n)
    with pytest.raises(DataFormatError, match=r"s\.\w+, structure 1, key 'hvp'.*same for every structure"):
        write_structures(tmp_path / f"s.{suffix}", [structures[0], other], fmt)
    assert not (tmp_path / f"s.{suffix}").exists()
