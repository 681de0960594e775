"""Hdf5Reader on the guide's layout (issue 2) and its generic behaviour (detection, errors, pickling).

Reference values come from the ASE Atoms (EMT labels, float64) that were written with the
guide's own snippet, or from raw h5py reads of the same file.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from conftest import emt_structures, write_guide_hdf5
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.readers.hdf5 import Hdf5Reader


@pytest.fixture(scope="module")
def atoms13():
    """13 structures, so that groups '10', '11', '12' must come after '9'."""
    return emt_structures(13, seed=3)


@pytest.fixture(scope="module")
def guide_file(tmp_path_factory, atoms13):
    path = tmp_path_factory.mktemp("guide") / "structures.h5"
    write_guide_hdf5(path, atoms13)
    return path


def _assert_same(structure, atoms):
    """Bit-for-bit equality with the Atoms written by the guide's snippet."""
    assert structure.positions.dtype == np.float64
    assert np.array_equal(structure.positions, atoms.positions)
    assert np.array_equal(structure.numbers, atoms.numbers) and structure.numbers.dtype == np.int64
    assert np.array_equal(structure.cell, atoms.cell.array)
    assert np.array_equal(structure.pbc, atoms.pbc)
    assert structure.energy.dtype == np.float64
    assert structure.energy == atoms.get_potential_energy()
    assert np.array_equal(structure.forces, atoms.get_forces())


def test_guide_layout_bit_identical_and_integer_order(guide_file, atoms13):
    with h5py.File(guide_file) as f:  # h5py lists names alphabetically: '10' before '2'
        assert list(f["structures"])[:3] == ["0", "1", "10"]
    reader = Hdf5Reader(guide_file)
    assert reader.layout_name == "guide"
    assert len(reader) == 13
    natoms = reader.natoms_array()
    assert natoms.dtype == np.int64
    assert natoms.tolist() == [len(a) for a in atoms13]
    for i, atoms in enumerate(atoms13):
        _assert_same(reader.read(i), atoms)
    assert [s.natoms for s in reader.read_many([12, 9, 10])] == [len(atoms13[k]) for k in (12, 9, 10)]
    assert reader.units == {}  # the guide's layout is in ASE units: nothing converted


def test_guide_layout_through_open_reader_and_negative_index(guide_file, atoms13):
    reader = open_reader(guide_file)  # suffix .h5 -> hdf5
    assert isinstance(reader, Hdf5Reader)
    _assert_same(reader.read(-1), atoms13[-1])
    with pytest.raises(IndexError, match="13"):
        reader.read(13)
    with pytest.raises(IndexError):
        reader.read_many([0, 99])


def test_guide_layout_as_molecular_dataset(guide_file, atoms13):
    from mlff_distiller.data import MolecularDataset

    ds = MolecularDataset(str(guide_file), format="hdf5", dtype=__import__("torch").float64)
    sample = ds[10]
    assert float(sample["energy"]) == atoms13[10].get_potential_energy()
    assert np.array_equal(sample["forces"].numpy(), atoms13[10].get_forces())


def test_float32_and_big_endian_are_kept_exactly(tmp_path, atoms13):
    path = tmp_path / "f32.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("structures").create_group("0")
        g["positions"] = atoms13[0].positions.astype(np.float32)
        g["species"] = atoms13[0].numbers
        g["energy"] = np.array(1.5, dtype=">f8")
        g["forces"] = atoms13[0].get_forces().astype(">f8")
    s = Hdf5Reader(path).read(0)
    assert s.positions.dtype == np.float32
    assert np.array_equal(s.positions, atoms13[0].positions.astype(np.float32))
    assert s.forces.dtype == np.float64 and s.forces.dtype.isnative
    assert np.array_equal(s.forces, atoms13[0].get_forces())
    assert s.energy == 1.5
    assert not s.pbc.any() and not s.cell.any()  # no cell/pbc datasets: a molecule


def test_unlabeled_and_partially_labeled_groups(tmp_path, atoms13):
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as f:
        root = f.create_group("structures")
        for i, atoms in enumerate(atoms13[:3]):
            g = root.create_group(str(i))
            g["positions"] = atoms.positions
            g["species"] = atoms.numbers
            g["cell"] = atoms.cell.array
            g["pbc"] = atoms.pbc
            if i == 1:
                g["energy"] = atoms.get_potential_energy()  # energy only
            if i == 2:
                g["energy"] = atoms.get_potential_energy()
                g["forces"] = atoms.get_forces()
    reader = Hdf5Reader(path)
    s0, s1, s2 = (reader.read(i) for i in range(3))
    assert s0.energy is None and s0.forces is None and s0.stress is None
    assert s1.energy == atoms13[1].get_potential_energy() and s1.forces is None
    _assert_same(s2, atoms13[2])
    assert reader.label_keys(2) == ["energy", "forces"]


