"""AseDbReader against what ASE itself reads: written dbs, every real db, bad input, pickling, fork.

Reference values always come from ASE's own API (``row.toatoms()``, ``row.energy``,
``row.key_value_pairs``, ``row.data``) or an EMT calculator; float64 arrays must match bit for bit.
"""

from __future__ import annotations

import base64
import multiprocessing as mp
import os
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect
from ase.stress import voigt_6_to_full_3x3_stress

from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.readers.ase_db import AseDbReader, mask_password

PATHS = [pytest.param(True, id="sqlite-fast"), pytest.param(False, id="ase-generic")]


def realdata_dir() -> Path:
    env = os.environ.get("MLFF_REALDATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def same_bits(a, b) -> None:
    """Equal dtype, shape and bytes (float64 bit for bit, NaN-safe)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.tobytes() == b.tobytes()


def assert_geometry_is_ase(structure, atoms: Atoms) -> None:
    same_bits(structure.positions, atoms.positions)
    same_bits(structure.numbers, atoms.numbers.astype(np.int64))
    same_bits(structure.cell, atoms.cell.array)
    same_bits(structure.pbc, atoms.pbc)


def assert_same_structure(a, b) -> None:
    for name in ("positions", "numbers", "cell", "pbc", "energy", "forces", "stress"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            same_bits(x, y)


def ase_rows(path) -> list:
    return sorted(connect(path).select(), key=lambda row: row.id)


def small_atoms(n: int, seed: int = 0, periodic: bool = True) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = Atoms(
        numbers=rng.choice([1, 6, 8, 29], size=n),
        positions=rng.random((n, 3)) * 4.0,
        cell=np.diag([4.0, 4.5, 5.0]) + 0.1 * rng.random((3, 3)) if periodic else None,
        pbc=(True, True, False) if periodic else False,  # mixed pbc catches a swapped bit order
    )
    return atoms


# ---------------------------------------------------------------------------------------
# Labels written by ASE in the ways users write them
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emt_db(tmp_path_factory, emt_atoms):
    path = tmp_path_factory.mktemp("emt") / "emt.db"
    with connect(path) as db:
        for atoms in emt_atoms:
            db.write(atoms)
    return path


@pytest.mark.parametrize("fast", PATHS)
def test_calculator_labels_match_emt_and_ase(emt_db, emt_atoms, fast):
    reader = AseDbReader(emt_db, fast_sqlite=fast)
    rows = ase_rows(emt_db)
    assert len(reader) == len(emt_atoms) == len(rows)
    same_bits(reader.natoms_array(), np.array([len(a) for a in emt_atoms], dtype=np.int64))
    for i, (row, original) in enumerate(zip(rows, emt_atoms)):
        s = reader.read(i)
        assert_geometry_is_ase(s, row.toatoms())
        assert_geometry_is_ase(s, original)
        # recompute with a real EMT calculator: the labels are EMT's, in ASE units
        fresh = original.copy()
        fresh.calc = EMT()
        same_bits(s.energy, np.asarray(fresh.get_potential_energy()))
        same_bits(s.forces, fresh.get_forces())
        if original.pbc.all():
            same_bits(s.stress, voigt_6_to_full_3x3_stress(fresh.get_stress()))
            assert s.stress.shape == (3, 3)
        else:
            assert s.stress is None
    assert reader.units == {}


def test_kvp_energy_and_data_forces(tmp_path):
    path = tmp_path / "kvp.db"
    rng = np.random.default_rng(1)
    written = []
    with connect(path) as db:
        for k in range(4):
            atoms = small_atoms(3 + k, seed=k)
            e, f = float(rng.normal()), rng.normal(size=(len(atoms), 3))
            db.write(atoms, data={"forces": f}, dft_energy=e)
            written.append((atoms, e, f))
    for fast in (True, False):
        reader = AseDbReader(path, energy_key="dft_energy", fast_sqlite=fast)
        for i, (atoms, e, f) in enumerate(written):
            s = reader.read(i)
            assert_geometry_is_ase(s, atoms)
            same_bits(s.energy, np.asarray(e))
            same_bits(s.forces, f)
            assert s.stress is None
        # with the default key the energy is simply absent (None), never zero-filled
        assert AseDbReader(path, fast_sqlite=fast).read(0).energy is None


def test_guide_style_write_is_rejected_by_ase(tmp_path):
    """Why the README writes labels with a SinglePointCalculator or a custom key."""
    atoms = small_atoms(3)
    with connect(tmp_path / "guide.db") as db:
        with pytest.raises(ValueError, match="Bad key"):
            db.write(atoms, energy=-1.0, data={"forces": np.zeros((3, 3))})


@pytest.mark.parametrize("fast", PATHS)
def test_lookup_order_calc_then_kvp_then_data(tmp_path, fast):
    path = tmp_path / "order.db"
    atoms = small_atoms(4)
    f_calc = np.arange(12.0).reshape(4, 3)
    with connect(path) as db:
        a = atoms.copy()
        a.calc = SinglePointCalculator(a, energy=1.0, forces=f_calc)
        db.write(a, data={"energy": 2.0, "forces": -f_calc})  # calculator wins
        db.write(atoms, Energy=3.0, data={"energy": 4.0})  # kvp 'Energy' (alias) wins over data
        db.write(atoms, data={"force": f_calc, "virial": np.eye(3)})  # aliases in data
    reader = AseDbReader(path, fast_sqlite=fast)
    s0, s1, s2 = reader.read_many([0, 1, 2])
    assert float(s0.energy) == 1.0 and np.array_equal(s0.forces, f_calc)
    assert float(s1.energy) == 3.0 and s1.forces is None
    assert s2.energy is None and np.array_equal(s2.forces, f_calc)
    volume = abs(np.linalg.det(atoms.cell.array))
    np.testing.assert_array_equal(s2.stress, -np.eye(3) / volume)
    # an explicit key is matched exactly: no alias
    assert AseDbReader(path, forces_key="forces", fast_sqlite=fast).read(2).forces is not None
    assert AseDbReader(path, forces_key="my_forces", fast_sqlite=fast).read(2).forces is None


@pytest.mark.parametrize("fast", PATHS)
def test_free_energy_key_reads_the_calculator_column(tmp_path, fast):
    path = tmp_path / "free.db"
    atoms = small_atoms(2)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5, free_energy=-1.75)
    with connect(path) as db:
        db.write(atoms)
    assert float(AseDbReader(path, energy_key="free_energy", fast_sqlite=fast).read(0).energy) == -1.75


@pytest.mark.parametrize("fast", PATHS)
def test_schnetpack_units_and_batch_axis(tmp_path, fast):
    path = tmp_path / "spk.db"
    atoms = small_atoms(5)
    rng = np.random.default_rng(3)
    e, f, s = rng.normal(size=(1,)), rng.normal(size=(5, 3)), rng.normal(size=(1, 3, 3))
    with connect(path) as db:
        db.write(atoms, data={"energy": e, "forces": f, "stress": s})
        db.metadata = {
            "_property_unit_dict": {"energy": "kcal/mol", "forces": "Ha/Bohr", "stress": "Ha/Bohr^3"},
            "_distance_unit": "Bohr",
        }
    reader = AseDbReader(path, fast_sqlite=fast)
    out = reader.read(0)
    np.testing.assert_array_equal(out.energy, e[0] * (units.kcal / units.mol))
    np.testing.assert_array_equal(out.forces, f * (units.Hartree / units.Bohr))
    np.testing.assert_array_equal(out.stress, s[0] * (units.Hartree / units.Bohr**3))
    np.testing.assert_array_equal(out.positions, atoms.positions * units.Bohr)
    np.testing.assert_array_equal(out.cell, atoms.cell.array * units.Bohr)
    assert set(reader.units) == {"energy", "forces", "stress", "positions"}
    assert "kcal/mol" in reader.units["energy"] and "Bohr" in reader.units["positions"]
    # read_atoms is ASE's untouched view
    assert np.array_equal(reader.read_atoms(0).positions, atoms.positions)


@pytest.mark.parametrize("unit", ["furlong", 1.0, "eV/Ang"])
def test_unknown_or_wrong_unit_is_an_error(tmp_path, unit):
    path = tmp_path / "badunit.db"
    with connect(path) as db:
        db.write(small_atoms(2), data={"energy": np.array([1.0])})
        db.metadata = {"_property_unit_dict": {"energy": unit}}
    with pytest.raises(DataFormatError, match=r"badunit\.db.*'energy'"):
        AseDbReader(path)


@pytest.mark.parametrize("fast", PATHS)
def test_schnetpack_0x_base64_data(tmp_path, fast):
    path = tmp_path / "b64.db"
    value = np.array([-1234.5678901234567])
    enc = base64.b64encode(value.tobytes()).decode()
    with connect(path) as db:
        db.write(small_atoms(3), data={"energy": enc, "_shape_energy": [1], "_dtype_energy": "float64"})
        db.write(small_atoms(3), data={"energy": enc, "_shape_energy": [2], "_dtype_energy": "float64"})
        db.write(small_atoms(3), data={"energy": enc, "_shape_energy": [1], "_dtype_energy": "object"})
    reader = AseDbReader(path, fast_sqlite=fast)
    same_bits(reader.read(0).energy, value.reshape(()))
    for i in (1, 2):
        with pytest.raises(DataFormatError, match=rf"b64\.db, structure {i}, key 'energy'"):
            reader.read(i)


# ---------------------------------------------------------------------------------------
# Every real database under shared/realdata
# ---------------------------------------------------------------------------------------


def _data_value(row, key):
    return np.asarray(row.data[key])


def _b64(row, key):
    d = row.data
    return np.frombuffer(base64.b64decode(d[key]), dtype=d[f"_dtype_{key}"]).reshape(d[f"_shape_{key}"])


def _calc(row, key):
    return row.get(key)


#: file -> (count, min atoms, max atoms, reader options, {label: how ASE gives it})
REAL_DBS = {
    "schnetpack/test_qm9.db": (20, 3, 11, {"energy_key": "energy_U0"},
                               {"energy": lambda r: _data_value(r, "energy_U0")[0] * units.Hartree}),
    "schnetpack/test_iso.db": (40, 19, 19, {"energy_key": "total_energy", "forces_key": "atomic_forces"},
                               {"energy": lambda r: r.key_value_pairs["total_energy"],
                                "forces": lambda r: _data_value(r, "atomic_forces")}),
    "schnetpack/si16.db": (1, 16, 16, {},
                           {"energy": lambda r: _data_value(r, "energy")[0],
                            "forces": lambda r: _data_value(r, "forces"),
                            "stress": lambda r: _data_value(r, "stress")[0]}),
    "schnetpack/snippet.db": (4, 9, 9, {}, {"energy": lambda r: r.energy, "forces": lambda r: r.forces}),
    # SchNetPack 0.x stored QM9 energies already converted to eV (no unit metadata in the file)
    "schnetpack/qm9.db": (500, 3, 20, {"energy_key": "energy_U0"}, {"energy": lambda r: _b64(r, "energy_U0")[0]}),
    "schnetpack/ase_carbene_2200.db": (2200, 3, 3, {},
                                       {"energy": lambda r: _data_value(r, "energy")[0],
                                        "forces": lambda r: _data_value(r, "forces")}),
    "fairchem/oxides.db": (295, 3, 24, {}, {"energy": lambda r: r.energy, "forces": lambda r: r.forces}),
    "fairchem/data.db": (50, 1, 79, {}, {"energy": lambda r: r.energy, "forces": lambda r: r.forces}),
    "fairchem/bulks.db": (20, 2, 40, {}, {"energy": lambda r: r.energy, "forces": lambda r: r.forces}),
    "catlearn/mol.db": (101, 2, 60, {"energy_key": "enrgy"},
                        {"energy": lambda r: r.key_value_pairs.get("enrgy"), "forces": lambda r: r.get("forces")}),
}


def _real_db_params():
    root = realdata_dir()
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.db")) if root.is_dir() else []
    names = sorted(set(found) | set(REAL_DBS))
    return [pytest.param(name, id=name) for name in names]


@pytest.fixture
def real_db(request):
    root = realdata_dir()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent (set MLFF_REALDATA)")
    return root / request.param


@pytest.mark.parametrize("real_db", _real_db_params(), indirect=True)
def test_real_database_matches_ase(real_db, request):
    name = request.node.callspec.id
    assert name in REAL_DBS, f"{name}: add its expectations from MANIFEST.md to REAL_DBS"
    assert real_db.exists(), f"{real_db} listed in MANIFEST.md but missing"
    count, lo, hi, options, reference = REAL_DBS[name]
    reader = AseDbReader(real_db, **options)
    rows = ase_rows(real_db)
    assert len(reader) == len(rows) == count
    natoms = reader.natoms_array()
    assert natoms.dtype == np.int64 and natoms.min() == lo and natoms.max() == hi
    same_bits(natoms, np.array([len(r.numbers) for r in rows], dtype=np.int64))
    structures = reader.read_many(range(len(reader)))
    for i, (row, s) in enumerate(zip(rows, structures)):
        assert_geometry_is_ase(s, row.toatoms())
        for label in ("energy", "forces", "stress"):
            got = getattr(s, label)
            want = reference[label](row) if label in reference else None
            if want is None:
                assert got is None, (i, label)
                continue
            want = np.asarray(want)
            if label == "energy":
                want = want.reshape(())
            if label == "stress" and want.shape == (6,):
                want = voigt_6_to_full_3x3_stress(want)
            same_bits(got, want)


@pytest.mark.parametrize("real_db", _real_db_params(), indirect=True)
def test_real_database_fast_and_generic_paths_agree(real_db, request):
    count, _, _, options, _ = REAL_DBS[request.node.callspec.id]
    fast, generic = AseDbReader(real_db, **options), AseDbReader(real_db, fast_sqlite=False, **options)
    same_bits(fast.natoms_array(), generic.natoms_array())
    picks = range(0, count, max(1, count // 40))  # the generic path is slow; 40 rows each suffice
    for i in picks:
        assert_same_structure(fast.read(i), generic.read(i))
        assert fast.label_keys(i) == generic.label_keys(i)
    for a, b in zip(fast.read_many(list(picks)[::-1]), generic.read_many(list(picks)[::-1])):
        assert_same_structure(a, b)


def test_real_qm9_energy_agrees_with_schnetpack2_file_in_hartree():
    """qm9.db (0.x, base64, eV) and test_qm9.db (v2, Ha + metadata) hold the same first molecules."""
    root = realdata_dir()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent (set MLFF_REALDATA)")
    old = AseDbReader(root / "schnetpack/qm9.db", energy_key="energy_U0")
    new = AseDbReader(root / "schnetpack/test_qm9.db", energy_key="energy_U0")
    assert "Ha" in new.units["energy"] and old.units == {}
    for i in range(3):  # CH4, NH3, H2O in both files
        a, b = old.read(i), new.read(i)
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.energy, b.energy, rtol=1e-9)


def test_real_label_keys_and_partial_labels():
    root = realdata_dir()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent (set MLFF_REALDATA)")
    iso = AseDbReader(root / "schnetpack/test_iso.db")
    assert iso.label_keys(0) == ["total_energy", "atomic_forces"]
    assert iso.read(0).energy is None  # default keys find nothing there: absent, not an error
    keys = AseDbReader(root / "fairchem/data.db").label_keys(0)
    assert keys[:2] == ["energy", "forces"] and "neural_energy" in keys and "xc" not in keys
    mol = AseDbReader(root / "catlearn/mol.db", energy_key="enrgy")
    energies = [s.energy for s in mol.read_many(range(len(mol)))]
    assert sum(e is not None for e in energies) == 95
    # default keys on mol.db: the calculator energy of the 2 espresso rows only
    assert sum(s.energy is not None for s in AseDbReader(root / "catlearn/mol.db").read_many(range(101))) == 2
    carbene = AseDbReader(root / "schnetpack/ase_carbene_2200.db")
    assert carbene.read(0).forces.dtype == np.float32  # the file's dtype is kept
    # units stated in eV, eV/Ang, eV/Ang/Ang/Ang need no conversion; 1.0 for total_charge is not read
    assert carbene.units == {} and AseDbReader(root / "schnetpack/si16.db").units == {}
    snippet = AseDbReader(root / "schnetpack/snippet.db")
    atoms = snippet.read_atoms(1)
    row = ase_rows(root / "schnetpack/snippet.db")[1]
    same_bits(atoms.get_forces(), row.forces)
    assert open_reader(root / "schnetpack/snippet.db").__class__ is AseDbReader


# ---------------------------------------------------------------------------------------
# read_many, read_atoms, other backends, pickling, fork
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", PATHS)
def test_read_many_matches_read(emt_db, fast):
    reader = AseDbReader(emt_db, fast_sqlite=fast)
    order = [5, 0, 11, 5, -1, 3]  # duplicates and a negative index
    for got, i in zip(reader.read_many(order), order):
        assert_same_structure(got, reader.read(i))
    assert_same_structure(reader.read(-1), reader.read(len(reader) - 1))


def test_generic_read_many_sparse_ids(tmp_path):
    path = tmp_path / "sparse.db"
    with connect(path) as db:
        for k in range(30):
            a = small_atoms(2 + k % 4, seed=k)
            a.calc = SinglePointCalculator(a, energy=float(k))
            db.write(a)
        db.delete([3, 4, 10])
    reader = AseDbReader(path, fast_sqlite=False)
    assert len(reader) == 27 and reader.row_ids[3] == 6
    for indices in ([0, 26], [4, 5, 6, 7], [26, 0, 13, 13]):
        got = reader.read_many(indices)
        assert [float(s.energy) for s in got] == [float(reader.row_ids[i] - 1) for i in indices]


def test_read_atoms_is_row_toatoms(emt_db):
    reader = AseDbReader(emt_db)
    row = ase_rows(emt_db)[2]
    atoms, ref = reader.read_atoms(2), row.toatoms()
    same_bits(atoms.positions, ref.positions)
    same_bits(atoms.get_forces(), ref.get_forces())
    assert atoms.get_potential_energy() == ref.get_potential_energy()


def test_json_backend(tmp_path, emt_atoms):
    path = tmp_path / "structures.json"
    with connect(path) as db:
        for atoms in emt_atoms[:4]:
            db.write(atoms)
    reader = AseDbReader(path)
    for i, row in enumerate(ase_rows(path)):
        s = reader.read(i)
        assert_geometry_is_ase(s, row.toatoms())
        same_bits(s.forces, row.forces)


def test_url_backend_masks_password(tmp_path, emt_db, monkeypatch):
    """A database URL goes through ase.db's API; the password never shows."""
    import ase.db

    url = "postgresql://alice:s3cr3t-pw@dbhost:5432/mlff"
    real_connect = ase.db.connect
    monkeypatch.setattr(ase.db, "connect", lambda name, **kw: real_connect(emt_db) if name == url else real_connect(name, **kw))
    reader = AseDbReader(url)
    assert reader.display_path == "postgresql://alice:***@dbhost:5432/mlff"
    assert "s3cr3t" not in repr(reader) and "alice:***@" in repr(reader)
    assert_same_structure(reader.read(1), AseDbReader(emt_db).read(1))
    with pytest.raises(IndexError) as info:
        reader.read(100)
    assert "s3cr3t" not in str(info.value) and "alice:***@dbhost" in str(info.value)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.display_path == reader.display_path


def test_backend_error_messages_are_scrubbed(monkeypatch):
    import ase.db

    url = "postgresql://alice:s3cr3t-pw@dbhost:5432/mlff"

    def refuse(name, **kw):
        raise RuntimeError(f'connection to "{name}" refused (password "s3cr3t-pw")')

    monkeypatch.setattr(ase.db, "connect", refuse)
    with pytest.raises(ConnectionError) as info:
        AseDbReader(url)
    text = str(info.value)
    assert "s3cr3t" not in text and "alice:***@dbhost" in text and "refused" in text


def test_url_without_backend_hides_password():
    try:
        import ase_db_backends  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ase-db-backends installed; a refused connection is tested elsewhere")
    with pytest.raises(ImportError) as info:
        AseDbReader("postgresql://bob:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value) and "bob:***@127.0.0.1" in str(info.value)


def test_mask_password():
    assert mask_password("postgresql://u:p@h:1/d") == "postgresql://u:***@h:1/d"
    assert mask_password("postgres://u@h/d") == "postgres://u@h/d"
    assert mask_password("mysql://u:p:w@x@h/d?password=zz&x=1") == "mysql://u:***@h/d?password=***&x=1"
    assert mask_password("/data/my:file@x.db") == "/data/my:file@x.db"


def test_pickle_round_trip(emt_db):
    reader = AseDbReader(emt_db)
    before = reader.read(4)  # the handle is open now
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._handle is None
    assert_same_structure(clone.read(4), before)
    same_bits(clone.natoms_array(), reader.natoms_array())


def _read_in_child(reader, index, queue):
    s = reader.read(index)
    queue.put((os.getpid(), reader._handle_pid, s.positions, s.energy, s.forces, s.stress))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_read_in_forked_child(emt_db):
    reader = AseDbReader(emt_db)
    expected = reader.read(0)  # opened in the parent before the fork
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(reader, 0, queue))
    child.start()
    pid, handle_pid, positions, energy, forces, stress = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert pid == handle_pid != os.getpid()  # the child opened its own connection
    same_bits(positions, expected.positions)
    same_bits(energy, expected.energy)
    same_bits(forces, expected.forces)
    same_bits(stress, expected.stress)
    assert_same_structure(reader.read(0), expected)  # the parent's handle still works


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_missing_file_is_not_created(tmp_path):
    path = tmp_path / "nothing.db"
    with pytest.raises(FileNotFoundError, match="nothing.db"):
        AseDbReader(path)
    assert not path.exists()


@pytest.mark.parametrize("content", [b"", b"this is not a database\n", b"SQLite format 3\x00" + b"\x07" * 200])
def test_not_an_ase_database(tmp_path, content):
    path = tmp_path / "broken.db"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="broken.db"):
        AseDbReader(path)
    assert path.read_bytes() == content  # never initialised by ase.db


