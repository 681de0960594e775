"""ASE databases (issue 12, items 9 and 10): a corrupt SQLite file or row is an error naming the
file, structure and column; a database password never reaches a message, a repr or an attribute
a logger would record."""

from __future__ import annotations

import json
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from ase.db import connect

from conftest import emt_structures
from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.readers import guess_format, open_reader
from mlff_distiller.data.readers.ase_db import AseDbReader, mask_password
from mlff_distiller.data.readers.ase_db.connection import DbLocation, secret_parts


@pytest.fixture(scope="module")
def db_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "base.db"
    with connect(path) as db:
        for atoms in emt_structures(4):
            db.write(atoms, data={"extra": np.arange(3.0)}, tag="t")
    return path


def _copy_with(db_file: Path, tmp_path: Path, sql: str, params=()) -> Path:
    path = tmp_path / "bad.db"
    path.write_bytes(db_file.read_bytes())
    con = sqlite3.connect(path)
    con.execute(sql, params)
    con.commit()
    con.close()
    return path


# -- item 9: corrupt rows and files ----------------------------------------------------------


@pytest.mark.parametrize(
    "column,sql",
    [
        ("forces", "UPDATE systems SET forces = X'0102' WHERE id=2"),
        ("stress", "UPDATE systems SET stress = X'0000' WHERE id=2"),
        ("energy", "UPDATE systems SET energy = X'00' WHERE id=2"),
        ("pbc", "UPDATE systems SET pbc = 'x' WHERE id=2"),
        ("pbc", "UPDATE systems SET pbc = X'01' WHERE id=2"),
        ("positions", "UPDATE systems SET positions = NULL WHERE id=2"),
        ("positions", "UPDATE systems SET positions = X'00' WHERE id=2"),
        ("cell", "UPDATE systems SET cell = 'abc' WHERE id=2"),
    ],
)
def test_bad_column_values_on_the_sqlite_fast_path(db_file, tmp_path, column, sql):
    """These raised bare ValueError/TypeError/AttributeError from numpy without the file."""
    path = _copy_with(db_file, tmp_path, sql)
    reader = AseDbReader(path)
    reader.read(0)
    with pytest.raises(DataFormatError, match=rf"bad\.db, structure 1, key '{column}': row id 2"):
        reader.read(1)
    with pytest.raises(DataFormatError, match=rf"bad\.db, structure 1, key '{column}'"):
        reader.read_many([0, 1])


def test_corrupt_schema_text(db_file, tmp_path):
    """A table name that is not UTF-8 raised UnicodeDecodeError."""
    path = tmp_path / "bad.db"
    path.write_bytes(db_file.read_bytes())
    con = sqlite3.connect(path)
    con.execute("PRAGMA writable_schema=ON")
    con.execute("UPDATE sqlite_master SET name = CAST(X'ff6b657973' AS TEXT) WHERE name='keys'")
    con.commit()
    con.close()
    with pytest.raises(DataFormatError, match=r"bad\.db: not a readable SQLite database \(UnicodeDecodeError"):
        AseDbReader(path)


def test_byte_flipped_and_truncated_databases_fail_with_the_file_named(db_file, tmp_path):
    data = db_file.read_bytes()
    rng = np.random.default_rng(3)
    refused, unclear = 0, []
    for k in range(60):
        if k % 6 == 0:
            damaged = data[: int(rng.integers(100, len(data)))]
        else:
            buf = bytearray(data)
            for _ in range(int(rng.integers(1, 4))):
                buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
            damaged = bytes(buf)
        path = tmp_path / f"flip_{k}.db"
        path.write_bytes(damaged)
        try:
            reader = AseDbReader(path)
            for i in range(len(reader)):
                reader.read(i)
                reader.label_keys(i)
            reader.read_many(range(len(reader)))
            reader.close()
        except (ValueError, KeyError, IndexError, OSError) as exc:
            refused += 1
            if str(path) not in str(exc):
                unclear.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001
            unclear.append(f"{type(exc).__name__}: {exc}")
    assert not unclear, "\n".join(unclear[:10])
    assert refused >= 5


# -- item 10: passwords ----------------------------------------------------------------------