@pytest.mark.parametrize("form", ["3x3", "9", "voigt6", "virial"])
def test_stress_variants(tmp_path, form):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    atoms.cell[0, 1] = 0.2
    atoms.calc = EMT()
    full = atoms.get_stress(voigt=False)
    voigt = atoms.get_stress()
    key, value = {
        "3x3": ("stress", full),
        "9": ("stress", full.reshape(9)),
        "voigt6": ("stress", voigt),
        "virial": ("virial", -full * atoms.get_volume()),
    }[form]
    path = tmp_path / f"stress_{form}.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("structures").create_group("0")
        g["positions"] = atoms.positions
        g["species"] = atoms.numbers
        g["cell"] = atoms.cell.array
        g["pbc"] = atoms.pbc
        g["energy"] = atoms.get_potential_energy()
        g["forces"] = atoms.get_forces()
        g[key] = value
    s = Hdf5Reader(path).read(0)
    assert s.stress.shape == (3, 3)
    if form == "virial":
        np.testing.assert_allclose(s.stress, full, rtol=1e-12, atol=1e-15)
    else:
        assert np.array_equal(s.stress, full)


def test_configured_keys(tmp_path, atoms13):
    path = tmp_path / "keys.h5"
    with h5py.File(path, "w") as f:
        root = f.create_group("structures")
        for i, atoms in enumerate(atoms13[:2]):
            g = root.create_group(str(i))
            g["positions"] = atoms.positions
            g["species"] = atoms.numbers
            g["dft_energy"] = atoms.get_potential_energy()
            g["dft_forces"] = atoms.get_forces()
    reader = Hdf5Reader(path, energy_key="dft_energy", forces_key="dft_forces")
    s = reader.read(1)
    assert s.energy == atoms13[1].get_potential_energy()
    assert np.array_equal(s.forces, atoms13[1].get_forces())
    assert Hdf5Reader(path).read(1).energy is None  # default keys: the structures are unlabeled
    with pytest.raises(KeyError, match="dft_energy"):  # the message lists the keys the file has
        Hdf5Reader(path, energy_key="REF_energy")


def test_pickle_round_trip(guide_file, atoms13):
    reader = Hdf5Reader(guide_file)
    reader.read(0)  # open the handle first: it must not travel
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._handle is None
    _assert_same(clone.read(11), atoms13[11])
    assert np.array_equal(clone.natoms_array(), reader.natoms_array())


# -- bad input ---------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        Hdf5Reader(path)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("this is not HDF5\n")
    with pytest.raises(DataFormatError, match="text.h5"):
        Hdf5Reader(path)


def test_unknown_layout_lists_what_it_found(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f.create_group("trajectory")["frames"] = np.zeros((2, 3))
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path)
    msg = str(err.value)
    assert "odd.h5" in msg and "/trajectory/frames" in msg
    for layout in ("guide", "ani", "spice", "modelforge", "schnetpack_md", "deepmd", "mace", "packed"):
        assert layout in msg
    with pytest.raises(ValueError, match="supported layouts"):
        Hdf5Reader(path, layout="nonsense")


def test_forced_layout_and_unknown_option(guide_file):
    assert Hdf5Reader(guide_file, layout="guide").layout_name == "guide"
    with pytest.raises(TypeError, match="type_map"):
        Hdf5Reader(guide_file, type_map=["Cu"])


def _one_group_file(path, **datasets):
    with h5py.File(path, "w") as f:
        g = f.create_group("structures").create_group("0")
        for k, v in datasets.items():
            g[k] = v
    return path


def test_bad_forces_shape_names_file_index_key(tmp_path):
    path = _one_group_file(
        tmp_path / "badf.h5", positions=np.zeros((4, 3)), species=np.ones(4, int), energy=1.0, forces=np.zeros((3, 3))
    )
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path).read(0)
    msg = str(err.value)
    assert "badf.h5" in msg and "structure 0" in msg and "forces" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_labels_name_file_index_key(tmp_path, bad):
    path = _one_group_file(tmp_path / "nan.h5", positions=np.zeros((2, 3)), species=np.ones(2, int), energy=bad)
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path).read(0)
    assert "nan.h5" in str(err.value) and "structure 0" in str(err.value) and "energy" in str(err.value)


