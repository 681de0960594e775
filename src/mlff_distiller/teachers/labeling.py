"""``label_file``: label every structure of a file with a teacher, resumably, on 1..N processes or Ray.

Structures keep their input order for any number of workers or engine, and every output structure
records its input index as the provenance key ``source_index`` (int): structure i of OUT is structure
``source_index[i]`` of IN — the same i when no structure failed. A structure the teacher fails on is
left out of the output (an unlabeled row would poison a training set) and listed with its input index
and error in ``OUT.failures.json``; the run goes on and the summary counts it. Progress is checkpointed
in a journal beside the output (see ``journal.py``): after ``kill -9`` at any moment, the same command
resumes and produces the same file as an uninterrupted run, with no structure labeled twice or lost. The
output file records the teacher (``info()``) and the labeling settings in its metadata.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .worker import LabelSettings, task_item

#: how often (seconds of work) a chunk is checkpointed when ``chunk_size`` is not given
CHECKPOINT_SECONDS = 10.0


@dataclass
class LabelSummary:
    """What a ``label_file`` run did."""

    input: str
    output: str
    total: int  # structures in the input
    labeled: int  # structures in the output
    failed: int  # structures the teacher failed on (in ``failures_path``)
    resumed: int  # structures already done by an interrupted run
    seconds: float  # wall time of this call
    teacher_seconds: float  # time spent inside the workers' labeling calls (summed over workers)
    failures_path: Optional[str] = None
    failures: list = field(default_factory=list)
    teacher: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("input", "output", "total", "labeled", "failed", "resumed", "seconds",
                                               "teacher_seconds", "failures_path", "failures", "teacher")}


def _input_identity(path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _teacher_spec(teacher, options: dict, workers: int, engine: str):
    """(Teacher for this process, what workers rebuild it from)."""
    from .base import Teacher
    from .registry import as_teacher

    t = as_teacher(teacher, **options)
    if engine == "local" and workers == 1:
        return t, t
    if type(t) is Teacher:
        if not t.rebuildable:
            raise ValueError("a teacher made from a calculator instance labels in this process only (workers=1, "
                             "engine 'local'); pass a teacher name or 'module:Class' for workers or Ray")
        return t, (t.name, t.options)
    try:  # a Teacher subclass (e.g. with an autograd hvp) travels as itself when it pickles
        pickle.dumps(t)
    except Exception as exc:
        raise ValueError(f"teacher {t.name!r} ({type(t).__name__}) cannot be sent to worker processes ({exc}); "
                         "use workers=1 or make it picklable") from None
    return t, t


def label_file(
    src,
    dst,
    teacher="emt",
    *,
    teacher_options: Optional[dict] = None,
    hvp: int = 0,
    hvp_step: Optional[float] = None,
    hessian: bool = False,
    hvp_method: str = "auto",
    seed: int = 0,
    reuse_labels: bool = False,
    workers: int = 1,
    engine: str = "local",
    address: Optional[str] = None,
    device: str = "cpu",
    threads: Optional[int] = 1,
    chunk_size: Optional[int] = None,
    task_size: Optional[int] = None,
    format: Optional[str] = None,
    input_format: Optional[str] = None,
    overwrite: bool = False,
    restart: bool = False,
    progress: Optional[bool] = None,
    reader_options: Optional[dict] = None,
) -> LabelSummary:
    """Label every structure of ``src`` with ``teacher`` into ``dst``; returns a ``LabelSummary``.

    Structure i of ``dst`` is structure ``source_index`` (its ``extras["source_index"]``) of ``src``: the
    same i when nothing failed; a failed structure is left out and listed, with its input index, in
    ``dst.failures.json``.

    teacher:        a name (``get_teacher``), a Teacher, or an ASE calculator instance (workers=1 only)
    teacher_options: keyword options for a teacher name (``device`` is added for ``device="cuda"``)
    hvp, hvp_step, hessian, hvp_method: Hessian-vector products (see ``label_structure``)
    seed:           run seed of the HVP directions (structure i uses ``structure_rng(seed, i)``)
    reuse_labels:   keep the energy/forces(/stress, per-atom energies) an input structure already carries
                    (the teacher's own MD/relaxation call kept by ``sample``) and compute only what is missing
                    (HVPs); structures without them are labeled in full. The input file's metadata, when it
                    names a teacher, must name this one.
    workers:        processes (engine "local") or actors (engine "ray"), each holding one teacher
    address:        Ray cluster address (``"auto"``); a local Ray instance when None
    device:         "cpu" or "cuda" (Ray actors then ask for a GPU each)
    threads:        torch / OpenMP threads per worker (None: leave as is)
    chunk_size:     structures per checkpoint (default: about ``CHECKPOINT_SECONDS`` of work)
    task_size:      structures per task sent to a worker (default: grows to about 0.2 s of work)
    format:         output format (from ``dst``'s suffix when None); input_format likewise for ``src``
    overwrite:      replace an existing ``dst``; restart: discard an interrupted run's journal
    progress:       a tqdm bar with structures/s and ETA (None: only on a terminal)

    Raises FileExistsError (``dst`` exists), ValueError (bad settings, or an interrupted run with other
    settings), BlockingIOError (another process labels into ``dst``), MissingExtraError (optional teacher
    package not installed).
    """
    from .journal import Journal

    t_start = time.perf_counter()
    src, dst = os.fspath(src), Path(dst)
    for name, value, low in (("workers", workers, 1), ("hvp", hvp, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    if chunk_size is not None and chunk_size < 1 or task_size is not None and task_size < 1:
        raise ValueError("chunk_size and task_size must be >= 1")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    options = dict(teacher_options or {})
    if device != "cpu":
        options.setdefault("device", device)
    local_teacher, spec = _teacher_spec(teacher, options, workers, engine)
    if device != "cpu" and device.split(":")[0] not in local_teacher.devices:
        raise ValueError(f"teacher {local_teacher.name!r} runs on {', '.join(local_teacher.devices)} only, not {device!r}")
    step = hvp_step if hvp_step is not None else (local_teacher.default_hvp_step if (hvp or hessian) else None)
    settings = LabelSettings(hvp=int(hvp), hvp_step=step, hessian=bool(hessian), hvp_method=hvp_method, seed=int(seed),
                             reuse_labels=bool(reuse_labels))
    if hvp and hessian:
        raise ValueError("pass either hvp=K or hessian=True, not both")
    if hvp_method not in ("auto", "fd", "autograd"):
        raise ValueError(f"hvp_method must be 'auto', 'fd' or 'autograd', got {hvp_method!r}")

    from ..data.readers import guess_format, normalize_format

    out_format = normalize_format(format) if format else guess_format(dst)
    journal = Journal(dst)
    if restart and journal.path.exists():
        journal.lock()
        journal.remove()
    if (dst.exists() or dst.is_symlink()) and not (overwrite or journal.exists()):
        raise FileExistsError(f"{dst} already exists; pass overwrite=True (--overwrite) to replace it")
    if not dst.parent.is_dir():
        raise FileNotFoundError(2, "no such directory", str(dst.parent))

    try:
        return _label(src, dst, journal, local_teacher, spec, settings, out_format, engine, workers, threads, address,
                      device, chunk_size, task_size, progress, input_format, reader_options, t_start)
    finally:
        journal.unlock()  # a failed run keeps its journal (rerun to resume) but never its lock


def _label(src, dst, journal, local_teacher, spec, settings, out_format, engine, workers, threads, address, device,
           chunk_size, task_size, progress, input_format, reader_options, t_start) -> "LabelSummary":
    from ..data.readers import open_reader
    from ..data.writers import write_structures

    reuse_labels = settings.reuse_labels
    resuming = journal.exists()
    reader = open_reader(src, input_format, **(reader_options or {}))
    try:
        total = len(reader)
        source_teacher = (getattr(reader, "metadata", None) or {}).get("teacher")
        if reuse_labels and source_teacher is not None and source_teacher != local_teacher.info():
            raise ValueError(f"{src}: reuse_labels: its labels come from teacher {source_teacher.get('name')!r} "
                             f"({source_teacher.get('options')}), not {local_teacher.name!r} "
                             f"({local_teacher.options}); label without reuse_labels")
        run = {
            "input": _input_identity(src) if os.path.exists(src) else {"path": src},
            "input_format": reader.format_name,
            "num_structures": total,
            "teacher": local_teacher.info(),
            "labeling": settings.as_dict(),
            "output_format": out_format,
        }
        if resuming:
            journal.lock()
            before = journal.settings()
            if before != run:
                changed = sorted(k for k in set(before or {}) | set(run) if (before or {}).get(k) != run.get(k))
                raise ValueError(
                    f"{dst}: an interrupted labeling run with other settings ({', '.join(changed)} differ) is in "
                    f"{journal.path}; rerun it with the same settings to resume, or pass restart=True (--restart)"
                )
            journal.clean_partials()
        else:
            journal.create(run)
        done = journal.done_indices()
        resumed = len(done)
        todo = [i for i in range(total) if i not in done]
        teacher_seconds = 0.0
        if todo:
            teacher_seconds = _run(reader, todo, journal, local_teacher, spec, settings, engine, workers, threads,
                                   address, device, chunk_size, task_size, progress, total, resumed)
    finally:
        reader.close()

    failures = journal.failures()
    metadata = {"teacher": local_teacher.info(), "labeling": settings.as_dict(), "source": os.path.basename(src)}
    count = write_structures(dst, journal.iter_structures(), out_format, overwrite=True, metadata=metadata)
    failures_path = Path(f"{dst}.failures.json")
    if failures:
        import json

        from ..data.publish import write_atomic

        write_atomic(failures_path, json.dumps({"input": src, "output": str(dst), "teacher": local_teacher.info(),
                                                "failed": failures}, indent=1))
    elif failures_path.exists():
        failures_path.unlink()
    journal.remove()
    return LabelSummary(
        input=src, output=str(dst), total=total, labeled=count, failed=len(failures), resumed=resumed,
        seconds=time.perf_counter() - t_start, teacher_seconds=teacher_seconds,
        failures_path=str(failures_path) if failures else None, failures=failures, teacher=local_teacher.info(),
    )


def _run(reader, todo, journal, local_teacher, spec, settings, engine, workers, threads, address, device,
         chunk_size, task_size, progress, total, resumed) -> float:
    """Label the input indices ``todo`` (sorted) into journal chunks; returns the summed labeling time."""
    from tqdm.auto import tqdm

    from .engines import make_engine

    runner = make_engine(engine, local_teacher if spec is local_teacher else spec, settings, workers=workers,
                         threads=threads, address=address, device=device)
    bar = tqdm(total=total, initial=resumed, desc="label", unit="structure", dynamic_ncols=True, smoothing=0.05,
               disable=None if progress is None else not progress, leave=False)
    labeling_seconds, labeled = 0.0, 0
    try:
        results: dict[int, object] = {}
        position = 0  # next position in todo to submit
        current: Optional[_Chunk] = None  # the chunk being filled
        closed: list[_Chunk] = []  # chunks that take no more indices, waiting for their results
        in_flight = 0
        while position < len(todo) or in_flight:
            per_worker = labeled / labeling_seconds if labeling_seconds > 0 else None  # structures/s
            rate = per_worker * workers if per_worker else None
            while position < len(todo) and in_flight < runner.capacity:
                size = task_size or _auto_size(per_worker, 0.2, 64)
                task_indices = _take_run(todo, position, size)
                limit = chunk_size or _auto_size(rate, CHECKPOINT_SECONDS, 4096, first=16)
                for i in task_indices:  # chunks hold consecutive input indices
                    if current is None or i != current.stop or len(current.indices) >= limit:
                        if current is not None:
                            closed.append(current)
                        current = _Chunk(i)
                    current.add(i)
                structures = reader.read_many(task_indices)
                runner.submit([task_item(i, s, settings.reuse_labels) for i, s in zip(task_indices, structures)])
                position += len(task_indices)
                in_flight += 1
            if position >= len(todo) and current is not None:
                closed.append(current)
                current = None
            for out, seconds in runner.wait():
                in_flight -= 1
                labeling_seconds += seconds
                for index, result in out:
                    results[index] = result
                labeled += len(out)
                bar.update(len(out))
            for chunk in [c for c in closed if all(i in results for i in c.indices)]:
                items = [results.pop(i) for i in chunk.indices]
                journal.write_chunk(chunk.start, chunk.stop, [r for r in items if not isinstance(r, dict)],
                                    [r for r in items if isinstance(r, dict)])
                closed.remove(chunk)
        return labeling_seconds
    finally:
        bar.close()
        runner.close()


class _Chunk:
    """Consecutive input indices ``start..stop-1`` checkpointed together."""

    def __init__(self, start: int) -> None:
        self.start = self.stop = start
        self.indices: list[int] = []

    def add(self, index: int) -> None:
        self.indices.append(index)
        self.stop = index + 1


def _auto_size(rate: Optional[float], seconds: float, cap: int, first: int = 1) -> int:
    """Structures that take about ``seconds`` at ``rate`` structures/s (``first`` before any rate is known)."""
    if not rate:
        return first
    return int(min(cap, max(1, math.floor(rate * seconds))))


def _take_run(todo: list[int], position: int, size: int) -> list[int]:
    """Up to ``size`` todo indices from ``position`` that are consecutive input indices."""
    out = [todo[position]]
    while len(out) < size and position + len(out) < len(todo) and todo[position + len(out)] == out[-1] + 1:
        out.append(todo[position + len(out)])
    return out
