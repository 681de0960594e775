"""Community HDF5 layouts (issue 9): every real HDF5 file of shared/realdata, MACE shards built
with h5py from MACE's documented structure, and the unit table.

References are the raw h5py arrays of each file times the unit factor its layout documents,
computed here independently from ``ase.units`` (forces = -gradient for SPICE).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import units
from ase.data import atomic_masses

from conftest import emt_structures
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.readers.hdf5 import Hdf5Reader
from mlff_distiller.data.units import UnitError, conversion, parse_unit

HA, BOHR, KCAL_MOL, KJ_MOL = units.Hartree, units.Bohr, units.kcal / units.mol, units.kJ / units.mol


def _realdata() -> Path:
    env = os.environ.get("MLFF_REALDATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


REAL = _realdata()
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data folder {REAL} is absent")


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# -- SPICE ------------------------------------------------------------------------------------
@needs_real
def test_spice_units_and_forces_are_minus_gradient():
    path = REAL / "modelforge" / "SPICE-1.1.4_n2.hdf5"
    reader = Hdf5Reader(path)
    assert reader.layout_name == "spice"
    assert len(reader) == 55
    natoms = reader.natoms_array()
    assert (natoms.min(), natoms.max()) == (5, 27)
    assert "bohr" in reader.units["positions"] and "hartree" in reader.units["energy"]
    assert "-1 x hartree/bohr" in reader.units["forces"]
    i = 0
    with h5py.File(path) as f:
        for name in sorted(f):  # SPICE groups are read in natural (here: sorted) order
            g = f[name]
            conf, energy, grad = g["conformations"][()], g["dft_total_energy"][()], g["dft_total_gradient"][()]
            z = g["atomic_numbers"][()]
            for row in range(conf.shape[0]):
                s = reader.read(i)
                assert np.array_equal(s.numbers, z.astype(np.int64))
                assert np.array_equal(s.positions, _f64(conf[row]) * BOHR)
                assert s.energy == energy[row] * HA
                gradient_ev_a = _f64(grad[row]) * (HA / BOHR)
                assert np.array_equal(s.forces, -gradient_ev_a)  # forces = -gradient, elementwise
                assert np.all(np.sign(s.forces) == -np.sign(grad[row]))
                assert not s.pbc.any() and not s.cell.any()
                i += 1
    assert i == 55


# -- ANI ----------------------------------------------------------------------------------------
@needs_real
def test_ani1x_release_levels_of_theory():
    path = REAL / "modelforge" / "ani1_n5.hdf5"
    reader = Hdf5Reader(path)
    assert reader.layout_name == "ani" and len(reader) == 8
    assert (reader.natoms_array().min(), reader.natoms_array().max()) == (13, 19)
    assert reader.units["energy"].startswith("wb97x_dz.energy: hartree")
    tz = Hdf5Reader(path, energy_key="wb97x_tz.energy")
    i = 0
    with h5py.File(path) as f:
        for name in sorted(f):
            g = f[name]
            for row in range(g["coordinates"].shape[0]):
                s, t = reader.read(i), tz.read(i)
                assert s.positions.dtype == np.float32 and np.array_equal(s.positions, g["coordinates"][row])
                assert np.array_equal(s.numbers, g["atomic_numbers"][()].astype(np.int64))
                assert s.energy == g["wb97x_dz.energy"][row] * HA
                assert np.array_equal(s.forces, _f64(g["wb97x_dz.forces"][row]) * HA)  # Ha/Å -> eV/Å
                assert t.energy == g["wb97x_tz.energy"][row] * HA
                assert np.array_equal(t.forces, _f64(g["wb97x_tz.forces"][row]) * HA)
                i += 1


@needs_real
def test_ani1x_missing_and_nan_levels():
    path = REAL / "modelforge" / "ani1_n5.hdf5"
    with pytest.raises(KeyError, match="wb97x_dz.energy"):  # lists the keys the file has
        Hdf5Reader(path, energy_key="b3lyp.energy")
    cc = Hdf5Reader(path, energy_key="ccsd(t)_cbs.energy")
    energies = []
    for i in range(len(cc)):
        try:
            energies.append(cc.read(i).energy)
        except DataFormatError as exc:  # conformers without a CCSD(T) energy are NaN in the file
            assert "structure" in str(exc) and "ccsd(t)_cbs.energy" in str(exc)
            energies.append("error")
    assert "error" in energies
    lenient = Hdf5Reader(path, energy_key="ccsd(t)_cbs.energy", nan_as_missing=True)
    got = [lenient.read(i).energy for i in range(len(lenient))]
    assert [e is None for e in got] == [e == "error" for e in energies]
    assert lenient.read(0).forces is None  # no ccsd(t)_cbs.forces in ANI-1ccx


@needs_real
def test_ani2x_species_per_conformer():
    path = REAL / "modelforge" / "ani2x_minimal.hdf5"
    reader = Hdf5Reader(path)
    assert reader.layout_name == "ani" and len(reader) == 5706
    assert set(reader.natoms_array().tolist()) == {2}
    with h5py.File(path) as f:
        g = f["002"]
        coords, energies, forces, species = (g[k][()] for k in ("coordinates", "energies", "forces", "species"))
    for i in list(range(0, 5706, 97)) + [5705]:
        s = reader.read(i)
        assert np.array_equal(s.numbers, species[i])
        assert np.array_equal(s.positions, coords[i])
        assert s.energy == energies[i] * HA
        assert np.array_equal(s.forces, forces[i] * HA)


@needs_real
def test_original_ani1_nested_layout_with_symbol_species():
    path = REAL / "ani1-legacy" / "ani_gdb_s01.h5"
    reader = Hdf5Reader(path)
    assert reader.layout_name == "ani"
    assert Hdf5Reader(path, layout="ani1").natoms_array().tolist() == reader.natoms_array().tolist()
    natoms = reader.natoms_array()
    assert len(reader) == 10800 and (natoms.min(), natoms.max()) == (3, 5)
    assert np.bincount(natoms).tolist() == [0, 0, 0, 1800, 3600, 5400]
    start = 0
    with h5py.File(path) as f:
        for name, formula in (("gdb11_s01-0", [6, 1, 1, 1, 1]), ("gdb11_s01-1", [7, 1, 1, 1]), ("gdb11_s01-2", [8, 1, 1])):
            g = f["gdb11_s01"][name]
            assert [s.decode() for s in g["species"][()]] == [["", "H", "", "", "", "", "C", "N", "O"][z] for z in formula]
            coords, energies = g["coordinates"][()], g["energies"][()]
            for row in (0, 1, coords.shape[0] - 1):
                s = reader.read(start + row)
                assert s.numbers.tolist() == formula
                assert np.array_equal(s.positions, coords[row])
                assert s.energy == energies[row] * HA
                assert s.forces is None
            start += coords.shape[0]


# -- modelforge -----------------------------------------------------------------------------------
@needs_real
def test_modelforge_qm9_units_from_attributes():
    path = REAL / "modelforge" / "qm9_dataset_v1.1_ntc_10.hdf5"
    reader = Hdf5Reader(path)
    assert reader.layout_name == "modelforge" and len(reader) == 10
    assert (reader.natoms_array().min(), reader.natoms_array().max()) == (3, 8)
    assert "nanometer" in reader.units["positions"] and "kilojoule_per_mole" in reader.units["energy"]
    h = Hdf5Reader(path, energy_key="enthalpy_at_298.15K")
    with h5py.File(path) as f:
        for i, name in enumerate(sorted(f)):
            g = f[name]
            assert g["positions"].attrs["u"] == "nanometer"
            s = reader.read(i)
            assert np.array_equal(s.numbers, g["atomic_numbers"][()].reshape(-1))
            assert np.array_equal(s.positions, g["positions"][0] * 10.0)  # nm -> Å
            assert s.energy == g["internal_energy_at_0K"][0, 0] * KJ_MOL
            assert s.forces is None
            assert h.read(i).energy == g["enthalpy_at_298.15K"][0, 0] * KJ_MOL


# -- DeePMD -----------------------------------------------------------------------------------------
@needs_real
def test_deepmd_hdf5():
    path = REAL / "dpdata" / "data_bar.h5"
    reader = Hdf5Reader(path)
    assert reader.layout_name == "deepmd" and len(reader) == 3
    assert reader.natoms_array().tolist() == [6, 6, 6]
    with h5py.File(path) as f:
        s0 = f["set.000"]
        coord, box, energy, force, virial = (s0[k][()] for k in ("coord.npy", "box.npy", "energy.npy", "force.npy", "virial.npy"))
    for i in range(3):
        s = reader.read(i)
        assert s.numbers.tolist() == [8, 8, 1, 1, 1, 1]  # type.raw [0 0 1 1 1 1], type_map [O H]
        assert np.array_equal(s.positions, coord[i].reshape(6, 3))
        assert np.array_equal(s.cell, box[i].reshape(3, 3)) and s.pbc.all()
        assert s.energy == energy[i, 0]
        assert np.array_equal(s.forces, force[i].reshape(6, 3))
        volume = abs(np.linalg.det(box[i].reshape(3, 3)))
        np.testing.assert_allclose(s.stress, -virial[i].reshape(3, 3) / volume, rtol=1e-14)


def test_deepmd_multi_system_nopbc_and_type_map(tmp_path):
    path = tmp_path / "multi.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for name, types, nopbc in (("sys_a", [0, 1, 1], True), ("sys_b", [1, 0], False)):
            g = f.create_group(name)
            g["type.raw"] = np.array(types)
            if nopbc:
                g["nopbc"] = True
            for set_name, frames in (("set.000", 2), ("set.001", 1)):
                s = g.create_group(set_name)
                s["coord.npy"] = rng.random((frames, 3 * len(types)))
                s["box.npy"] = np.tile(np.eye(3).reshape(9) * 5, (frames, 1))
                s["energy.npy"] = rng.random(frames)
                s["force.npy"] = rng.random((frames, 3 * len(types)))
    with pytest.raises(DataFormatError, match="type_map"):
        Hdf5Reader(path)
    reader = Hdf5Reader(path, type_map=["O", "H"])
    assert reader.natoms_array().tolist() == [3, 3, 3, 2, 2, 2]
    a, b = reader.read(2), reader.read(3)
    assert a.numbers.tolist() == [8, 1, 1] and not a.pbc.any() and not a.cell.any()
    assert b.numbers.tolist() == [1, 8] and b.pbc.all() and b.cell[0, 0] == 5.0
    with h5py.File(path) as f:
        assert np.array_equal(a.positions, f["sys_a/set.001/coord.npy"][0].reshape(3, 3))
        assert a.energy == f["sys_a/set.001/energy.npy"][0]
        assert b.stress is None


# -- schnetpack MD log --------------------------------------------------------------------------------
@needs_real
def test_schnetpack_md_log_needs_the_calculator_units():
    path = REAL / "schnetpack" / "test_simulation.hdf5"
    with pytest.raises(DataFormatError, match="energy_unit"):
        Hdf5Reader(path)


@needs_real
def test_schnetpack_md_log():
    path = REAL / "schnetpack" / "test_simulation.hdf5"
    reader = Hdf5Reader(path, energy_unit="kcal/mol", forces_unit="kcal/mol/Angstrom")
    assert reader.layout_name == "schnetpack_md" and len(reader) == 2
    assert reader.natoms_array().tolist() == [16, 16]
    assert "bohr" in reader.units["positions"] and "energy_unit=" in reader.units["energy"]
    with h5py.File(path) as f:
        mol, props = f["molecules"][()], f["properties"][()]
        slices = json.loads(f["properties"].attrs["positions"])
        z = f["molecules"].attrs["atom_types"].reshape(-1)
        dt = float(f["molecules"].attrs["time_step"])  # atomic time units
    assert slices == {"energy": [0, 1], "forces": [1, 49], "dipole_moment": [49, 52]}
    structures = [reader.read(i) for i in range(2)]
    for e, s in enumerate(structures):
        assert np.array_equal(s.numbers, z)
        assert np.array_equal(s.positions, _f64(mol[e, 0, 0, :, :3]) * BOHR)
        assert s.energy == _f64(props[e, 0, 0, 0]) * KCAL_MOL
        assert np.array_equal(s.forces, _f64(props[e, 0, 0, 1:49]).reshape(16, 3) * KCAL_MOL)
    # Physical check of the units chosen: one velocity-Verlet step,
    # x1 - x0 - v0 dt = F0 dt^2 / 2m, with everything in ASE units (v is stored in bohr / a.u. of time).
    aut = units._aut * units.second
    v0 = _f64(mol[0, 0, 0, :, 3:]) * BOHR / aut
    masses = atomic_masses[z][:, None]
    lhs = structures[1].positions - structures[0].positions - v0 * dt * aut
    rhs = structures[0].forces * (dt * aut) ** 2 / (2 * masses)
    ratio = float(np.dot(lhs.ravel(), rhs.ravel()) / np.dot(rhs.ravel(), rhs.ravel()))
    assert 0.7 < ratio < 1.4  # Ha/bohr would give ~1e-3, eV/Å ~0.04


# -- MACE shards ------------------------------------------------------------------------------------------
def _mace_properties(atoms, *, energy=True):
    """The ``properties`` MACE's config_from_atoms builds (None for what the Atoms lack)."""
    periodic = bool(atoms.pbc.all())
    return {
        "energy": atoms.get_potential_energy() if energy else None,
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress() if periodic else None,  # ASE Voigt 6, eV/Å^3
        "virials": None,
        "dipole": None,
        "charges": None,
        "head": "Default",
    }