SECRET = "s3cret/PW"
URLS = [
    f"postgresql://user:{SECRET}@127.0.0.1:1/db",  # '/' in the password
    "postgresql://user:p@ss/s3cret@127.0.0.1:1/db",  # '@' and '/'
    "POSTGRESQL://user:s3cret@127.0.0.1:1/db",  # upper-case scheme
    "postgresql+psycopg2://user:s3cret@127.0.0.1:1/db?sslmode=disable",  # +driver
    "postgresql://127.0.0.1:1/db?user=u&password=s3cret",  # query parameter
    "postgresql://user:s3c%2Fret@127.0.0.1:1/db",  # percent-encoded
]


def _secrets(url: str) -> list[str]:
    return ["s3cret", "s3c%2Fret", "s3c/ret", "p@ss"] if "s3c" in url else []


@pytest.mark.parametrize("url", URLS)
def test_mask_password_hides_every_password(url):
    shown = mask_password(url)
    assert not any(s in shown for s in _secrets(url)), shown
    assert "127.0.0.1:1/db" in shown and "***" in shown
    assert secret_parts(url)


def test_mask_password_keeps_what_is_not_secret():
    assert mask_password("postgresql://u:p@h:1/d") == "postgresql://u:***@h:1/d"
    assert mask_password("postgres://u@h/d") == "postgres://u@h/d"
    assert mask_password(f"postgresql://user:{SECRET}@host/db") == "postgresql://user:***@host/db"
    assert mask_password("POSTGRESQL+psycopg2://u:x@h/d") == "POSTGRESQL+psycopg2://u:***@h/d"
    assert mask_password("/data/my:file@x.db") == "/data/my:file@x.db"


@pytest.mark.parametrize("url", URLS)
def test_connection_errors_never_show_the_password(url):
    """Port 1 refuses the connection: the error names the database with its password hidden,
    also for upper-case schemes and +driver URLs opened with format=None (they used to fail in
    guess_format with the whole URL in the message)."""
    pytest.importorskip("psycopg2")
    assert guess_format(url) == "ase"
    with pytest.raises(Exception) as info:
        open_reader(url)
    text = f"{info.value!r} {info.value} {info.value.__cause__!r} {info.value.__context__!r}"
    assert not any(s in text for s in _secrets(url)), text
    assert "127.0.0.1" in str(info.value)
    if "/PW" in url or "p@ss" in url:  # libpq would split it and connect to a host named after it
        assert "must percent-encode" in str(info.value)


@pytest.mark.parametrize("url", URLS[2:])
def test_the_password_is_in_no_attribute(db_file, url, monkeypatch):
    """reader.path, dataset.data_path, vars() and reprs hold the URL with *** (hyperparameter
    loggers record them); the reader still reconnects in a worker process (pickle)."""
    import ase.db
    import torch

    from mlff_distiller.data.dataset import MolecularDataset

    opened = []
    real_connect = ase.db.connect

    def fake_connect(name, *args, **kwargs):  # the URL's database is this SQLite file
        if "://" in str(name):
            opened.append(name)
            return real_connect(db_file)
        return real_connect(name, *args, **kwargs)

    monkeypatch.setattr(ase.db, "connect", fake_connect)
    dataset = MolecularDataset(url, format="ase", return_atoms=False, dtype=torch.float64)
    reader = dataset.reader
    assert opened and opened[0].startswith(("postgresql://", "postgres://"))  # what ASE recognises
    shown = mask_password(url)
    assert reader.path == reader.display_path == dataset.data_path == shown
    logged = json.dumps({"dataset": vars(dataset), "reader": vars(reader), "db": vars(reader._db)}, default=repr)
    logged += repr(dataset) + repr(reader) + str(vars(reader._db))
    assert not any(s in logged for s in _secrets(url)), logged
    clone = pickle.loads(pickle.dumps(reader))  # what a DataLoader worker receives
    assert np.array_equal(clone.read(1).positions, reader.read(1).positions)
    assert len(opened) >= 2


def test_db_location_attributes_of_a_local_file(db_file):
    location = DbLocation(str(db_file))
    assert location.location == str(db_file.resolve()) and location.display == str(db_file)