def test_missing_positions_fails_at_construction(tmp_path):
    path = _one_group_file(tmp_path / "nopos.h5", species=np.ones(2, int), energy=1.0)
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path)
    assert "nopos.h5" in str(err.value) and "structure 0" in str(err.value) and "positions" in str(err.value)


def test_packed_files_are_handed_to_packed_reader(tmp_path, atoms13):
    packed = pytest.importorskip("mlff_distiller.data.packed")
    from mlff_distiller.data.readers.packed import PackedReader
    from mlff_distiller.data.structure import Structure

    structures = [
        Structure(
            positions=a.positions,
            numbers=a.numbers.astype(np.int64),
            cell=a.cell.array,
            pbc=a.pbc,
            energy=np.array(a.get_potential_energy()),
            forces=a.get_forces(),
        )
        for a in atoms13[:4]
    ]
    path = tmp_path / "packed.h5"
    packed.write_packed(path, structures)
    reader = Hdf5Reader(path)
    assert reader.layout_name == "packed"
    assert isinstance(reader._delegate, PackedReader)
    assert len(reader) == 4
    assert reader.natoms_array().tolist() == [len(a) for a in atoms13[:4]]
    _assert_same(reader.read(3), atoms13[3])
    assert callable(reader.read_batch)  # the packed fast path stays reachable
    _assert_same(pickle.loads(pickle.dumps(reader)).read(2), atoms13[2])


# -- forced layouts must match the file (audit: forcing a layout gave an empty dataset) ------------------
FORCEABLE = ["guide", "mace", "schnetpack_md", "deepmd", "spice", "modelforge", "ani", "ani1", "ani2x", "dpdata"]


def _foreign_file(path):
    """A layout no reader knows: /frames/0/{xyz, Z} and /meta."""
    with h5py.File(path, "w") as f:
        g = f.create_group("frames").create_group("0")
        g["xyz"] = np.zeros((1, 3))
        g["Z"] = np.ones(1, dtype=np.int64)
        f["meta"] = np.zeros(1, dtype=np.int64)
    return path


@pytest.mark.parametrize("layout", FORCEABLE)
def test_forced_layout_on_a_foreign_file_is_refused(tmp_path, layout):
    from mlff_distiller.data.readers.hdf5.layouts import normalize_layout, supported_layouts

    path = _foreign_file(tmp_path / "unk.h5")
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path, layout=layout)
    msg = str(err.value)
    assert "unk.h5" in msg
    assert f"does not look like layout {normalize_layout(layout)!r}" in msg
    assert "/frames/0/xyz" in msg and "/frames/0/Z" in msg and "/meta" in msg  # what was found
    for name in supported_layouts():
        assert name in msg


def test_forced_packed_layout_on_a_foreign_file_is_refused(tmp_path):
    path = _foreign_file(tmp_path / "unk.h5")
    with pytest.raises(DataFormatError, match=r"unk\.h5.*not a packed file"):
        Hdf5Reader(path, layout="packed")


def test_forced_layout_through_molecular_dataset(tmp_path):
    from mlff_distiller.data.dataset import MolecularDataset

    path = _foreign_file(tmp_path / "unk.h5")
    for layout in ("spice", "guide"):
        with pytest.raises(DataFormatError, match=rf"unk\.h5: file does not look like layout '{layout}'"):
            MolecularDataset(path, format="hdf5", layout=layout)


def test_forced_layout_names_the_layout_the_file_has(guide_file):
    with pytest.raises(DataFormatError, match="looks like layout 'guide'"):
        Hdf5Reader(guide_file, layout="ani")
    with pytest.raises(DataFormatError, match="looks like layout 'guide'"):
        Hdf5Reader(guide_file, layout="modelforge")  # structures/0/positions is [N, 3], not [C, N, 3]


# -- species / positions mismatch names species (audit) ---------------------------------------------------
def test_species_shorter_than_positions_blames_species(tmp_path):
    path = _one_group_file(tmp_path / "short.h5", positions=np.zeros((1, 3)), species=np.zeros(0, np.int64), energy=1.0)
    with pytest.raises(DataFormatError) as err:
        Hdf5Reader(path).read(0)
    msg = str(err.value)
    assert "short.h5, structure 0, key 'structures/0/species'" in msg
    assert "(0,)" in msg and "(1, 3)" in msg and "structures/0/positions" in msg


def test_nan_error_of_the_guide_layout_has_no_nan_as_missing_hint(tmp_path):
    path = _one_group_file(tmp_path / "nan.h5", positions=np.zeros((2, 3)), species=np.ones(2, int), energy=np.nan)
    with pytest.raises(DataFormatError, match="NaN") as err:
        Hdf5Reader(path).read(0)
    assert "nan_as_missing" not in str(err.value)
