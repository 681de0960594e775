"""``select=`` on ASE databases (an ASE query string or a dict of key-value conditions): indices are
those of the selection in database order, equal to what ``ase.db``'s own ``select`` returns, and
``len``, statistics, packing and splits all see only the selection."""

from __future__ import annotations

import numpy as np
import pytest
from ase.db import connect

from conftest import realdata_dir
from mlff_distiller.data.dataset import MolecularDataset
from mlff_distiller.data.packed import write_packed
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.split import train_test_split

REALDATA = realdata_dir()
DB = REALDATA / "fairchem/data.db"
pytestmark = pytest.mark.skipif(not DB.is_file(), reason="../shared/realdata not present")


@pytest.mark.parametrize("select, ase_args", [
    ("natoms<10", (("natoms<10",), {})),
    ("structure=bulk", (("structure=bulk",), {})),
    ({"structure": "cluster", "cluster": "amorphous"}, ((), {"structure": "cluster", "cluster": "amorphous"})),
])
def test_selection_equals_ase_select(select, ase_args):
    rows = sorted(connect(DB).select(*ase_args[0], **ase_args[1]), key=lambda r: r.id)
    assert 0 < len(rows) < 50
    for fast in (True, False):
        reader = open_reader(DB, select=select, fast_sqlite=fast)
        assert len(reader) == len(rows)
        assert reader.row_ids.tolist() == [r.id for r in rows]
        np.testing.assert_array_equal(reader.natoms_array(), [r.natoms for r in rows])
        for i, row in enumerate(rows):
            s = reader.read(i)
            np.testing.assert_array_equal(s.positions, row.positions)
            assert s.energy == row.energy


def test_statistics_packing_and_splits_see_the_selection(tmp_path):
    rows = sorted(connect(DB).select("natoms<10"), key=lambda r: r.id)
    dataset = MolecularDataset(DB, select="natoms<10")
    stats = dataset.get_statistics()
    assert stats["num_samples"] == len(rows) == len(dataset)
    assert stats["energy_mean"] == pytest.approx(np.mean([r.energy for r in rows]), rel=1e-15)
    assert write_packed(tmp_path / "sel.h5", dataset.reader) == len(rows)
    packed = open_reader(tmp_path / "sel.h5", "packed")
    assert [packed.read(i).energy for i in range(len(packed))] == [r.energy for r in rows]
    parts = train_test_split(dataset, 0.6, 0.2, 0.2, random_seed=1)
    assert sorted(i for p in parts for i in p.indices) == list(range(len(rows)))


def test_a_bad_query_names_the_file_and_the_query():
    with pytest.raises(ValueError, match=r"data\.db: select='foo==3' is not a query ASE understands"):
        open_reader(DB, select="foo==3")
    with pytest.raises(TypeError, match="select must be"):
        open_reader(DB, select=3)


def test_select_is_an_ase_database_option_only():
    with pytest.raises(TypeError, match="'select'"):
        open_reader(REALDATA / "nequip/aspirin.xyz", select="natoms<3")