def write_mace_shard(path, atoms_list, *, unlabeled=(), old_layout=False):
    """A shard as MACE's save_configurations_as_HDF5 lays it out ("None" for absent values)."""
    with h5py.File(path, "w") as f:
        f.attrs["drop_last"] = len(atoms_list) % 2 == 1
        grp = f.create_group("config_batch_0")
        for j, atoms in enumerate(atoms_list):
            sub = grp.create_group(f"config_{j}")
            sub["atomic_numbers"] = atoms.numbers
            sub["positions"] = atoms.positions
            props = _mace_properties(atoms, energy=j not in unlabeled)
            target = sub if old_layout else sub.create_group("properties")
            for key, value in props.items():
                target[key] = value if value is not None else "None"
            sub["cell"] = atoms.cell.array if atoms.pbc.any() else "None"
            sub["pbc"] = tuple(bool(p) for p in atoms.pbc) if atoms.pbc.any() else "None"
            sub["weight"] = 1.0
            weights = sub.create_group("property_weights")
            for key, value in props.items():
                weights[key] = 0.0 if value is None else 1.0
            sub["config_type"] = "Default"


@pytest.fixture(scope="module")
def mace_split(tmp_path_factory):
    atoms = emt_structures(12, seed=5)
    root = tmp_path_factory.mktemp("mace") / "train"
    root.mkdir()
    shards = [atoms[0:5], atoms[5:9], atoms[9:12]]
    for k, part in enumerate(shards):
        write_mace_shard(root / f"train_{k}.h5", part, unlabeled=(1,) if k == 1 else ())
    return root, atoms


