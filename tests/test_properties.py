"""``properties=[...]``: extra per-atom / per-structure properties from real files equal the raw
values (h5py × the file's unit attribute, ASE's info/arrays/constraints, the raw database row),
are declared in one registry (kind, shape, unit), batched by kind with masks, identical in spawned
DataLoader workers, written and packed losslessly, and kept on the Atoms."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.db import connect
from ase.io import read

from conftest import realdata_dir
from mlff_distiller.data.dataset import MolecularDataset
from mlff_distiller.data.keys import Key
from mlff_distiller.data.loader import MolecularDataLoader
from mlff_distiller.data.packed import write_packed
from mlff_distiller.data.predictions import predictions_to_atoms, write_predictions
from mlff_distiller.data.properties import Property, parse_properties, smiles_total_charge
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.writers import structure_difference, write_structures

REALDATA = realdata_dir()
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not present")


# -- real files against raw readings -------------------------------------------------------------
@needs_realdata
def test_spice_charges_dipoles_and_total_charge():
    path = REALDATA / "modelforge/SPICE-1.1.4_n2.hdf5"
    dataset = MolecularDataset(path, properties=["charges", "dipole", "total_charge"])
    with h5py.File(path) as f:
        groups = [(name, f[name]) for name in ("103147721", "C#C.[Na+]")]
        start = 0
        for name, grp in groups:
            count = grp["conformations"].shape[0]
            assert grp["scf_dipole"].attrs["units"] == "elementary_charge*bohr"
            for row in (0, count - 1):
                s = dataset.get_structure(start + row)
                np.testing.assert_array_equal(s.extras["dipole"], grp["scf_dipole"][row].astype(np.float64) * units.Bohr)
                if "mbis_charges" in grp:
                    np.testing.assert_array_equal(s.extras["charges"], grp["mbis_charges"][row][:, 0])
                    assert round(float(grp["mbis_charges"][row].sum())) == 1  # independent: the charges add up
                else:
                    assert "charges" not in s.extras
                assert s.extras["total_charge"] == 1.0  # both SPICE molecules are cations
            start += count
    assert dataset.label_keys["dipole"] == "scf_dipole" and dataset.label_keys["charges"] == "mbis_charges"
    assert "x0.529177" in dataset.units["dipole"]
    batch = next(iter(MolecularDataLoader(dataset, batch_size=4, sampler=[48, 49, 50, 51])))  # both groups
    assert batch["charges_mask"].tolist() == [True, True, False, False]
    assert batch["dipole"].shape == (4, 3) and batch["total_charge"].tolist() == [1.0] * 4


def test_smiles_total_charge():
    assert smiles_total_charge("[H:3][C:1]#[C:2][H:4].[Na+:5]") == 1
    assert smiles_total_charge("[O-]C(=O)C[N+](C)(C)C") == 0
    assert smiles_total_charge("[Fe+2].[Cl-].[Cl-]") == 0 and smiles_total_charge("[SO4--]") == -2


@needs_realdata
def test_modelforge_charges_and_dipoles_with_pint_units():
    path = REALDATA / "modelforge/qm9_dataset_v1.1_ntc_10.hdf5"
    dataset = MolecularDataset(path, properties=["charges", "dipole"])
    with h5py.File(path) as f:
        names = sorted(f.keys())
        for i in (0, 3, 9):
            grp = f[names[i]]
            assert grp["dipole_moment_per_system"].attrs["u"] == "elementary_charge * nanometer"
            s = dataset.get_structure(i)
            np.testing.assert_array_equal(s.extras["charges"], grp["partial_charges"][0][:, 0])
            np.testing.assert_array_equal(s.extras["dipole"], grp["dipole_moment_per_system"][0] * 10.0)


@needs_realdata
def test_ani_charges_and_dipoles_documented_units():
    path = REALDATA / "modelforge/ani1_n5.hdf5"
    dataset = MolecularDataset(path, properties={"charges": "wb97x_dz.cm5_charges", "dipole": "wb97x_dz.dipole"},
                               nan_as_missing=True)
    with h5py.File(path) as f:
        grp = f[sorted(f.keys())[0]]
        for row in range(grp["coordinates"].shape[0]):
            s = dataset.get_structure(row)
            np.testing.assert_array_equal(s.extras["charges"], grp["wb97x_dz.cm5_charges"][row])
            dipole = grp["wb97x_dz.dipole"][row]
            if np.isnan(dipole).all():
                assert "dipole" not in s.extras
            else:
                np.testing.assert_array_equal(s.extras["dipole"], dipole)  # e*Å, the ANI-1x descriptor


@needs_realdata
def test_extxyz_info_values_and_columns_equal_ase():
    path = REALDATA / "workflow/configs_for_error_test.xyz"
    frames = read(path, ":")
    dataset = MolecularDataset(path, energy_key="dft_energy", forces_key="dft_forces",
                               properties={"dipole": "dft_dipole", "leverage": "cur_leverage_score"})
    assert dataset.key_registry["leverage"].kind == "atom"  # a column: per atom, declared from the file
    for i in (0, 17, 39):
        s = dataset.get_structure(i)
        np.testing.assert_array_equal(s.extras["dipole"], frames[i].info["dft_dipole"])
        np.testing.assert_array_equal(s.extras["leverage"], frames[i].arrays["cur_leverage_score"])
    torchmd = REALDATA / "torchmd-net/traj.xyz"
    ref = read(torchmd, ":")
    ds = MolecularDataset(torchmd, properties=["total_charge", "occupancy", "residuenumbers"])
    for i in (0, 11):
        s = ds.get_structure(i)
        assert s.extras["total_charge"] == ref[i].info["charge"]
        np.testing.assert_array_equal(s.extras["occupancy"], ref[i].arrays["occupancy"])
        np.testing.assert_array_equal(s.extras["residuenumbers"], ref[i].arrays["residuenumbers"])
    assert s.extras["residuenumbers"].dtype == np.int64


@needs_realdata
def test_virial_is_kept_as_its_own_label():
    path = REALDATA / "metatrain/carbon_reduced_100.xyz"
    frames = read(path, ":3")
    s = open_reader(path, properties=["virial"]).read(2)
    np.testing.assert_array_equal(s.extras["virial"], frames[2].info["virial"])
    np.testing.assert_array_equal(s.stress, -frames[2].info["virial"] / frames[2].get_volume())


@needs_realdata
def test_carbene_spin_distinguishes_rows_of_one_geometry():
    path = REALDATA / "schnetpack/ase_carbene_2200.db"
    rows = {r.id: r for r in connect(path).select("id<3")} | {r.id: r for r in connect(path).select("id>550,id<553")}
    dataset = MolecularDataset(path, properties=["spin", "total_charge", "dipole"], dtype=torch.float64)
    a, b = dataset.get_structure(0), dataset.get_structure(550)
    np.testing.assert_array_equal(a.positions, b.positions)  # the same geometry ...
    assert a.extras["spin"] == rows[1].data["spin_multiplicity"][0] == 0.0
    assert b.extras["spin"] == rows[551].data["spin_multiplicity"][0] == 2.0  # ... another spin state
    np.testing.assert_array_equal(b.extras["dipole"], rows[551].data["dipole_moment"][0])
    assert dataset.label_keys["spin"] == "spin_multiplicity"
    # a per-structure 3-vector of a 3-atom molecule stays [B, 3] in both batch layouts
    for padding in (True, False):
        batch = next(iter(MolecularDataLoader(dataset, batch_size=2, sampler=[0, 550], use_padding=padding)))
        assert batch["dipole"].shape == (2, 3) and batch["spin"].tolist() == [0.0, 2.0]
        assert torch.equal(batch["dipole"][1], torch.tensor(np.array(rows[551].data["dipole_moment"][0]), dtype=torch.float64))


@needs_realdata
def test_fixed_atoms_from_move_mask_and_constraints(tmp_path):
    path = REALDATA / "fairchem/toy_c3h8_relax.extxyz"
    atoms = read(path, 0)
    s = open_reader(path, properties=["fixed", "tags"]).read(0)
    fixed = np.zeros(len(atoms), bool)
    fixed[atoms.constraints[0].index] = True  # ASE turns move_mask into FixAtoms
    np.testing.assert_array_equal(s.extras["fixed"], fixed)
    np.testing.assert_array_equal(s.extras["tags"], atoms.get_tags())
    db = tmp_path / "c.db"
    with connect(db) as con:
        for mask in ([0, 2], []):
            a = Atoms("H3", positions=np.eye(3))
            a.set_constraint(FixAtoms(indices=mask))
            con.write(a)
    got = open_reader(db, properties=["fixed"]).read_many([0, 1])
    assert got[0].extras["fixed"].tolist() == [True, False, True] and not got[1].extras["fixed"].any()
    bulks = REALDATA / "fairchem/bulks.db"
    row = next(connect(bulks).select())
    s = open_reader(bulks, properties=["initial_magmoms", "initial_charges", "tags"]).read(0)
    for name in ("initial_magmoms", "initial_charges", "tags"):
        np.testing.assert_array_equal(s.extras[name], row.get(name))


@needs_realdata
def test_undeclared_and_missing_properties_are_errors():
    qm9 = REALDATA / "schnetpack/test_qm9.db"
    with pytest.raises(KeyError, match=r"row\.data does not say .* declare it: extra_keys=\[Key\('dipole_moment'"):
        MolecularDataset(qm9, energy_key="energy_U0", properties=["dipole_moment"])
    # declared with a unit: the metadata's 'D' (Debye) is converted to it
    declared = Key("dipole_moment", "structure", (), unit="e*Å")
    ds = MolecularDataset(qm9, energy_key="energy_U0", properties=["dipole_moment"], extra_keys=[declared])
    row = next(iter(connect(qm9).select("id=2")))
    assert ds.get_structure(1).extras["dipole_moment"] == row.data["dipole_moment"][0] * units.Debye
    with pytest.raises(KeyError, match=r"properties 'magmoms'.*not found in any of its 20 structures"):
        MolecularDataset(qm9, energy_key="energy_U0", properties=["magmoms"])
    optional = MolecularDataset(qm9, energy_key="energy_U0", properties=[Property("magmoms", required=False)])
    assert "magmoms" not in optional.get_structure(0).extras


def test_parse_properties_spellings():
    assert parse_properties("charges, dipole=dft_dipole|REF_dipole") == (
        Property("charges"), Property("dipole", ("dft_dipole", "REF_dipole")))
    assert parse_properties({"dipole": "dft_dipole"}) == (Property("dipole", ("dft_dipole",)),)
    with pytest.raises(ValueError, match="requested twice"):
        parse_properties(["dipole=a", "dipole=b"])


# -- every kind through batches, workers and writers ---------------------------------------------
def _structures(n=6, seed=0):
    """3-atom molecules with every property kind, some structures lacking some properties."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        positions = rng.normal(size=(3, 3)) * 1.3
        extras = {"dipole": rng.normal(size=3), "total_charge": np.float64(i % 2), "config_type": f"group{i % 3}"}
        if i % 2 == 0:
            extras["charges"] = rng.normal(size=3)
            extras["fixed"] = np.array([True, False, i % 4 == 0])
            extras["spin"] = np.float64(1 + i % 3)
            extras["head"] = "dft"
        out.append(Structure(positions, np.array([8, 1, 1]), np.zeros((3, 3)), np.zeros(3, bool),
                             energy=np.float64(rng.normal()), forces=rng.normal(size=(3, 3)), extras=extras))
    return out


