"""Impossible values are refused by every reader (issue 12, item 4): one validation
(``readers/checks.py``, by the key registry's checks) for ASE db, extended XYZ, HDF5 and packed
files, with the file, the structure and the key named."""

from __future__ import annotations

import sqlite3

import h5py
import numpy as np
import pytest
from ase.db import connect

from conftest import emt_structures, write_guide_hdf5
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.packed import write_packed
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.readers.packed import PackedReader
from mlff_distiller.data.structure import Structure

BIG = 2**53 + 1  # the first integer a float64 cannot hold


def _db(tmp_path, n=3):
    path = tmp_path / "bad.db"
    with connect(path) as db:
        for atoms in emt_structures(n):
            db.write(atoms)
    return path


# -- ASE db ---------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [0, -1, 200])
def test_ase_db_atomic_numbers(tmp_path, z):
    path = _db(tmp_path)
    con = sqlite3.connect(path)
    n = len(con.execute("SELECT numbers FROM systems WHERE id=2").fetchone()[0]) // 4
    con.execute("UPDATE systems SET numbers = ? WHERE id=2", (np.full(n, z, "<i4").tobytes(),))
    con.commit()
    con.close()
    for fast in (True, False):
        reader = open_reader(path, "ase", fast_sqlite=fast)
        with pytest.raises(DataFormatError, match=rf"bad\.db, structure 1, key 'numbers': atomic number {z} outside"):
            reader.read(1)


def test_ase_db_integer_energy_beyond_2_53(tmp_path):
    """A key-value energy is JSON: 2**53 + 1 stays an integer there and used to be rounded."""
    path = tmp_path / "big.db"
    with connect(path) as db:
        for k, atoms in enumerate(emt_structures(2)):
            db.write(atoms, dft_energy=BIG if k else 1)
    reader = open_reader(path, energy_key="dft_energy")
    assert reader.read(0).energy == 1.0
    with pytest.raises(DataFormatError, match=rf"structure 1, key 'dft_energy': integer energy {BIG} is beyond 2\*\*53"):
        reader.read(1)


def test_ase_db_row_without_atoms(tmp_path):
    path = _db(tmp_path)
    con = sqlite3.connect(path)
    con.execute("UPDATE systems SET numbers = X'', positions = X'', forces = X'' WHERE id=2")
    con.commit()
    con.close()
    with pytest.raises(DataFormatError, match=r"bad\.db, structure 1: structure has no atoms"):
        open_reader(path).read(1)


# -- extended XYZ ---------------------------------------------------------------------------