def _check_mace(reader, atoms, unlabeled_index=6):
    assert reader.layout_name == "mace"
    assert len(reader) == len(atoms)
    assert reader.natoms_array().tolist() == [len(a) for a in atoms]
    for i, a in enumerate(atoms):
        s = reader.read(i)
        assert np.array_equal(s.positions, a.positions) and s.positions.dtype == np.float64
        assert np.array_equal(s.numbers, a.numbers)
        assert np.array_equal(s.forces, a.get_forces())
        if i == unlabeled_index:
            assert s.energy is None  # "None" in the shard: no energy label
        else:
            assert s.energy == a.get_potential_energy()
        if a.pbc.all():
            assert np.array_equal(s.cell, a.cell.array) and s.pbc.all()
            assert np.array_equal(s.stress, a.get_stress(voigt=False))
        else:
            assert s.stress is None and not s.cell.any() and not s.pbc.any()


def test_mace_shards_directory_glob_and_single_file(mace_split):
    root, atoms = mace_split
    _check_mace(Hdf5Reader(root, layout="mace"), atoms)
    _check_mace(Hdf5Reader(str(root / "train_*.h5")), atoms)
    single = Hdf5Reader(root / "train_0.h5")
    _check_mace(single, atoms[:5], unlabeled_index=-1)
    assert "properties/" not in " ".join(single.label_keys(0))
    assert "energy" in single.label_keys(0)