PROPS = ["charges", "fixed", "dipole", "total_charge", "spin", "config_type", "head"]


@pytest.fixture(scope="module")
def property_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("props") / "p.xyz"
    write_structures(path, _structures())
    return path


def test_every_kind_batches_with_masks_and_equally_in_spawned_workers(property_file):
    dataset = MolecularDataset(property_file, properties=PROPS, dtype=torch.float64)
    kw = dict(batch_size=3, use_padding=False, cutoff=2.0)
    reference = list(MolecularDataLoader(dataset, **kw))
    b = reference[0]
    assert b["dipole"].shape == (3, 3) and b["charges"].shape == (9,) and b["fixed"].dtype == torch.bool
    assert b["charges_mask"].tolist() == [True, False, True] and b["spin_mask"].tolist() == [True, False, True]
    assert b["config_type"] == ["group0", "group1", "group2"] and b["head"] == ["dft", None, "dft"]
    padded = next(iter(MolecularDataLoader(dataset, batch_size=3, use_padding=True)))
    assert padded["dipole"].shape == (3, 3) and padded["charges"].shape == (3, 3)
    spawned = list(MolecularDataLoader(dataset, num_workers=1, multiprocessing_context="spawn", **kw))
    assert len(spawned) == len(reference)
    for x, y in zip(reference, spawned):
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, y[key]), key
            else:
                assert value == y[key], key


