"""A file replaced or modified while a dataset is open (issue 12, item 1) is an error in every
process that opens it again (DataLoader workers, a reopen), never the old index applied to the
new file. Our own ``--overwrite`` replaces files atomically, so this happens in normal use."""

from __future__ import annotations

import pickle
import sqlite3

import numpy as np
import pytest
import torch

from conftest import emt_structures
from mlff_distiller.data.dataset import MolecularDataset
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.writers import write_structures

FORMATS = {"ase": "data.db", "xyz": "data.xyz", "hdf5": "data.h5", "packed": "data.h5"}


def _structures(n: int, seed: int) -> list[Structure]:
    return [Structure(positions=a.positions, numbers=a.numbers.astype(np.int64), cell=a.cell.array, pbc=a.pbc,
                      energy=np.float64(a.get_potential_energy()), forces=a.get_forces())
            for a in emt_structures(n, seed=seed)]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_replaced_file_is_refused_by_a_worker_and_on_reopen(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    write_structures(path, _structures(6, seed=1), fmt)
    reader = open_reader(path, "packed" if fmt == "packed" else None)
    first = reader.read(0)
    worker_copy = pickle.dumps(reader)  # what a DataLoader worker receives
    write_structures(path, _structures(9, seed=2), fmt, overwrite=True)  # atomic replace, new inode
    assert np.array_equal(reader.read(0).positions, first.positions)  # this process keeps the old file open
    with pytest.raises(DataFormatError, match=rf"{FORMATS[fmt]}: file changed since the dataset was opened "
                                              r"\(it was replaced by another file\)"):
        pickle.loads(worker_copy).read(0)
    reader.close()
    with pytest.raises(DataFormatError, match="file changed since the dataset was opened"):
        reader.read(0)


def test_file_modified_in_place_is_refused(tmp_path):
    path = tmp_path / "data.xyz"
    write_structures(path, _structures(4, seed=1), "xyz")
    reader = open_reader(path)
    with open(path, "a") as f:  # another program appends frames
        f.write(path.read_text())
    clone = pickle.loads(pickle.dumps(reader))
    with pytest.raises(DataFormatError, match=r"data\.xyz: file changed since .*its size changed from \d+ to \d+"):
        clone.read(0)


def _first_sample_in_a_child(dataset, conn) -> None:
    try:
        dataset[0]
        conn.send("read")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        conn.send(f"{type(exc).__name__}: {exc}")


def test_worker_process_sees_the_replaced_file(tmp_path):
    """What a DataLoader worker does: a forked process gets the dataset and reads from it."""
    import multiprocessing

    path = tmp_path / "data.xyz"
    write_structures(path, _structures(6, seed=1), "xyz")
    dataset = MolecularDataset(path, format="xyz", return_atoms=False, dtype=torch.float64)
    dataset[0]  # the parent has its file open
    write_structures(path, _structures(6, seed=2), "xyz", overwrite=True)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    worker = ctx.Process(target=_first_sample_in_a_child, args=(dataset, child))
    worker.start()
    message = parent.recv()
    worker.join()
    assert message.startswith("DataFormatError: ") and "file changed since the dataset was opened" in message


def test_sqlite_rows_added_without_touching_the_main_file(tmp_path):
    """WAL mode: a commit goes to the -wal file; the main file keeps its size and time, so only
    the row count and largest id show the change."""
    path = tmp_path / "data.db"
    write_structures(path, _structures(3, seed=1), "ase")
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA journal_mode=WAL")  # stays set in the file
    con.close()
    reader = open_reader(path)
    worker_copy = pickle.dumps(reader)
    reader.close()
    con = sqlite3.connect(path)
    columns = [r[1] for r in con.execute("PRAGMA table_info(systems)") if r[1] not in ("id", "unique_id")]
    con.execute(f"INSERT INTO systems (unique_id, {', '.join(columns)}) "
                f"SELECT 'copy', {', '.join(columns)} FROM systems WHERE id=1")
    con.commit()  # stays in the -wal file while this connection is open
    try:
        clone = pickle.loads(worker_copy)
        clone.file_identity = ()  # the main file's stat may not change in WAL mode: test the row check alone
        with pytest.raises(DataFormatError, match=r"data\.db: database changed since the dataset was opened "
                                                  r"\(3 rows up to id 3 then, 4 up to id 4 now\)"):
            clone.read(0)
    finally:
        con.close()
