"""Writers never destroy data (issue 12, items 2, 3, 7, 11): temporary files are created
exclusively, a file that appears while writing is never replaced, a full disk is one clear error
with nothing left behind, and leftovers of killed writers are removed by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import emt_structures
from mlff_distiller.data import publish
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.writers import write_structures

FORMATS = {"ase": "out.db", "xyz": "out.xyz", "hdf5": "out.h5", "packed": "out.h5"}


def _structures(n: int = 6) -> list[Structure]:
    out = []
    for a in emt_structures(n):
        out.append(Structure(positions=a.positions, numbers=a.numbers.astype(np.int64), cell=a.cell.array,
                             pbc=a.pbc, energy=np.float64(a.get_potential_energy()), forces=a.get_forces()))
    return out


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- item 2: temporary files are created exclusively ----------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_symlink_at_the_old_predictable_temporary_name_is_not_written_through(tmp_path, fmt):
    out = tmp_path / FORMATS[fmt]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    pid = os.getpid()
    for name in (f".{out.stem}.partial-{pid}{out.suffix}", f".{out.name}.partial-{pid}"):
        (tmp_path / name).symlink_to(victim)  # the names the writers used to open with 'w'
    write_structures(out, _structures(3), fmt)
    assert victim.read_text() == "precious"
    assert len(open_reader(out, "packed" if fmt == "packed" else None)) == 3


def test_temporary_file_is_new_and_private(tmp_path):
    out = tmp_path / "x.db"
    with publish.publish(out) as tmp:
        st = tmp.stat()
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.db.partial-")
        assert st.st_size == 0 and st.st_mode & 0o777 == 0o600
        tmp.write_text("data")
    assert out.read_text() == "data" and _listing(tmp_path) == ["x.db"]


# -- item 3: no check-then-replace ----------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_file_that_appears_while_writing_is_never_replaced(tmp_path, fmt):
    """Two runs writing one name: the one finishing second must fail, not silently replace the
    other's result (both used to print "Wrote N structures")."""
    out = tmp_path / FORMATS[fmt]

    def structures():
        for k, s in enumerate(_structures(4)):
            if k == 2:  # the other run publishes its result meanwhile
                out.write_text("the other run's result")
            yield s

    with pytest.raises(FileExistsError, match=f"{out.name} already exists"):
        write_structures(out, structures(), fmt)
    assert out.read_text() == "the other run's result"
    assert _listing(tmp_path) == [out.name]  # no partial file left either


def test_overwrite_replaces_atomically(tmp_path):
    out = tmp_path / "out.xyz"
    out.write_text("old")
    write_structures(out, _structures(2), "xyz", overwrite=True)
    assert len(open_reader(out)) == 2 and _listing(tmp_path) == ["out.xyz"]


# -- item 7: a full disk ----------------------------------------------------------------------

_LIMITED_WRITE = textwrap.dedent(
    """
    import resource, signal, sys
    sys.path.insert(0, {tests!r})
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes beyond the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    import numpy as np
    from test_hardening_writers import _structures
    from mlff_distiller.data.writers import write_structures
    many = _structures(12) * 40  # ~0.5 MB in every format: beyond the limit
    try:
        write_structures({out!r}, many, {fmt!r})
    except OSError as exc:
        print("Error:", exc)
        sys.exit(2)
    print("wrote everything")
    """
)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_file_size_limit_is_one_error_and_nothing_left(tmp_path, fmt):
    """RLIMIT_FSIZE stands in for a full disk (no root needed). The HDF5 writer used to crash
    the interpreter (exit 139, thousands of traceback lines) and leave a 20 MB partial file; the
    db writer left a -journal."""
    out = tmp_path / FORMATS[fmt]
    code = _LIMITED_WRITE.format(tests=str(Path(__file__).parent), out=str(out), fmt=fmt)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {out}: "), lines[:5]
    # SQLite reports the limit as "disk I/O error": then the message says SQLite could not write
    assert any(why in lines[0] for why in ("limit was reached", "limit (200000 bytes) would be reached",
                                           "disk is full", "SQLite could not write")), lines[0]
    assert "nothing was written" in lines[0]
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("fmt", ["ase", "xyz", "hdf5"])
def test_no_space_left_is_one_error_and_nothing_left(tmp_path, fmt, monkeypatch):
    """ENOSPC from the filesystem, simulated at the first write of structure 2."""
    import errno

    import mlff_distiller.data.writers as writers

    out = tmp_path / FORMATS[fmt]
    real = writers._finite

    def filling(structures, path, keys):
        for k, s in enumerate(real(structures, path, keys)):
            if k == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            yield s

    monkeypatch.setattr(writers, "_finite", filling)
    with pytest.raises(OSError, match=rf"{out.name}: the disk is full while writing it; nothing was written"):
        write_structures(out, _structures(4), fmt)
    assert _listing(tmp_path) == []


def test_space_guard_stops_before_the_disk_is_full(tmp_path):
    guard = publish.SpaceGuard(tmp_path / "f.h5", margin=2**62)  # more than any disk has
    with pytest.raises(OSError, match=r"f\.h5: the disk is \(nearly\) full: .* MB free"):
        guard.reserve(1)


# -- item 11: leftovers of killed writers ---------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_leftovers_of_dead_writers_are_removed_on_the_next_run(tmp_path):
    out = tmp_path / "out.db"
    host = publish._HOST
    dead, live = _dead_pid(), os.getpid()
    stale = [f".out.db.partial-{host}-{dead}-abc123", f".out.db.partial-{host}-{dead}-abc123-journal",
             f".out.partial-{dead}.db", f".out.partial-{dead}.db-journal"]
    kept = [f".out.db.partial-{host}-{live}-live12", f".out.db.partial-otherhost-{dead}-xyz789",
            ".unrelated.partial-1", "notes.txt"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    spill = tmp_path / f".out.db.spill-{host}-{dead}-q1w2e3"
    spill.mkdir()
    (spill / "positions.raw").write_bytes(b"\0" * 1000)
    write_structures(out, _structures(2), "ase")
    assert _listing(tmp_path) == sorted(kept + ["out.db"])


def test_kill_9_leftovers_are_cleaned_by_the_next_run(tmp_path):
    """A packed writer killed mid-way leaves its partial file and spill directory; the next
    write of the same name removes both."""
    out = tmp_path / "big.h5"
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_hardening_writers import _structures
        from mlff_distiller.data.packed import write_packed
        def slow():
            for s in _structures(4) * 1000:
                print("writing", flush=True)
                time.sleep(0.01)
                yield s
        write_packed({str(out)!r}, slow(), chunk=2)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(5):
            proc.stdout.readline()
        deadline = time.monotonic() + 60
        while not any(".spill-" in n for n in _listing(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    left = _listing(tmp_path)
    assert any(".partial-" in n for n in left) and any(".spill-" in n for n in left), left
    write_structures(out, _structures(2), "packed")
    assert _listing(tmp_path) == ["big.h5"]
