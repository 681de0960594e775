"""HDF5 files from strangers (issue 12, items 4, 8, 9, 11, 12): corrupt, forged or linking files
are refused with an error naming the file (and structure and key where they are known); nothing
else of the machine is opened, nothing huge is allocated."""

from __future__ import annotations

import os
import signal

import h5py
import numpy as np
import pytest

from conftest import emt_structures, write_guide_hdf5
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.readers.hdf5 import Hdf5Reader

#: what a refusal may be: our error (a ValueError), or KeyError/IndexError/OSError naming the file
CLEAR = (ValueError, KeyError, IndexError, OSError)


@pytest.fixture(scope="module")
def guide_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "guide.h5"
    write_guide_hdf5(path, emt_structures(6))
    return path


def _read_all(path, **options):
    reader = open_reader(path, "hdf5", **options)
    try:
        return [reader.read(i) for i in range(len(reader))]
    finally:
        reader.close()


# -- item 9: corrupt files -------------------------------------------------------------------


def test_byte_flipped_files_fail_with_the_file_named(guide_file, tmp_path):
    """Flip 1-3 bytes (seeded) of a guide file 80 times: every failure is a clear error naming
    the file (they used to be bare RuntimeError/KeyError/ValueError from h5py, 7 of 10)."""
    data = guide_file.read_bytes()
    rng = np.random.default_rng(12)
    outcomes = {"read": 0, "refused": 0}
    unclear = []
    for k in range(80):
        flipped = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            flipped[int(rng.integers(len(flipped)))] = int(rng.integers(256))
        path = tmp_path / f"flip_{k}.h5"
        path.write_bytes(bytes(flipped))
        try:
            _read_all(path)
            outcomes["read"] += 1
        except CLEAR as exc:
            if str(path) not in str(exc):
                unclear.append(f"{type(exc).__name__}: {exc}")
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - any other type is a failure of the test
            unclear.append(f"{type(exc).__name__}: {exc}")
    assert not unclear, "\n".join(unclear[:10])
    assert outcomes["refused"] >= 10, outcomes  # the flips do hit metadata


def test_soft_link_loop(tmp_path):
    path = tmp_path / "loop.h5"
    write_guide_hdf5(path, emt_structures(2))
    with h5py.File(path, "a") as f:
        del f["structures/1/forces"]
        f["structures/1/forces"] = h5py.SoftLink("/structures/1/loop")
        f["structures/1/loop"] = h5py.SoftLink("/structures/1/forces")
    reader = open_reader(path, "hdf5")
    reader.read(0)
    with pytest.raises(DataFormatError, match=rf"{path}, structure 1, key 'structures/1/forces'"):
        reader.read(1)


# -- item 8: declared sizes ------------------------------------------------------------------


def test_huge_sparse_positions_in_the_guide_layout(tmp_path):
    """A 10**12-atom positions dataset that occupies no storage: refused before any allocation."""
    path = tmp_path / "sparse.h5"
    write_guide_hdf5(path, emt_structures(2))
    with h5py.File(path, "a") as f:
        del f["structures/1/positions"]
        f["structures/1"].create_dataset("positions", shape=(10**12, 3), dtype="f8", chunks=(1024, 3))
    assert os.path.getsize(path) < 100_000
    with pytest.raises(DataFormatError, match=rf"{path}, structure 1, key 'structures/1/positions': declares shape "
                                              r"\(1000000000000, 3\).*refusing to read it"):
        open_reader(path, "hdf5")


def test_huge_sparse_label_in_the_guide_layout(tmp_path):
    path = tmp_path / "sparse_label.h5"
    write_guide_hdf5(path, emt_structures(2))
    with h5py.File(path, "a") as f:
        del f["structures/1/forces"]
        f["structures/1"].create_dataset("forces", shape=(10**11, 3), dtype="f8", chunks=(1024, 3))
    reader = open_reader(path, "hdf5")
    with pytest.raises(DataFormatError, match=r"structure 1, key 'structures/1/forces': declares shape"):
        reader.read(1)


