"""Label conventions on the real files whose labels the plain default keys miss (the 10 files of
issue 13, found with ``mlff-distiller stats`` on every file of ../shared/realdata): MACE's
``REF_*`` keys are found by default; for the others constructing the dataset warns, naming the
candidate keys, and the right options read the labels exactly as ASE (or the raw database) holds
them, in the right unit."""

from __future__ import annotations

import base64
import warnings

import numpy as np
import pytest
from ase import units
from ase.db import connect
from ase.io import read
from ase.stress import voigt_6_to_full_3x3_stress

from conftest import realdata_dir
from mlff_distiller.data.dataset import MolecularDataset
from mlff_distiller.data.labels import LabelWarning, inspect_labels, label_candidates
from mlff_distiller.data.readers import open_reader

REALDATA = realdata_dir()
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not present")


def _stress(value):
    value = np.asarray(value, dtype=np.float64)
    if value.size == 6:
        return voigt_6_to_full_3x3_stress(value)
    return value.reshape(3, 3, order="F") if value.ndim == 1 else value


def _xyz_reference(path, energy, forces, stress=None, factor=1.0):
    """(energy, forces, stress) per frame as ASE reads them (info / arrays), times ``factor``."""
    out = []
    for atoms in read(path, ":", format="extxyz"):
        e = atoms.info.get(energy)
        f = atoms.arrays.get(forces)
        s = atoms.info.get(stress) if stress else None
        out.append((None if e is None else e * factor, f, None if s is None else _stress(s)))
    return out


def _db_reference(path, energy, forces=None, factor=1.0):
    """(energy, forces, None) per row from the raw key-value pairs / row.data (SchNetPack 0.x
    base64 buffers decoded here with numpy)."""
    out = []
    for row in connect(path).select():
        sources = {**row.key_value_pairs, **row.data}
        e = sources[energy]
        if isinstance(e, str):  # base64 float64 buffer
            e = np.frombuffer(base64.b64decode(e), dtype=sources[f"_dtype_{energy}"])
        out.append((float(np.asarray(e).reshape(-1)[0]) * factor, None if forces is None else sources[forces], None))
    return out


#: file -> (options that read its labels, the reference reading, the candidate the warning must name)
CASES = {
    "janus-core/mlip_train.xyz": (
        dict(energy_key="dft_energy", forces_key="dft_forces", stress_key="dft_stress"),
        lambda p: _xyz_reference(p, "dft_energy", "dft_forces", "dft_stress"), "dft_energy"),
    "metatrain/qm9_reduced_100.xyz": (
        dict(energy_key="U0", energy_unit="hartree"),
        lambda p: _xyz_reference(p, "U0", None, factor=units.Hartree), "U0"),
    "schnetpack/qm9.db": (dict(energy_key="energy_U0"), lambda p: _db_reference(p, "energy_U0"), "energy_U0"),
    "schnetpack/test_iso.db": (
        dict(energy_key="total_energy", forces_key="atomic_forces"),
        lambda p: _db_reference(p, "total_energy", "atomic_forces"), "total_energy"),
    "schnetpack/test_qm9.db": (  # the database's metadata says Ha
        dict(energy_key="energy_U0"), lambda p: _db_reference(p, "energy_U0", factor=units.Hartree), "energy_U0"),
    "workflow/EMT_atoms.xyz": (
        dict(energy_key="DFT_energy", forces_key="DFT_forces", stress_key="DFT_stress"),
        lambda p: _xyz_reference(p, "DFT_energy", "DFT_forces", "DFT_stress"), "DFT_energy"),
    "workflow/configs_for_error_test.xyz": (
        dict(energy_key="dft_energy", forces_key="dft_forces"),
        lambda p: _xyz_reference(p, "dft_energy", "dft_forces"), "dft_energy"),
    "workflow/simple_gap_training_set.xyz": (
        dict(energy_key="dft_energy", forces_key="dft_forces"),
        lambda p: _xyz_reference(p, "dft_energy", "dft_forces"), "dft_energy"),
}
#: MACE's convention: found with the default keys
MACE_FILES = {
    "workflow/B_DFT_data.xyz": lambda p: _xyz_reference(p, "REF_energy", "REF_forces", "REF_stress"),
    "metatrain/pbesol_Au_alloys_MAD_compatible_100.xyz": lambda p: _xyz_reference(p, "REF_energy", "REF_forces",
                                                                                  "REF_stress"),
}