@pytest.mark.parametrize("fmt", ["ase", "xyz", "hdf5", "packed"])
def test_written_converted_and_packed_properties_are_bit_exact(property_file, tmp_path, fmt):
    source = open_reader(property_file, properties=PROPS)
    structures = source.read_many(range(len(source)))
    out = tmp_path / f"out.{ {'ase': 'db', 'xyz': 'xyz', 'hdf5': 'h5', 'packed': 'h5'}[fmt] }"
    if fmt == "packed":
        write_packed(out, source)
    else:
        write_structures(out, structures, fmt, keys=source.key_registry)
    back = open_reader(out, fmt if fmt == "packed" else None, properties=[Property(p, required=False) for p in PROPS])
    for i, (a, b) in enumerate(zip(structures, back.read_many(range(len(back))))):
        assert structure_difference(a, b) is None, (fmt, i, structure_difference(a, b))
        assert b.extras["dipole"].dtype == np.float64


# -- Atoms ----------------------------------------------------------------------------------------
@needs_realdata
def test_get_atoms_keeps_what_ase_reads():
    path = REALDATA / "fairchem/toy_c3h8_relax.extxyz"
    theirs = read(path, 5)
    mine = MolecularDataset(path).get_atoms(5)
    assert [type(c) for c in mine.constraints] == [FixAtoms]
    np.testing.assert_array_equal(mine.constraints[0].index, theirs.constraints[0].index)
    np.testing.assert_array_equal(mine.get_tags(), theirs.get_tags())
    for key in ("energy", "forces", "energies"):
        np.testing.assert_array_equal(mine.calc.results[key], theirs.calc.results[key])
    configs = REALDATA / "workflow/configs_for_error_test.xyz"
    ref = read(configs, 3)
    sample = MolecularDataset(configs, energy_key="dft_energy", forces_key="dft_forces")[3]
    atoms = sample["atoms"]
    assert atoms.info["compound"] == ref.info["compound"] and atoms.info["MD_time_fs"] == ref.info["MD_time_fs"]
    np.testing.assert_array_equal(atoms.arrays["mace_forces"], ref.arrays["mace_forces"])
    assert atoms.get_potential_energy() == ref.info["dft_energy"]  # the dataset's label in the calculator
    bulks = REALDATA / "fairchem/bulks.db"
    row = next(connect(bulks).select())
    atoms = MolecularDataset(bulks).get_atoms(0)
    assert atoms.info["mpid"] == row.key_value_pairs["mpid"]
    np.testing.assert_array_equal(atoms.get_initial_magnetic_moments(), row.initial_magmoms)