def test_mace_shards_order_numerically(tmp_path):
    atoms = emt_structures(12, seed=6)
    for k in range(12):  # train_10 and train_11 must come after train_9
        write_mace_shard(tmp_path / f"train_{k}.h5", [atoms[k]])
    reader = Hdf5Reader(tmp_path, layout="mace")
    assert [reader.read(i).energy for i in range(12)] == [a.get_potential_energy() for a in atoms]


def test_mace_old_layout_and_virials(tmp_path):
    atoms = emt_structures(3, seed=7)
    write_mace_shard(tmp_path / "old.h5", atoms, old_layout=True)
    _check_mace(Hdf5Reader(tmp_path / "old.h5"), atoms, unlabeled_index=-1)
    periodic = atoms[0]
    virial = -periodic.get_stress(voigt=False) * periodic.get_volume()
    with h5py.File(tmp_path / "old.h5", "a") as f:
        g = f["config_batch_0/config_0"]
        del g["stress"], g["virials"]  # stress "absent", virials given instead
        g["stress"] = "None"
        g["virials"] = virial
    s = Hdf5Reader(tmp_path / "old.h5").read(0)
    np.testing.assert_allclose(s.stress, periodic.get_stress(voigt=False), rtol=1e-12, atol=1e-14)


def test_mace_configured_key_and_pickle(mace_split):
    import pickle

    root, atoms = mace_split
    with pytest.raises(KeyError, match="forces"):
        Hdf5Reader(root, layout="mace", energy_key="REF_energy")
    reader = Hdf5Reader(root, layout="mace")
    reader.read(0)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.read(11).energy == atoms[11].get_potential_energy()


