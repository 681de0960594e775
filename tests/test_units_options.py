"""Unit options for every format (``energy_unit``/``forces_unit``/``stress_unit``/``length_unit``):
values equal independent readings (ASE, h5py, the file's text) times the documented factors
(``ase.units``), the options override what a file declares, they are recorded on ``dataset.units``,
and a label whose unit cannot be told, or a misspelt option, is an error naming the option."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from ase import units
from ase.db import connect
from ase.io import read

from conftest import emt_structures, realdata_dir
from mlff_distiller.data.dataset import MolecularDataset
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.units import LabelUnits, UnitError, convert_to, is_identity
from mlff_distiller.data.writers import write_structures

REALDATA = realdata_dir()
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not present")
KCAL_MOL = units.kcal / units.mol


def _snip_text(path):
    """(energy, forces [9, 3]) of each frame of the plain-XYZ ethanol snippet, parsed from its text."""
    lines = path.read_text().splitlines()
    frames = []
    while lines:
        n = int(lines[0])
        rows = np.array([[float(x) for x in line.split()[4:7]] for line in lines[2 : 2 + n]])
        frames.append((float(lines[1]), rows))
        lines = lines[2 + n :]
    return frames


@needs_realdata
def test_xyz_energy_and_forces_units_against_the_text():
    path = REALDATA / "schnetpack/ethanol_snip.xyz"
    reader = open_reader(path, energy_unit="kcal/mol", forces_unit="kcal/mol/Å")
    for s, (energy, forces) in zip(reader.read_many(range(len(reader))), _snip_text(path)):
        assert s.energy == energy * KCAL_MOL
        np.testing.assert_array_equal(s.forces, forces * KCAL_MOL)
    assert "kcal/mol -> eV" in reader.units["energy"] and "[energy_unit=]" in reader.units["energy"]


@needs_realdata
def test_energy_unit_alone_is_an_error_when_forces_are_present():
    with pytest.raises(DataFormatError, match="forces_unit"):
        open_reader(REALDATA / "schnetpack/ethanol_snip.xyz", energy_unit="kcal/mol")


@needs_realdata
def test_options_override_the_units_an_xyz_file_declares():
    """dpdata's file says hartree and hartree/bohr; the options say eV and eV/Å: the raw values."""
    path = REALDATA / "dpdata/virial_hartree.xyz"
    declared = open_reader(path).read(0)
    raw = read(path, format="extxyz")
    assert declared.energy == -1.0 * units.Hartree
    s = open_reader(path, energy_unit="eV", forces_unit="eV/Å").read(0)
    assert s.energy == raw.calc.results["energy"]
    np.testing.assert_array_equal(s.forces, raw.arrays["force"])
    np.testing.assert_array_equal(s.stress, -raw.info["virial"] / raw.get_volume())  # a virial: energy unit


@needs_realdata
def test_length_unit_scales_positions_and_cell():
    path = REALDATA / "metatrain/qm9_reduced_100.xyz"
    atoms = read(path, ":3")
    reader = open_reader(path, energy_key="U0", energy_unit="Ha", length_unit="nm")
    for s, a in zip(reader.read_many(range(3)), atoms):
        np.testing.assert_array_equal(s.positions, a.positions * units.nm)
        assert s.energy == a.info["U0"] * units.Hartree
    assert "nm -> Å" in reader.units["positions"]


@needs_realdata
def test_ase_db_options_override_metadata_and_apply_to_calculator_results():
    qm9 = REALDATA / "schnetpack/test_qm9.db"
    rows = list(connect(qm9).select())
    raw = open_reader(qm9, energy_key="energy_U0", energy_unit="eV").read_many(range(len(rows)))
    assert [s.energy for s in raw] == [float(r.data["energy_U0"][0]) for r in rows]  # metadata 'Ha' overridden
    oxides = REALDATA / "fairchem/oxides.db"
    reader = open_reader(oxides, energy_unit="kcal/mol", forces_unit="kcal/mol/Å")
    for i, row in zip(range(5), connect(oxides).select()):
        s = reader.read(i)
        assert s.energy == row.energy * KCAL_MOL
        np.testing.assert_array_equal(s.forces, row.forces * KCAL_MOL)
    with pytest.raises(DataFormatError, match="forces_unit"):
        open_reader(oxides, length_unit="bohr").read(0)