def test_xyz_frame_without_atoms_and_huge_integer_energy(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text(f"1\nenergy=1.0\nH 0 0 0\n0\nenergy=2.0\n1\nenergy={BIG}\nH 0 0 0\n")
    reader = open_reader(path)
    reader.read(0)
    with pytest.raises(DataFormatError, match=r"bad\.xyz, structure 1: structure has no atoms"):
        reader.read(1)
    with pytest.raises(DataFormatError, match=r"bad\.xyz, structure 2, key 'energy': integer energy .* beyond 2\*\*53"):
        reader.read(2)


# -- HDF5 guide layout ----------------------------------------------------------------------


def test_hdf5_structure_without_atoms_and_integer_energy(tmp_path):
    path = tmp_path / "bad.h5"
    write_guide_hdf5(path, emt_structures(3))
    with h5py.File(path, "a") as f:
        for name in ("positions", "forces"):
            del f[f"structures/1/{name}"]
            f[f"structures/1/{name}"] = np.zeros((0, 3))
        del f["structures/1/species"]
        f["structures/1/species"] = np.zeros(0, dtype=np.int64)
        del f["structures/2/energy"]
        f["structures/2/energy"] = np.int64(BIG)
    reader = open_reader(path, "hdf5")
    with pytest.raises(DataFormatError, match=r"bad\.h5, structure 1: structure has no atoms"):
        reader.read(1)
    with pytest.raises(DataFormatError, match=r"structure 2, key 'structures/2/energy': integer energy"):
        reader.read(2)


# -- packed ---------------------------------------------------------------------------------


@pytest.fixture
def packed(tmp_path):
    structures = []
    for k, a in enumerate(emt_structures(4)):
        structures.append(Structure(
            positions=a.positions, numbers=a.numbers.astype(np.int64), cell=a.cell.array, pbc=a.pbc,
            energy=np.float64(a.get_potential_energy()), forces=a.get_forces(),
            extras={"config_type": f"type{k % 2}"},
        ))
    path = tmp_path / "bad.h5"
    write_packed(path, structures, cutoff=3.0)
    return path


def _offsets(path):
    with h5py.File(path, "r") as f:
        return f["offsets"][()], f["edge_offsets"][()]


@pytest.mark.parametrize(
    "dataset,change,key,message",
    [
        ("positions", lambda a, atoms, edges: a.__setitem__((atoms[2] + 1, 0), np.nan), "positions", "NaN/inf"),
        ("energy", lambda a, atoms, edges: a.__setitem__(2, np.nan), "energy", "NaN/inf"),
        ("numbers", lambda a, atoms, edges: a.__setitem__(atoms[2], 0), "species", "atomic number 0 outside"),
        ("numbers", lambda a, atoms, edges: a.__setitem__(atoms[2], -3), "species", "atomic number -3 outside"),
        ("edge_index", lambda a, atoms, edges: a.__setitem__((1, edges[2] + 3), -7), "edge_index",
         "atom index -7 outside"),
        ("edge_index", lambda a, atoms, edges: a.__setitem__((0, edges[2]), 10**6), "edge_index",
         "atom index 1000000 outside"),
    ],
)
def test_packed_reader_refuses_impossible_values(packed, dataset, change, key, message):
    """The packed reader used to accept NaN positions, a NaN energy flagged present, atomic
    numbers <= 0, and an edge_index of -7 (which silently picks another atom)."""
    atoms, edges = _offsets(packed)
    with h5py.File(packed, "r+") as f:
        values = f[dataset][()]
        change(values, atoms, edges)
        f[dataset][...] = values
    reader = PackedReader(packed)
    reader.read(0)
    with pytest.raises(DataFormatError, match=rf"bad\.h5, structure 2, key '{key}': .*{message}"):
        reader.read(2)
    with pytest.raises(DataFormatError, match=rf"structure 2, key '{key}'"):
        reader.read_batch([0, 1, 2, 3])


def test_packed_string_code_outside_its_table(packed):
    with h5py.File(packed, "r+") as f:
        codes = f["config_type"][()]
        codes[1] = -2  # would pick the last string of the table
        f["config_type"][...] = codes
    with pytest.raises(DataFormatError, match=r"bad\.h5, structure 1, key 'config_type': string code -2"):
        PackedReader(packed).read(0)


def test_packed_huge_declared_shape_without_storage(packed):
    """A forged packed file declaring 10**12 atoms in a few kB: refused, not allocated."""
    huge = 10**12
    with h5py.File(packed, "r+") as f:
        offsets = f["offsets"][()]
        offsets[-1] = huge
        f["offsets"][...] = offsets
        for name in ("positions", "numbers", "forces"):
            dtype, row = f[name].dtype, f[name].shape[1:]
            del f[name]
            f.create_dataset(name, shape=(huge,) + row, dtype=dtype)  # no data: no storage
    with pytest.raises(DataFormatError, match=r"bad\.h5, key '(positions|numbers|forces)': declares shape \(1000000000000"):
        PackedReader(packed).read(0)


@pytest.mark.parametrize("attribute,value", [("cutoff", "abc"), ("cutoff", "-1"), ("keys", "{bad"), ("units", "{bad"),
                                             ("metadata", "[not json"), ("format_version", "x")])
def test_packed_bad_attributes(packed, attribute, value):
    """Bad packed attributes used to raise JSONDecodeError/TypeError/ValueError without the file."""
    with h5py.File(packed, "r+") as f:
        f.attrs[attribute] = value
    with pytest.raises(DataFormatError, match=rf"bad\.h5, key '{attribute}': "):
        PackedReader(packed)
