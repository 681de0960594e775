"""The packed format: lossless conversion from every format, file layout, reader, writer errors."""

from __future__ import annotations

import pickle
import warnings

import h5py
import numpy as np
import pytest

from mlff_distiller.data import MolecularDataset, MolecularSubset
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.packed import PackedBuilder, is_packed_file, open_packed, pack, write_packed
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.readers.packed import PackedReader
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.structure_batch import Column, StructureBatch

FIELDS = ("positions", "numbers", "cell", "pbc", "energy", "forces", "stress")
CONTIGUOUS = ("positions", "numbers", "offsets", "cell", "pbc", "energy", "energy_present", "forces", "forces_present")


def assert_same_structure(a: Structure, b: Structure, where: str = "") -> None:
    """Bit-for-bit equality of every field, dtypes included (None only where None)."""
    for key in FIELDS:
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), f"{where} {key}: {x is None} vs {y is None}"
        if x is not None:
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype, f"{where} {key}: {x.dtype} vs {y.dtype}"
            assert x.shape == y.shape and np.array_equal(x, y), f"{where} {key} differs"


def ase_reference(atoms) -> dict:
    """What ASE holds for a structure (float64), stress as [3, 3]."""
    from ase.stress import voigt_6_to_full_3x3_stress

    results = atoms.calc.results
    return {
        "positions": atoms.positions, "numbers": atoms.numbers, "cell": atoms.cell.array, "pbc": atoms.pbc,
        "energy": results["energy"], "forces": results["forces"],
        "stress": voigt_6_to_full_3x3_stress(results["stress"]) if "stress" in results else None,
    }


def independent_reference(fmt: str, path) -> list[dict]:
    """Each structure of ``path`` as ASE (ase.db / ase.io) or plain h5py reads it."""
    if fmt == "ase":
        from ase.db import connect

        return [ase_reference(row.toatoms()) for row in connect(path).select()]
    if fmt == "xyz":
        from ase.io import read

        return [ase_reference(atoms) for atoms in read(path, ":")]
    with h5py.File(path, "r") as f:
        groups = [f["structures"][str(i)] for i in range(len(f["structures"]))]
        return [{
            "positions": g["positions"][()], "numbers": g["species"][()], "cell": g["cell"][()], "pbc": g["pbc"][()],
            "energy": g["energy"][()], "forces": g["forces"][()], "stress": g["stress"][()] if "stress" in g else None,
        } for g in groups]