@needs_realdata
def test_hdf5_options_override_unit_attributes():
    path = REALDATA / "modelforge/SPICE-1.1.4_n2.hdf5"
    with h5py.File(path) as f:
        grp = f["103147721"]
        energy, gradient = grp["dft_total_energy"][()], grp["dft_total_gradient"][()]
        positions = grp["conformations"][()]
    dataset = MolecularDataset(path, energy_unit="kcal/mol", length_unit="angstrom")
    s = dataset.get_structure(3)
    assert s.energy == energy[3] * KCAL_MOL  # the attribute says hartree; the option wins
    np.testing.assert_array_equal(s.positions, positions[3])  # bohr attribute overridden: stored values
    np.testing.assert_array_equal(s.forces, -gradient[3].astype(np.float64) * (units.Hartree / units.Bohr))
    assert "[energy_unit=]" in dataset.units["energy"] and "[length_unit=]" in dataset.units["positions"]


def test_hdf5_guide_layout_options(tmp_path):
    path = tmp_path / "emt.h5"
    structures = [Structure(a.positions, a.numbers, a.cell.array, a.pbc, np.asarray(a.get_potential_energy()),
                            a.get_forces()) for a in emt_structures(4)]
    write_structures(path, structures, "hdf5")
    got = open_reader(path, energy_unit="kJ/mol", forces_unit="kJ/mol/Å").read(1)
    assert got.energy == structures[1].energy * (units.kJ / units.mol)
    with pytest.raises(DataFormatError, match="forces_unit"):
        open_reader(path, energy_unit="kJ/mol").read(1)


def test_unit_parsing_and_factors():
    assert convert_to("elementary_charge*bohr", "e*Å") == units.Bohr
    assert convert_to("D", "e*Å") == units.Debye
    assert convert_to("elementary_charge * nanometer", "e*Å") == 10.0
    assert convert_to(1.0, "e") == 1.0  # SchNetPack writes 1.0 for 'no conversion'
    with pytest.raises(UnitError, match="not a unit of e"):
        convert_to("bohr", "e")
    assert LabelUnits.from_options(stress_unit="GPa").stress.factor == units.GPa
    with pytest.raises(UnitError, match="energy_unit='furlong'"):
        LabelUnits.from_options(energy_unit="furlong")
    assert is_identity("coordinates: angstrom -> Å (x1) [ANI convention]")
    assert is_identity("Å (DeePMD convention, no conversion)")
    assert not is_identity("hartree -> eV (x27.2113860244); bohr -> Å (x1)")


@needs_realdata
@pytest.mark.parametrize("name, bad, suggestion", [
    ("nequip/aspirin.xyz", "energy_units", "energy_unit"),
    ("fairchem/oxides.db", "selct", "select"),
    ("modelforge/ani2x_minimal.hdf5", "nan_as_misssing", "nan_as_missing"),
])
def test_a_misspelt_option_lists_the_options_of_the_format(name, bad, suggestion):
    with pytest.raises(TypeError, match=suggestion) as info:
        MolecularDataset(REALDATA / name, **{bad: "x"})
    assert bad in str(info.value) and "energy_unit" in str(info.value)


def test_format_is_guessed_and_unknown_suffixes_are_ase_databases(tmp_path):
    structures = [Structure(a.positions, a.numbers, a.cell.array, a.pbc, np.asarray(a.get_potential_energy()),
                            a.get_forces()) for a in emt_structures(3)]
    write_structures(tmp_path / "a.xyz", structures)
    write_structures(tmp_path / "b.db", structures)
    (tmp_path / "b.db").rename(tmp_path / "b.asedata")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert MolecularDataset(tmp_path / "a.xyz").format == "xyz"
        assert MolecularDataset(tmp_path / "b.asedata").format == "ase"
