"""The command line on bad input (issue 12, items 9 and 10): one ``Error:`` line naming the file,
structure and key, exit code 2 (``validate`` keeps 1 for "problems found"), no traceback, no
password."""

from __future__ import annotations

import sqlite3

import pytest
from ase.db import connect
from click.testing import CliRunner

from conftest import emt_structures, write_guide_hdf5
from mlff_distiller.cli import cli


def invoke(*args):
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [str(a) for a in args], prog_name="mlff-distiller")
    return result


def _one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def bad_blob_db(tmp_path):
    path = tmp_path / "blob.db"
    with connect(path) as db:
        for atoms in emt_structures(3):
            db.write(atoms)
    con = sqlite3.connect(path)
    con.execute("UPDATE systems SET forces = X'0102' WHERE id=2")
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("command", ["stats", "convert"])
def test_corrupt_row_is_one_error_line(bad_blob_db, tmp_path, command):
    args = [command, bad_blob_db] + ([tmp_path / "out.xyz"] if command == "convert" else [])
    _one_error_line(invoke(*args), "blob.db", "structure 1", "key 'forces'")


def test_corrupt_hdf5_is_one_error_line(tmp_path):
    path = tmp_path / "flipped.h5"
    write_guide_hdf5(path, emt_structures(3))
    with open(path, "r+b") as f:  # zero the object header region of the file
        f.seek(800)
        f.write(bytes(600))
    _one_error_line(invoke("stats", path), "flipped.h5")


def test_unexpected_exception_is_one_line_with_exit_2(tmp_path, monkeypatch):
    """A crash that is no known user error prints one line (exit 2), not a traceback with the
    exit code 1 that validate uses for "problems found"."""
    from mlff_distiller.data.readers.xyz import XyzReader

    path = tmp_path / "ok.xyz"
    from ase.io import write

    write(path, emt_structures(2))

    def broken(self, index):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(XyzReader, "read", broken)
    line = _one_error_line(invoke("stats", path), "unexpected RuntimeError: something inside broke",
                           "MLFF_DISTILLER_DEBUG=1")
    assert "bug" in line


@pytest.mark.parametrize("url", ["POSTGRESQL://user:s3cret@127.0.0.1:1/db",
                                 "postgresql+psycopg2://user:s3cret@127.0.0.1:1/db",
                                 "postgresql://user:s3cret/PW@127.0.0.1:1/db"])
def test_passwords_never_printed(url):
    pytest.importorskip("psycopg2")
    result = invoke("stats", url)
    _one_error_line(result, "127.0.0.1")
    assert "s3cret" not in result.output and "PW" not in result.output

