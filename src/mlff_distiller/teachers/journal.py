"""The labeling journal: a checkpoint directory that makes ``label_file`` resumable after ``kill -9``.

Beside the output ``OUT`` lives ``.OUT.labeling/`` holding

- ``run.json``: the settings of the run (input identity, teacher info, HVP settings, seed, format);
  a rerun resumes only with the same settings;
- ``chunk-<start>-<stop>.h5``: the labeled structures of input indices ``start..stop-1`` (a packed file
  written by the data layer's writer, which writes under a temporary name and renames: a chunk file
  exists completely or not at all) and ``chunk-<start>-<stop>.failures.json`` (the structures of that
  range the teacher failed on, written before the chunk file);
- ``lock``: held (``flock``) while a process labels into ``OUT``; the OS drops it when the process dies.

Nothing else is state: a killed run leaves complete chunks and at worst temporary files, which the next
run removes. When every input index is in a chunk, the chunks are concatenated in index order into
``OUT`` (again written under a temporary name) and the journal is deleted.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Iterable, Optional

from ..data.publish import write_atomic

_CHUNK = re.compile(r"^chunk-(\d{9})-(\d{9})\.h5$")


def journal_dir(output: Path) -> Path:
    return output.with_name(f".{output.name}.labeling")


class Journal:
    """The checkpoint directory of one labeling run into ``output``."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = journal_dir(self.output)
        self._lock_fh = None

    # -- lifecycle ------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / "run.json").is_file()

    def settings(self) -> Optional[dict]:
        try:
            return json.loads((self.path / "run.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def create(self, settings: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        write_atomic(self.path / "run.json", json.dumps(settings, indent=1, sort_keys=True))

    def lock(self) -> None:
        """Hold the journal's lock, or BlockingIOError when another live process holds it."""
        import errno
        import fcntl

        if self._lock_fh is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / "lock", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise BlockingIOError(errno.EAGAIN, "another process is labeling into it", str(self.output)) from None
        self._lock_fh = fh

    def unlock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def remove(self) -> None:
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)

    def clean_partials(self) -> None:
        """Remove temporary files a killed process left (anything not a finished chunk or run.json)."""
        for p in self.path.iterdir():
            if p.name in ("run.json", "lock") or _CHUNK.match(p.name) or p.name.endswith(".failures.json"):
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    # -- chunks -----------------------------------------------------------------------------------
    def chunks(self) -> list[tuple[int, int]]:
        """The finished chunks as (start, stop) ranges, sorted."""
        if not self.path.is_dir():
            return []
        out = []
        for p in self.path.iterdir():
            m = _CHUNK.match(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2))))
        return sorted(out)

    def chunk_path(self, start: int, stop: int) -> Path:
        return self.path / f"chunk-{start:09d}-{stop:09d}.h5"

    def failures_path(self, start: int, stop: int) -> Path:
        return self.path / f"chunk-{start:09d}-{stop:09d}.failures.json"

    def done_indices(self) -> set[int]:
        done: set[int] = set()
        for start, stop in self.chunks():
            done.update(range(start, stop))
        return done

    def write_chunk(self, start: int, stop: int, structures: list, failures: list[dict]) -> None:
        """Store the results of input indices ``start..stop-1``: failures first, then the structures."""
        from ..data.writers import write_structures

        write_atomic(self.failures_path(start, stop), json.dumps(failures, sort_keys=True))
        write_structures(self.chunk_path(start, stop), structures, "packed", overwrite=True)

    def failures(self) -> list[dict]:
        out: list[dict] = []
        for start, stop in self.chunks():
            path = self.failures_path(start, stop)
            if path.is_file():
                out.extend(json.loads(path.read_text(encoding="utf-8")))
        return sorted(out, key=lambda f: f["index"])

    def iter_structures(self) -> Iterable:
        """Every stored structure, in input order (chunk by chunk)."""
        from ..data.readers import open_reader

        for start, stop in self.chunks():
            reader = open_reader(self.chunk_path(start, stop), "packed")
            try:
                n = len(reader)
                for a in range(0, n, 256):
                    yield from reader.read_many(range(a, min(a + 256, n)))
            finally:
                reader.close()