def test_mace_glob_matching_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        Hdf5Reader(str(tmp_path / "train_*.h5"))


def test_several_files_only_for_mace(tmp_path):
    for k in range(2):
        with h5py.File(tmp_path / f"g{k}.h5", "w") as f:
            g = f.create_group("structures").create_group("0")
            g["positions"] = np.zeros((1, 3))
            g["species"] = np.ones(1, int)
    with pytest.raises(DataFormatError, match="only MACE"):
        Hdf5Reader(str(tmp_path / "g*.h5"))


# -- units ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "unit, quantity, factor",
    [
        ("hartree", "energy", HA),
        ("Ha", "energy", HA),
        ("kcal/mol", "energy", KCAL_MOL),
        ("kilojoule_per_mole", "energy", KJ_MOL),
        ("kJ mol^-1", "energy", KJ_MOL),
        ("eV", "energy", 1.0),
        ("bohr", "positions", BOHR),
        ("nanometer", "positions", 10.0),
        ("angstrom", "positions", 1.0),
        ("hartree/bohr", "forces", HA / BOHR),
        ("kcal/mol/Angstrom", "forces", KCAL_MOL),
        ("kilojoule_per_mole / nanometer", "forces", KJ_MOL / 10.0),
        ("eV/Å^3", "stress", 1.0),
    ],
)
def test_unit_table(unit, quantity, factor):
    assert conversion(unit, quantity).factor == pytest.approx(factor, rel=1e-14)


def test_unit_errors():
    with pytest.raises(UnitError, match="unknown unit"):
        parse_unit("furlong")
    with pytest.raises(UnitError, match="not a unit of forces"):
        conversion("hartree", "forces")


def test_unknown_unit_attribute_names_file_dataset_unit(tmp_path):
    path = tmp_path / "spice_like.hdf5"
    with h5py.File(path, "w") as f:
        g = f.create_group("mol")
        g["atomic_numbers"] = np.array([8, 1, 1], dtype=np.int16)
        g["conformations"] = np.zeros((2, 3, 3), dtype=np.float32)
        g["conformations"].attrs["units"] = "furlong"
        g["dft_total_energy"] = np.zeros(2)
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path)
    msg = str(err.value)
    assert "spice_like.hdf5" in msg and "mol/conformations" in msg and "furlong" in msg