@pytest.mark.parametrize("fast", PATHS)
def test_foreign_sqlite_file_is_left_alone(tmp_path, fast):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE molecules (id INTEGER, smiles TEXT)")
    con.commit()
    con.close()
    with pytest.raises(DataFormatError, match=r"other\.db.*'systems'"):
        AseDbReader(path, fast_sqlite=fast)
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert tables == {"molecules"}


def test_directory_is_an_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(DataFormatError, match="dir.db"):
        AseDbReader(tmp_path / "dir.db")


@pytest.mark.parametrize("fast", PATHS)
def test_forces_shape_mismatch_names_file_index_key(tmp_path, fast):
    path = tmp_path / "shape.db"
    with connect(path) as db:
        db.write(small_atoms(3), data={"forces": np.zeros((3, 3))})
        db.write(small_atoms(3), data={"forces": np.zeros((4, 3))})
    reader = AseDbReader(path, fast_sqlite=fast)
    assert reader.read(0).forces.shape == (3, 3)
    with pytest.raises(DataFormatError, match=r"shape\.db, structure 1, key 'forces'.*\(4, 3\)"):
        reader.read(1)
    with pytest.raises(DataFormatError, match=r"structure 1, key 'forces'"):
        reader.read_many([0, 1])


@pytest.mark.parametrize("fast", PATHS)
def test_nan_label_names_file_index_key(tmp_path, fast):
    path = tmp_path / "nan.db"
    with connect(path) as db:
        db.write(small_atoms(2), data={"forces": np.zeros((2, 3))}, dft_energy=1.0)
        atoms = small_atoms(2)
        forces = np.zeros((2, 3))
        forces[1, 2] = np.nan
        db.write(atoms, data={"forces": forces}, dft_energy=1.0)
    reader = AseDbReader(path, energy_key="dft_energy", fast_sqlite=fast)
    with pytest.raises(DataFormatError, match=r"nan\.db, structure 1, key 'forces'.*NaN"):
        reader.read(1)