def _assert_labels(structures, reference, name):
    assert len(structures) == len(reference), name
    labeled = 0
    for i, (s, (e, f, st)) in enumerate(zip(structures, reference)):
        for label, got, want in (("energy", s.energy, e), ("forces", s.forces, f), ("stress", s.stress, st)):
            if want is None:
                assert got is None, (name, i, label)
            else:
                assert got is not None, (name, i, label)
                np.testing.assert_array_equal(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                                              err_msg=f"{name} structure {i} {label}")
        labeled += s.energy is not None
    assert labeled, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_other_keys_warn_by_default_and_read_exactly_with_options(name):
    path = REALDATA / name
    options, reference, candidate = CASES[name]
    with pytest.warns(LabelWarning) as caught:
        default = MolecularDataset(path)
    text = str(caught[0].message)
    assert str(path) in text and candidate in text and "energy_key" in text
    assert default.label_keys.get("energy") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)  # the right options: no warning
        dataset = MolecularDataset(path, **options)
    assert dataset.label_keys["energy"] == options["energy_key"]
    _assert_labels(dataset.get_structures(range(len(dataset))), reference(path), name)
    if "energy_unit" in options:
        assert "energy" in dataset.units and "x27.211386" in dataset.units["energy"]


@pytest.mark.parametrize("name", sorted(MACE_FILES))
def test_mace_ref_keys_are_found_by_default(name):
    path = REALDATA / name
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)
        dataset = MolecularDataset(path)
    assert dataset.label_keys["energy"] == "REF_energy" and dataset.label_keys["forces"] == "REF_forces"
    structures = dataset.get_structures(range(len(dataset)))
    _assert_labels(structures, MACE_FILES[name](path), name)
    explicit = open_reader(path, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress")
    for a, b in zip(structures, explicit.read_many(range(len(explicit)))):
        assert (a.energy is None and b.energy is None) or a.energy == b.energy


def test_plain_keys_win_over_ref_keys(tmp_path):
    """A file with both 'energy' and 'REF_energy' is read from 'energy' (REF_* only as a fallback)."""
    path = tmp_path / "both.xyz"
    path.write_text('1\nProperties=species:S:1:pos:R:3 energy=-1.5 REF_energy=-2.5 pbc="F F F"\nH 0 0 0\n')
    assert open_reader(path).read(0).energy == -1.5


def test_unlabeled_files_do_not_warn():
    """No candidates, no warning: an unlabeled file is simply unlabeled (validate reports it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)
        dataset = MolecularDataset(REALDATA / "schnetpack/md_ethanol_batch.xyz")
    assert dataset.label_report.unlabeled and not dataset.label_report.candidates


def test_candidates_are_label_like_keys_only():
    keys = ["dft_energy", "energies", "config_energy_weight", "U0", "energy_U0", "total_energy", "DFT_forces",
            "dft_total_gradient", "REF_stress", "dft_virial", "MD_time_fs", "smiles", "energy-unit"]
    assert label_candidates("energy", keys) == ["dft_energy", "U0", "energy_U0", "total_energy"]
    assert label_candidates("forces", keys) == ["DFT_forces", "dft_total_gradient"]
    assert label_candidates("stress", keys, exclude=("REF_stress",)) == ["dft_virial"]


def test_report_over_a_whole_scan_names_every_structure():
    reader = open_reader(REALDATA / "workflow/simple_gap_training_set.xyz")
    report = inspect_labels(reader, found={"energy": 0, "forces": 0, "stress": 0}, warn=False)
    assert report.candidates == {"energy": ["dft_energy", "normal_mode_energy"], "forces": ["dft_forces"]}
    assert "any of its 19 structures" in report.message()