def test_huge_sparse_conformers_in_the_ani_layout(tmp_path):
    path = tmp_path / "ani.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("H2O")
        g.create_dataset("coordinates", shape=(10**11, 3, 3), dtype="f4", chunks=(64, 3, 3))
        g["species"] = np.array([8, 1, 1])
        g.create_dataset("energies", shape=(10**11,), dtype="f8", chunks=(1024,))
    with pytest.raises(DataFormatError, match=rf"{path}, key 'H2O/coordinates': declares shape \(100000000000, 3, 3\)"):
        open_reader(path, "hdf5")


# -- item 12: links and other files ----------------------------------------------------------


@pytest.fixture
def linked(tmp_path):
    """A guide file whose structure 1 takes its forces from another file through an external link."""
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["forces"] = np.full((4, 3), 7.0)
    path = tmp_path / "linking.h5"
    structures = emt_structures(3)
    write_guide_hdf5(path, structures)
    n = len(structures[1])
    with h5py.File(other, "w") as f:
        f["forces"] = np.full((n, 3), 7.0)
    with h5py.File(path, "a") as f:
        del f["structures/1/forces"]
        f["structures/1/forces"] = h5py.ExternalLink(str(other), "/forces")
    return path, other


def test_external_links_are_refused_by_default(linked):
    path, other = linked
    reader = open_reader(path, "hdf5")
    reader.read(0)
    with pytest.raises(DataFormatError, match=rf"{path}, structure 1, key 'structures/1/forces': is an external link "
                                              rf"to {other}:/forces.*allow_external_links=True"):
        reader.read(1)
    s = open_reader(path, "hdf5", allow_external_links=True).read(1)
    assert np.all(s.forces == 7.0)


def test_external_link_at_the_root_is_refused_before_it_is_followed(tmp_path):
    target = tmp_path / "target.h5"
    write_guide_hdf5(target, emt_structures(2))
    path = tmp_path / "root_link.h5"
    with h5py.File(path, "w") as f:
        f["structures"] = h5py.ExternalLink(str(target), "/structures")
    with pytest.raises(DataFormatError, match=rf"{path}, key 'structures': is an external link"):
        open_reader(path, "hdf5")
    assert len(open_reader(path, "hdf5", allow_external_links=True)) == 2