def test_corrupt_data_blob_names_file_index_key(tmp_path):
    path = tmp_path / "blob.db"
    with connect(path) as db:
        for _ in range(2):
            db.write(small_atoms(2), data={"forces": np.zeros((2, 3))})
    con = sqlite3.connect(path)
    con.execute("UPDATE systems SET data=? WHERE id=2", (b"\x10\x00\x00\x00\x00\x00\x00\x00{broken",))
    con.commit()
    con.close()
    reader = AseDbReader(path)
    assert reader.read(0).forces.shape == (2, 3)
    with pytest.raises(DataFormatError, match=r"blob\.db, structure 1, key 'data'"):
        reader.read(1)


@pytest.mark.parametrize("fast", PATHS)
def test_non_numeric_energy_names_key(tmp_path, fast):
    path = tmp_path / "text.db"
    with connect(path) as db:
        db.write(small_atoms(2), dft_energy="high")
    with pytest.raises(DataFormatError, match=r"text\.db, structure 0, key 'dft_energy'"):
        AseDbReader(path, energy_key="dft_energy", fast_sqlite=fast).read(0)


@pytest.mark.parametrize("fast", PATHS)
def test_index_out_of_range(emt_db, fast):
    reader = AseDbReader(emt_db, fast_sqlite=fast)
    n = len(reader)
    for bad in (n, -n - 1, 10**9):
        with pytest.raises(IndexError, match="emt.db"):
            reader.read(bad)
    with pytest.raises(IndexError):
        reader.read_many([0, n])
    with pytest.raises(IndexError):
        reader.label_keys(n)
