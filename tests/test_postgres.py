"""An ASE database on a real PostgreSQL server, read back exactly as ASE wrote and reads it.

Server: ``MLFF_TEST_POSTGRES_URL`` (a role allowed to CREATE DATABASE), else one started on
127.0.0.1 by ``scripts/start_postgres.sh``; the tests skip, with the reason, only when no server
can start. Every run writes into a database of its own, dropped at the end.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import emt_structures

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "start_postgres.sh"


def _server_url() -> str:
    url = os.environ.get("MLFF_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no PostgreSQL server: {SCRIPT.name} could not run ({exc})")
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        pytest.skip(f"no PostgreSQL server could start ({SCRIPT.name} exit {proc.returncode}: {tail})")
    return proc.stdout.strip().splitlines()[-1]


def _with_database(url: str, name: str) -> str:
    head, _, tail = url.rpartition("/")
    return f"{head}/{name}{'?' + tail.split('?', 1)[1] if '?' in tail else ''}"


def _password(url: str) -> str:
    userinfo = url.split("://", 1)[1].partition("/")[0].rpartition("@")[0]
    return userinfo.partition(":")[2]


@pytest.fixture(scope="module")
def pg_url():
    """URL of a fresh, empty database on the server (dropped afterwards)."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 (pip install '.[test]') is needed to talk to PostgreSQL")
    url = _server_url()
    name = f"mlff_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error as exc:
        admin.close()
        pytest.skip(f"the PostgreSQL role cannot create a scratch database ({type(exc).__name__}); "
                    "the tests never write into an existing database")
    try:
        yield _with_database(url, name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def written(pg_url):
    """10 EMT-labeled structures written with ASE (stress on the periodic ones), and the URL."""
    from ase.db import connect

    structures = emt_structures(10, seed=7)
    with connect(pg_url) as db:
        for k, atoms in enumerate(structures):
            db.write(atoms, tag=k)
    return structures, pg_url


def _ase_reference(url):
    """What ASE itself reads back, row by row in id order."""
    from ase.db import connect

    return list(connect(url).select(sort="id"))


def _check_sample(sample: dict, row, atoms_written) -> None:
    from ase.stress import voigt_6_to_full_3x3_stress

    atoms = row.toatoms()
    assert sample["positions"].dtype == torch.float64
    np.testing.assert_array_equal(sample["positions"].numpy(), atoms.positions)
    np.testing.assert_array_equal(sample["positions"].numpy(), atoms_written.positions)  # bit for bit
    np.testing.assert_array_equal(sample["species"].numpy(), atoms.numbers)
    np.testing.assert_array_equal(sample["cell"].numpy(), atoms.cell.array)
    np.testing.assert_array_equal(sample["pbc"].numpy(), atoms.pbc)
    assert sample["energy"].item() == row.energy == atoms_written.get_potential_energy()
    np.testing.assert_array_equal(sample["forces"].numpy(), row.forces)
    np.testing.assert_array_equal(sample["forces"].numpy(), atoms_written.get_forces())
    if atoms.pbc.all():
        np.testing.assert_array_equal(sample["stress"].numpy(), voigt_6_to_full_3x3_stress(row.stress))
    else:
        assert "stress" not in sample and row.get("stress") is None


def test_reads_back_what_ase_wrote(written):
    from mlff_distiller.data import MolecularDataset

    structures, url = written
    dataset = MolecularDataset(url, format="ase", dtype=torch.float64)
    rows = _ase_reference(url)
    assert len(dataset) == len(rows) == len(structures)
    np.testing.assert_array_equal(dataset.natoms_array(), [row.natoms for row in rows])
    for i, (row, atoms) in enumerate(zip(rows, structures)):
        sample = dataset[i]
        _check_sample(sample, row, atoms)
        assert int(sample["idx"]) == i
        # the Atoms of the sample carry the same labels through their calculator
        assert sample["atoms"].get_potential_energy() == row.energy
    stats = dataset.get_statistics()
    energies = np.array([row.energy for row in rows])
    assert stats["num_samples"] == len(rows)
    assert stats["energy_mean"] == pytest.approx(energies.mean(), rel=1e-12)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_the_server(written, context):
    from mlff_distiller.data import MolecularDataset

    structures, url = written
    dataset = MolecularDataset(url, format="ase", dtype=torch.float64, return_atoms=False)
    rows = _ase_reference(url)
    loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2, collate_fn=list,
                        multiprocessing_context=context, generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        for sample in batch:
            i = int(sample["idx"])
            seen.append(i)
            _check_sample(sample, rows[i], structures[i])
    assert sorted(seen) == list(range(len(rows)))
    # the main process still reads after the workers have come and gone
    _check_sample(dataset[4], rows[4], structures[4])


def test_molecular_dataloader_batches(written):
    from mlff_distiller.data import MolecularDataLoader, MolecularDataset

    structures, url = written
    dataset = MolecularDataset(url, format="ase", dtype=torch.float64, return_atoms=False)
    loader = MolecularDataLoader(dataset, batch_size=4, shuffle=False, num_workers=2, use_padding=False)
    energies = torch.cat([batch["energy"] for batch in loader])
    expected = torch.tensor([row.energy for row in _ase_reference(url)], dtype=torch.float64)
    assert torch.equal(energies, expected)


def test_password_never_shown(written, tmp_path):
    from mlff_distiller.data import MolecularDataset
    from mlff_distiller.data.readers.multi import open_many

    _, url = written
    secret = _password(url)
    assert secret
    dataset = MolecularDataset(url, format="ase")
    shown = [repr(dataset), repr(dataset.reader), str(getattr(dataset.reader, "display_path", ""))]
    assert "***" in shown[0]
    errors = []
    for action in (
        lambda: dataset.reader.read(len(dataset)),
        lambda: MolecularDataset(url, format="ase", energy_key="no_such_energy"),
        lambda: MolecularDataset(_with_database(url, "no_such_database"), format="ase"),
        lambda: MolecularDataset(url.replace(f":{secret}@", ":wrong-password@"), format="ase"),
    ):
        with pytest.raises(Exception) as info:
            action()
        errors.append(f"{type(info.value).__name__}: {info.value}")
        if info.value.__cause__ is not None:
            errors.append(str(info.value.__cause__))
    # many files with the database among them: the members are named without the password
    from ase.io import write

    xyz = tmp_path / "more.xyz"
    write(xyz, emt_structures(2, seed=1))
    multi = open_many([url, str(xyz)])
    assert len(multi) == len(dataset) + 2
    shown += [repr(multi), multi.display_path, " ".join(multi.paths)]
    for text in shown + errors:
        assert secret not in text, text
        assert "wrong-password" not in text, text
    assert "127.0.0.1" in errors[0], errors


def test_refused_connection_hides_password():
    """No server on the port: a ConnectionError naming the URL with the password masked."""
    import socket

    pytest.importorskip("ase_db_backends", reason="ase-db-backends (pip install '.[test]') opens postgresql URLs")
    from mlff_distiller.data import MolecularDataset

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://bob:hunter2-secret@127.0.0.1:{port}/nowhere"
    with pytest.raises(ConnectionError) as info:
        MolecularDataset(url, format="ase")
    text = str(info.value)
    assert "hunter2" not in text and f"bob:***@127.0.0.1:{port}" in text


def test_cli_never_shows_the_password(written, tmp_path):
    """Every command run on the URL (tables, JSON, messages, errors) names it with ``***``."""
    import json
    import sys

    from ase.io import read, write

    structures, url = written
    secret = _password(url)
    assert secret
    xyz = tmp_path / "more.xyz"
    write(xyz, emt_structures(2, seed=1))

    def cli(*args, rc=0) -> str:
        proc = subprocess.run([sys.executable, "-m", "mlff_distiller.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "COLUMNS": "300"})
        text = proc.stdout + proc.stderr
        assert proc.returncode == rc, text.replace(secret, "<password>")
        flat = "".join(text.split())  # a table may wrap the URL across lines
        assert secret not in text and secret not in flat, "the password is printed"
        assert "mlff:***@" in text
        return proc.stdout

    cli("stats", url)
    stats = json.loads(cli("stats", url, "--json"))
    assert stats["num_samples"] == len(structures) and stats["file"].startswith("postgresql://mlff:***@")
    both = json.loads(cli("stats", url, xyz, "--json"))  # the database and a file as one dataset
    assert both["num_samples"] == len(structures) + 2 and both["files"][1] == str(xyz)
    assert json.loads(cli("validate", url, "--json"))["num_structures"] == len(structures)
    out = tmp_path / "copy.xyz"
    assert f"Converted {len(structures)} structures" in cli("convert", url, out)
    assert len(read(out, ":")) == len(structures)
    cli("bench", url, "--workers", "0", "--epochs", "1", "--modes", "padded")
    bench = json.loads(cli("bench", url, "--workers", "0", "--epochs", "1", "--modes", "padded", "--json"))
    assert bench["num_structures"] == len(structures)
    # errors name the URL too, password hidden
    cli("stats", url, "--energy-key", "no_such_energy", rc=2)
