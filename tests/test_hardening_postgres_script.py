"""scripts/start_postgres.sh stops what test sessions start (issue 12, item 12): README's test
command used to leave the loopback PostgreSQL server it started running after pytest ended.

A private cluster folder is used, so a server of another session is never touched. Skips when
no PostgreSQL server can start here (the script says why)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "start_postgres.sh"


def _script(*args, env):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


def _running(env) -> bool:
    return _script("status", env=env).returncode == 0


@pytest.fixture
def cluster():
    # directly under /tmp: as root the server runs as `postgres`, which cannot enter pytest's 0700 tmp dirs
    folder = Path("/tmp") / f"mlff-pgtest-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MLFF_PG_DIR": str(folder)}
    env.pop("MLFF_PG_CLIENT", None)
    yield folder, env
    _script("stop", env=env)
    shutil.rmtree(folder, ignore_errors=True)


def test_last_client_stops_the_server_a_client_started(cluster):
    folder, env = cluster
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = dead.stdout.strip()  # a process that has exited: a client that never released
    first = _script(env={**env, "MLFF_PG_CLIENT": str(os.getpid())})
    if first.returncode != 0:
        pytest.skip(f"no PostgreSQL server could start: {first.stderr.strip().splitlines()[-1:]}")
    assert first.stdout.strip().startswith("postgresql://") and _running(env)
    assert _script(env={**env, "MLFF_PG_CLIENT": dead_pid}).returncode == 0  # reuses the server
    assert (folder / "clients" / dead_pid).exists()

    # another live client (this test process's parent stands in for a second pytest session)
    other = str(os.getppid())
    assert _script(env={**env, "MLFF_PG_CLIENT": other}).returncode == 0
    _script("release", str(os.getpid()), env=env)
    assert _running(env), "stopped while another session still uses it"
    _script("release", other, env=env)
    assert not _running(env), "the last client left the server it started running"
    assert not (folder / "clients" / dead_pid).exists()  # the dead client was forgotten

    # a server started by hand (or by .ci/run: no MLFF_PG_CLIENT) is never stopped by clients
    assert _script(env=env).returncode == 0 and _running(env)
    assert _script(env={**env, "MLFF_PG_CLIENT": str(os.getpid())}).returncode == 0
    _script("release", str(os.getpid()), env=env)
    assert _running(env)