def test_predictions_back_onto_atoms_and_into_a_file(property_file, tmp_path):
    dataset = MolecularDataset(property_file, dtype=torch.float64)
    for padding in (False, True):
        batch = next(iter(MolecularDataLoader(dataset, batch_size=4, use_padding=padding, return_atoms=True)))
        predicted = {"energy": batch["energy"] * 2, "forces": batch["forces"] + 1}
        images = predictions_to_atoms(batch, predicted)
        for b, atoms in enumerate(images):
            s = dataset.get_structure(b)
            assert atoms.info["pred_energy"] == 2 * float(s.energy)
            np.testing.assert_array_equal(atoms.arrays["pred_forces"], s.forces + 1)
            assert atoms.get_potential_energy() == float(s.energy)  # the label stays in the calculator
    write_predictions(tmp_path / "pred.xyz", images)
    back = read(tmp_path / "pred.xyz", ":")
    assert [a.info["pred_energy"] for a in back] == [a.info["pred_energy"] for a in images]
    swapped = predictions_to_atoms(batch, predicted, as_calculator=True)
    assert swapped[1].get_potential_energy() == 2 * float(dataset.get_structure(1).energy)
    assert swapped[1].info["REF_energy"] == float(dataset.get_structure(1).energy)
    with pytest.raises(KeyError, match="'mystery' is not declared"):
        predictions_to_atoms(batch, {"mystery": batch["energy"]})