def structures_with_gaps(seed: int = 0) -> list[Structure]:
    """Structures where energy, forces and stress are missing from some (stress first appears late)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(23):
        n = int(rng.integers(1, 9))
        periodic = k >= 11
        out.append(Structure(
            positions=rng.normal(size=(n, 3)) * 3.0,
            numbers=rng.integers(1, 30, size=n).astype(np.int64),
            cell=(np.diag(rng.uniform(5, 8, size=3)) if periodic else np.zeros((3, 3))),
            pbc=np.array([periodic] * 3),
            energy=None if k % 4 == 1 else np.array(rng.normal()),
            forces=None if k % 5 == 2 else rng.normal(size=(n, 3)),
            stress=rng.normal(size=(3, 3)) if periodic and k % 3 else None,
        ))
    return out


# -- lossless conversion -----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["ase", "xyz", "hdf5"])
def test_pack_is_lossless_from_every_format(fmt, data_files, emt_atoms, tmp_path):
    out = tmp_path / f"{fmt}.packed.h5"
    assert pack(data_files[fmt], out, format=fmt, chunk=5) == len(emt_atoms)  # several chunks
    source = open_reader(data_files[fmt], fmt)
    packed = PackedReader(out)
    assert len(packed) == len(source) == len(emt_atoms)
    np.testing.assert_array_equal(packed.natoms_array(), source.natoms_array())
    assert packed.natoms_array().dtype == np.int64
    reference = independent_reference(fmt, data_files[fmt])
    for i, ref in enumerate(reference):
        got = packed.read(i)
        assert_same_structure(source.read(i), got, f"{fmt} structure {i}")
        # and against what ASE / h5py read, independently of our readers
        for key in FIELDS:
            if ref[key] is None:
                assert getattr(got, key) is None, (fmt, i, key)
            else:
                assert np.array_equal(getattr(got, key), ref[key]), (fmt, i, key)
        assert got.positions.dtype == got.forces.dtype == np.float64
    assert packed.units == source.units


def test_write_packed_from_dataset_subset_and_iterable(data_files, tmp_path):
    ds = MolecularDataset(data_files["ase"], format="ase")
    reader = open_reader(data_files["ase"], "ase")
    write_packed(tmp_path / "ds.h5", ds, chunk=4)
    sub = MolecularSubset(MolecularSubset(ds, [7, 1, 3, 10, 0]), [4, 2, 0])  # nested: parents 0, 3, 7
    assert write_packed(tmp_path / "sub.h5", sub) == 3
    write_packed(tmp_path / "it.h5", (reader.read(i) for i in range(len(reader))), chunk=3)
    for name in ("ds.h5", "it.h5"):
        r = PackedReader(tmp_path / name)
        for i in range(len(reader)):
            assert_same_structure(reader.read(i), r.read(i), f"{name} {i}")
    r = PackedReader(tmp_path / "sub.h5")
    for k, parent in enumerate([0, 3, 7]):
        assert_same_structure(reader.read(parent), r.read(k))


def test_mixed_dtypes_and_late_labels_round_trip(tmp_path):
    structures = structures_with_gaps()
    # float32 positions/forces in the first chunk, float64 later: promoted exactly to float64
    for s in structures[:5]:
        s.positions = s.positions.astype(np.float32)
        if s.forces is not None:
            s.forces = s.forces.astype(np.float32)
    path = tmp_path / "gaps.h5"
    write_packed(path, structures, chunk=4)
    r = PackedReader(path)
    for i, s in enumerate(structures):
        got = r.read(i)
        for key in FIELDS:
            x, y = getattr(s, key), getattr(got, key)
            assert (x is None) == (y is None), (i, key)
            if x is not None:
                assert np.array_equal(np.asarray(x, dtype=np.asarray(y).dtype), y), (i, key)
                assert np.array_equal(np.asarray(y).astype(np.asarray(x).dtype), x), (i, key)  # exact both ways
    with h5py.File(path, "r") as f:  # absent labels are NaN with a False flag, never a silent zero
        assert f["positions"].dtype == np.float64
        present = f["stress_present"][()]
        assert not present[:11].any() and present.any()
        assert np.isnan(f["stress"][()][~present]).all()
        assert np.isnan(f["energy"][()][~f["energy_present"][()]]).all()


def test_float32_source_stays_float32(tmp_path):
    s = structures_with_gaps()[:3]
    for x in s:
        x.positions = x.positions.astype(np.float32)
    write_packed(tmp_path / "f32.h5", s)
    with h5py.File(tmp_path / "f32.h5", "r") as f:
        assert f["positions"].dtype == np.float32
    assert PackedReader(tmp_path / "f32.h5").read(0).positions.dtype == np.float32


# -- the file itself, read with plain h5py ------------------------------------------------------
def test_file_layout_is_contiguous_and_matches_the_source(data_files, emt_atoms, tmp_path):
    out = tmp_path / "p.h5"
    pack(data_files["ase"], out)
    assert is_packed_file(out) and not is_packed_file(data_files["hdf5"])
    with h5py.File(out, "r") as f:
        assert f.attrs["mlff_distiller_format"] == "packed" and int(f.attrs["format_version"]) == 2
        assert str(data_files["ase"]) in f.attrs["source"]
        for name in CONTIGUOUS:
            ds = f[name]
            assert ds.chunks is None and ds.compression is None and ds.id.get_offset() % 8 == 0, name
        offsets = f["offsets"][()]
        assert offsets.dtype == np.int64 and offsets[0] == 0
        positions, forces = f["positions"][()], f["forces"][()]
        for i, atoms in enumerate(emt_atoms):
            a, b = offsets[i], offsets[i + 1]
            assert np.array_equal(positions[a:b], atoms.positions)
            assert np.array_equal(forces[a:b], atoms.calc.results["forces"])
            assert f["energy"][i] == atoms.calc.results["energy"]
            assert np.array_equal(f["numbers"][a:b], atoms.numbers)


def test_hdf5_format_reads_a_packed_file(data_files, tmp_path):
    out = tmp_path / "p.h5"
    pack(data_files["xyz"], out)
    a = MolecularDataset(out, format="packed")
    b = MolecularDataset(out, format="hdf5")
    c = MolecularDataset(out, format=None)
    for i in range(len(a)):
        assert_same_structure(a.get_structure(i), b.get_structure(i))
        assert_same_structure(a.get_structure(i), c.get_structure(i))


def test_compressed_copy_falls_back_to_h5py_with_a_warning(data_files, tmp_path):
    out = tmp_path / "p.h5"
    pack(data_files["ase"], out)
    squeezed = tmp_path / "gz.h5"
    with h5py.File(out, "r") as src, h5py.File(squeezed, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            data = src[name][()]
            dst.create_dataset(name, data=data, compression="gzip" if data.ndim and data.size else None)
    with pytest.warns(UserWarning, match="chunked or compressed"):
        store = open_packed(squeezed)
    ref = PackedReader(out)
    for idx in ([3, 0, 3, 11], [5]):
        batch, expected = store.read_batch(idx), ref.read_batch(idx)
        np.testing.assert_array_equal(batch.positions, expected.positions)
        np.testing.assert_array_equal(batch.columns["forces"].values, expected.columns["forces"].values)
    store.close()


# -- reader behaviour ----------------------------------------------------------------------------
def test_read_batch_keeps_order_and_repeats(data_files, tmp_path):
    out = tmp_path / "p.h5"
    pack(data_files["ase"], out)
    r = PackedReader(out)
    idx = [9, 2, 2, 0, 11]
    batch = r.read_batch(idx)
    assert batch.indices.tolist() == idx
    np.testing.assert_array_equal(batch.natoms, r.natoms_array()[idx])
    for k, i in enumerate(idx):
        assert_same_structure(r.read(i), batch.structure(k))
    with pytest.raises(IndexError, match="out of range"):
        r.read_batch([0, len(r)])
    with pytest.raises(IndexError, match="out of range"):
        r.read_batch([-len(r) - 1])
    assert r.read_batch([-1]).indices.tolist() == [len(r) - 1]  # negative indices count from the end


def test_reader_pickles_without_its_map(data_files, tmp_path):
    out = tmp_path / "p.h5"
    pack(data_files["ase"], out)
    r = PackedReader(out)
    r.read(0)  # open the map
    blob = pickle.dumps(r)
    assert len(blob) < 10_000  # the handle (memory map) is not pickled
    clone = pickle.loads(blob)
    assert_same_structure(r.read(5), clone.read(5))


def test_release_keeps_values(data_files, tmp_path):
    out = tmp_path / "p.h5"
    pack(data_files["ase"], out)
    r = PackedReader(out)
    before = r.read_batch([1, 4]).positions
    r.store.release()
    np.testing.assert_array_equal(r.read_batch([1, 4]).positions, before)


def test_not_a_packed_file(data_files, tmp_path):
    with pytest.raises(DataFormatError, match="not a packed file"):
        PackedReader(data_files["hdf5"])
    bad = tmp_path / "bad.h5"
    pack(data_files["ase"], bad)
    with h5py.File(bad, "a") as f:
        del f["forces"]
        f.create_dataset("forces", data=np.zeros((3, 3)))
    with pytest.raises(DataFormatError, match=r"forces.*shape"):
        PackedReader(bad)
    with pytest.raises(FileNotFoundError):
        PackedReader(tmp_path / "missing.h5")


# -- writer ----------------------------------------------------------------------------------
def test_never_overwrites_unless_asked_and_leaves_nothing_on_error(data_files, tmp_path):
    out = tmp_path / "p.h5"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        pack(data_files["ase"], out)
    assert out.read_bytes() == b"precious"
    pack(data_files["ase"], out, overwrite=True)
    assert is_packed_file(out)
    good = structures_with_gaps()[:5]
    bad = Structure(positions=np.zeros((2, 3)), numbers=np.array([1, 1]), cell=np.zeros((3, 3)),
                    pbc=np.zeros(3, bool), forces=np.zeros((3, 3)))
    target = tmp_path / "never.h5"
    with pytest.raises(DataFormatError, match=r"structure 5, key 'forces'.*shape"):
        write_packed(target, good + [bad], chunk=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.h5"]  # no output, no spill files


def test_empty_source(tmp_path):
    write_packed(tmp_path / "empty.h5", [])
    r = PackedReader(tmp_path / "empty.h5")
    assert len(r) == 0 and r.natoms_array().shape == (0,)
    assert len(MolecularDataset(tmp_path / "empty.h5", format="packed", cache=True)) == 0


def arrays_batch(natoms, positions, numbers, cell, pbc, **labels) -> StructureBatch:
    """A StructureBatch of plain arrays (what a user builds with numpy)."""
    columns = {"positions": Column(positions, kind="atom"), "species": Column(numbers, kind="atom"),
               "cell": Column(cell), "pbc": Column(pbc), **labels}
    return StructureBatch(np.arange(len(natoms)), np.asarray(natoms), columns)


def test_add_batch_from_arrays(tmp_path):
    b = PackedBuilder()
    natoms = np.array([2, 1])
    b.add_batch(arrays_batch(natoms, np.arange(9.0).reshape(3, 3), np.array([1, 8, 6]), np.zeros((2, 3, 3)),
                             np.zeros((2, 3), bool), energy=Column(np.array([1.5, 99.0]), np.array([True, False]))))
    store = b.to_store()
    assert store.read(0).energy == 1.5 and store.read(1).energy is None
    assert np.array_equal(store.read(1).positions, [[6.0, 7.0, 8.0]])
    with pytest.raises(DataFormatError, match="positions"):
        PackedBuilder().add_batch(arrays_batch(np.array([2]), np.zeros((3, 3)), np.zeros(2, int),
                                               np.zeros((1, 3, 3)), np.zeros((1, 3), bool)))


def test_stored_neighbor_lists_match_ase(data_files, emt_atoms, tmp_path):
    from ase.neighborlist import neighbor_list

    out = tmp_path / "nl.h5"
    pack(data_files["ase"], out, cutoff=4.0)
    r = PackedReader(out)
    assert r.cutoff == 4.0
    batch = r.read_batch(list(range(len(r))))
    ptr = np.concatenate([[0], np.cumsum(batch.num_edges)])
    for k, atoms in enumerate(emt_atoms):
        i, j, shifts = neighbor_list("ijS", atoms, 4.0)
        expected = sorted(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist())))
        e = batch.edge_index[:, ptr[k] : ptr[k + 1]]
        s = batch.shifts[ptr[k] : ptr[k + 1]]
        got = sorted(zip(e[0].tolist(), e[1].tolist(), map(tuple, s.tolist())))
        assert got == expected, k


def test_writers_module_writes_packed(data_files, tmp_path):
    from mlff_distiller.data.writers import write_structures

    reader = open_reader(data_files["ase"], "ase")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        n = write_structures(tmp_path / "w.h5", (reader.read(i) for i in range(len(reader))), "packed")
    assert n == len(reader)
    out = PackedReader(tmp_path / "w.h5")
    for i in range(len(reader)):
        assert_same_structure(reader.read(i), out.read(i))


def test_memory_stays_flat_while_iterating_a_large_file(tmp_path):
    """Private memory (RssAnon) grows far less than the file while one epoch is read (cache=False)."""
    import torch

    from mlff_distiller.data import MolecularDataLoader

    def rss_anon() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon"))

    rng = np.random.default_rng(0)
    n, path = 200_000, tmp_path / "big.h5"
    builder = PackedBuilder()
    for start in range(0, n, 50_000):
        natoms = rng.integers(4, 12, size=50_000)
        t = int(natoms.sum())
        builder.add_batch(arrays_batch(
            natoms, rng.random((t, 3)), rng.integers(1, 80, t), np.zeros((50_000, 3, 3)), np.zeros((50_000, 3), bool),
            energy=Column(rng.normal(size=50_000)), forces=Column(rng.normal(size=(t, 3)), kind="atom"),
        ))
    builder.write(path)
    del builder
    size = path.stat().st_size
    assert size > 50 * 2**20
    before = rss_anon()
    loader = MolecularDataLoader(MolecularDataset(path, format="packed"), batch_size=512, shuffle=True,
                                 use_padding=False, pin_memory=False, seed=0)
    seen = 0
    for batch in loader:
        seen += len(batch["natoms"])
        assert batch["positions"].dtype == torch.float32
    assert seen == n
    assert rss_anon() - before < 0.1 * size


def _realdata_files() -> list:
    from conftest import realdata_dir

    root = realdata_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".xyz", ".extxyz", ".db", ".h5", ".hdf5"))


def test_every_readable_realdata_file_packs_losslessly(tmp_path):
    """Every real file our readers accept converts to packed and reads back bit for bit."""
    from conftest import realdata_dir

    if not realdata_dir().is_dir():
        pytest.skip(f"{realdata_dir()} is absent")
    packed_any = 0
    for k, path in enumerate(_realdata_files()):
        try:
            source = open_reader(path)
            len(source)
        except (DataFormatError, ValueError, KeyError, OSError):
            continue  # files a reader rightly refuses are tested by the readers' own tests
        out = tmp_path / f"{k}.h5"
        n = min(len(source), 600)  # the large ANI files: their first 600 structures (speed)
        if n == len(source):
            assert pack(path, out) == n, path
        else:
            subset = MolecularSubset(MolecularDataset(path, format=None), range(n))
            assert write_packed(out, subset) == n, path
        packed = PackedReader(out)
        assert packed.units == source.units, path
        for start in range(0, n, 512):
            idx = list(range(start, min(start + 512, n)))
            for i, a, b in zip(idx, source.read_many(idx), packed.read_many(idx)):
                assert_same_structure(a, b, f"{path} structure {i}")
        packed_any += 1
    assert packed_any >= 20