# -- groups without coordinates are never skipped (audit) ------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    dst.chmod(0o644)
    return dst


@needs_real
@pytest.mark.parametrize("extra", [{"atomic_numbers": np.array([6, 1])}, {"dft_total_energy": np.zeros(3)}])
def test_spice_group_without_conformations_is_an_error(tmp_path, extra):
    path = _copy(REAL / "modelforge" / "SPICE-1.1.4_n2.hdf5", tmp_path / "spice.hdf5")
    assert len(Hdf5Reader(path)) == 55
    with h5py.File(path, "a") as f:
        g = f.create_group("zzz_bad")
        for k, v in extra.items():
            g[k] = v
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path)
    msg = str(err.value)
    assert "spice.hdf5" in msg and "'zzz_bad'" in msg and "conformations" in msg and next(iter(extra)) in msg


@needs_real
def test_ani_group_without_coordinates_is_an_error(tmp_path):
    path = _copy(REAL / "modelforge" / "ani2x_minimal.hdf5", tmp_path / "ani2x.hdf5")
    with h5py.File(path, "a") as f:
        f.create_group("004")["species"] = np.array([[1, 1]])
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path)
    msg = str(err.value)
    assert "ani2x.hdf5" in msg and "'004'" in msg and "coordinates" in msg and "species" in msg


@needs_real
def test_empty_groups_hold_nothing_and_are_skipped(tmp_path):
    path = _copy(REAL / "modelforge" / "ani2x_minimal.hdf5", tmp_path / "ani2x.hdf5")
    with h5py.File(path, "a") as f:
        f.create_group("000")  # sorts first: detection must look past it
        f.create_group("003")
        f.create_group("005").create_group("empty")
    reader = Hdf5Reader(path)
    assert reader.layout_name == "ani" and len(reader) == 5706
    original = Hdf5Reader(REAL / "modelforge" / "ani2x_minimal.hdf5")
    assert np.array_equal(reader.read(5705).positions, original.read(5705).positions)


# -- NaN levels of theory: the error says how to read them as missing (audit) --------------------------------
@needs_real
def test_nan_level_of_theory_error_suggests_nan_as_missing():
    from mlff_distiller.data.dataset import MolecularDataset

    path = REAL / "modelforge" / "ani1_n5.hdf5"
    with h5py.File(path) as f:
        assert np.isnan(f["C1H6N2O5"]["ccsd(t)_cbs.energy"][()]).any()  # the file's own marker
    with pytest.raises(DataFormatError) as err:
        ds = MolecularDataset(path, format="hdf5", energy_key="ccsd(t)_cbs.energy")
        [ds[i] for i in range(len(ds))]
    msg = str(err.value)
    assert "ani1_n5.hdf5" in msg and "ccsd(t)_cbs.energy" in msg and "NaN" in msg
    assert msg.endswith(
        ": this layout marks uncomputed levels of theory with NaN; "
        "pass nan_as_missing=True to treat them as missing labels"
    )


def test_nan_hint_only_for_an_entirely_nan_label(tmp_path):
    path = tmp_path / "ani_like.h5"
    forces = np.zeros((2, 2, 3))
    forces[1, 0, 2] = np.nan  # a partly-NaN label is broken data: nan_as_missing would not help
    with h5py.File(path, "w") as f:
        g = f.create_group("mol")
        g["coordinates"] = np.array([[[0, 0, 0], [0, 0, 0.74]], [[0, 0, 0], [0, 0, 0.75]]])
        g["species"] = np.array([1, 1])
        g["energies"] = np.array([np.nan, -1.17])
        g["forces"] = forces
    reader = Hdf5Reader(path)
    assert reader.layout_name == "ani"
    with pytest.raises(DataFormatError, match=r"structure 0, key 'mol/energies'.*pass nan_as_missing=True"):
        reader.read(0)
    with pytest.raises(DataFormatError, match=r"structure 1, key 'mol/forces'.*NaN") as err:
        reader.read(1)
    assert "nan_as_missing" not in str(err.value)
    lenient = Hdf5Reader(path, nan_as_missing=True)
    assert lenient.read(0).energy is None
    with pytest.raises(DataFormatError, match="mol/forces"):
        lenient.read(1)