def test_external_link_deep_in_a_conformer_layout(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["e"] = np.zeros(2)
    path = tmp_path / "ani_link.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("mol").create_group("H2")
        g["coordinates"] = np.zeros((2, 2, 3), dtype="f4") + np.array([0.0, 0.0, 0.7])
        g["species"] = np.array([1, 1])
        g["energies"] = h5py.ExternalLink(str(other), "/e")
    with pytest.raises(DataFormatError, match=r"key 'mol/H2/energies': is an external link"):
        open_reader(path, "hdf5")


@pytest.mark.parametrize("kind", ["external", "virtual"])
def test_datasets_stored_in_other_files_are_refused(tmp_path, kind):
    raw = tmp_path / "raw.bin"
    path = tmp_path / f"{kind}.h5"
    atoms = emt_structures(1)[0]
    n = len(atoms)
    forces = np.arange(3.0 * n).reshape(n, 3)
    raw.write_bytes(forces.tobytes())
    write_guide_hdf5(path, [atoms])
    with h5py.File(path, "a") as f:
        del f["structures/0/forces"]
        if kind == "external":
            f["structures/0"].create_dataset("forces", shape=(n, 3), dtype="f8", external=[(str(raw), 0, 24 * n)])
        else:
            src = tmp_path / "src.h5"
            with h5py.File(src, "w") as g:
                g["f"] = forces
            layout = h5py.VirtualLayout(shape=(n, 3), dtype="f8")
            layout[:] = h5py.VirtualSource(str(src), "f", shape=(n, 3))
            f["structures/0"].create_virtual_dataset("forces", layout)
    with pytest.raises(DataFormatError, match=r"structure 0, key 'structures/0/forces': .*allow_external_links=True"):
        _read_all(path)
    assert np.array_equal(_read_all(path, allow_external_links=True)[0].forces, forces)


def test_internal_soft_links_are_followed(tmp_path):
    path = tmp_path / "soft.h5"
    structures = emt_structures(2)
    write_guide_hdf5(path, structures)
    with h5py.File(path, "a") as f:
        del f["structures/1/cell"]
        f["structures/1/cell"] = h5py.SoftLink("/structures/0/cell")
    s = _read_all(path)[1]
    assert np.array_equal(s.cell, structures[0].cell.array)


# -- item 4: impossible values and names in the guide layout ---------------------------------


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("positions", "nan", r"1 NaN/inf value\(s\)"),
        ("cell", "inf", r"1 NaN/inf value\(s\)"),
        ("species", -1, r"atomic number -1 outside 1..118"),
        ("species", 0, r"atomic number 0 outside 1..118"),
        ("species", 119, r"atomic number 119 outside 1..118"),
        ("species", 200, r"atomic number 200 outside 1..118"),
    ],
)
def test_impossible_values_in_the_guide_layout(tmp_path, key, value, message):
    path = tmp_path / "bad.h5"
    write_guide_hdf5(path, emt_structures(2))
    with h5py.File(path, "a") as f:
        data = f[f"structures/1/{key}"][()]
        if key == "species":
            data[0] = value
        else:
            data.flat[0] = float(value)
        del f[f"structures/1/{key}"]
        f[f"structures/1/{key}"] = data
    reader = open_reader(path, "hdf5")
    with pytest.raises(DataFormatError, match=rf"bad\.h5, structure 1, key 'structures/1/{key}': {message}"):
        reader.read(1)


@pytest.mark.parametrize("names,message", [(("0", "1", "01"), "'01' and '1' are both structure number 1"),
                                           (("0", "x"), "group name is not a structure number")])
def test_structure_group_names(tmp_path, names, message):
    path = tmp_path / "names.h5"
    write_guide_hdf5(path, emt_structures(len(names)))
    with h5py.File(path, "a") as f:
        for k, name in enumerate(names):
            if name != str(k):
                f.move(f"structures/{k}", f"structures/{name}")
    with pytest.raises(DataFormatError, match=message):
        open_reader(path, "hdf5")


# -- items 11, 12: what a path names ---------------------------------------------------------


def test_directory_of_shards_ignores_hidden_files_and_refuses_hard_links(tmp_path):
    from test_hdf5_layouts import write_mace_shard

    shards = tmp_path / "train"
    shards.mkdir()
    atoms = emt_structures(4)
    write_mace_shard(shards / "train_0.h5", atoms[:2])
    write_mace_shard(shards / "train_1.h5", atoms[2:])
    (shards / ".train_2.h5.partial-4242").write_bytes(b"not yet a shard")
    (shards / ".train_3.h5").write_bytes((shards / "train_0.h5").read_bytes())
    reader = Hdf5Reader(shards)
    assert len(reader) == 4 and [os.path.basename(p) for p in reader.paths] == ["train_0.h5", "train_1.h5"]
    os.link(shards / "train_0.h5", shards / "train_2.h5")
    with pytest.raises(DataFormatError, match=r"train_2\.h5: same file as .*train_0\.h5"):
        Hdf5Reader(shards)


@pytest.mark.parametrize("fmt", ["hdf5", "xyz", "ase"])
def test_fifo_is_refused_without_opening_it(tmp_path, fmt):
    """Opening a FIFO for reading blocks until someone writes: it must never be opened."""
    suffix = {"hdf5": ".h5", "xyz": ".xyz", "ase": ".db"}[fmt]
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)

    def hang(signum, frame):
        raise AssertionError("the reader opened the FIFO and waits for a writer")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, 20.0)
    try:
        with pytest.raises(DataFormatError, match=rf"pipe{suffix}: is a FIFO"):
            open_reader(fifo, fmt)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