def test_structure_to_atoms_puts_ase_properties_in_the_calculator():
    from mlff_distiller.data.structure import structure_to_atoms

    s = _structures(2)[0]
    atoms = structure_to_atoms(s)
    assert isinstance(atoms.calc, SinglePointCalculator)
    np.testing.assert_array_equal(atoms.get_charges(), s.extras["charges"])
    np.testing.assert_array_equal(atoms.get_dipole_moment(), s.extras["dipole"])
    assert atoms.info["total_charge"] == 0.0 and atoms.arrays["fixed"].tolist() == [True, False, True]
    assert atoms.constraints[0].index.tolist() == [0, 2]  # fixed is also ASE's FixAtoms


def test_mace_shard_properties(tmp_path):
    """MACE's preprocessed shards: weight/config_type (configuration group) and dipole/charges/head
    (properties/), "None" meaning absent, written as MACE's save_configurations_as_HDF5 does."""
    rng = np.random.default_rng(2)
    path = tmp_path / "train_0.h5"
    with h5py.File(path, "w") as f:
        grp = f.create_group("config_batch_0")
        for j in range(3):
            sub = grp.create_group(f"config_{j}")
            sub["atomic_numbers"] = np.array([8, 1, 1])
            sub["positions"] = rng.normal(size=(3, 3))
            props = sub.create_group("properties")
            props["energy"] = -float(j)
            props["forces"] = rng.normal(size=(3, 3))
            props["dipole"] = rng.normal(size=3) if j != 1 else "None"
            props["charges"] = rng.normal(size=3)
            props["head"] = "Default"
            sub["cell"], sub["pbc"], sub["weight"] = "None", "None", 0.5 + j
            sub["config_type"] = f"type{j}"
    dataset = MolecularDataset(path, properties=["dipole", "charges", "weight", "config_type", "head"])
    with h5py.File(path) as f:
        for j in range(3):
            s, sub = dataset.get_structure(j), f[f"config_batch_0/config_{j}"]
            assert s.extras["weight"] == sub["weight"][()] and s.extras["config_type"] == f"type{j}"
            np.testing.assert_array_equal(s.extras["charges"], sub["properties/charges"][()])
            if j == 1:
                assert "dipole" not in s.extras
            else:
                np.testing.assert_array_equal(s.extras["dipole"], sub["properties/dipole"][()])
    batch = next(iter(MolecularDataLoader(dataset, batch_size=3)))
    assert batch["dipole_mask"].tolist() == [True, False, True] and batch["head"] == ["Default"] * 3
