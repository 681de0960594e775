"""Where labeling tasks run: this process, N local worker processes, or Ray actors.

Every engine has the same small interface — ``capacity`` (how many tasks may be in flight),
``submit(task)``, ``wait() -> [(results, seconds)]`` (blocks until at least one task finished) and
``close()`` — and every worker holds one teacher loaded once (``worker.Labeler``).

- ``InProcessEngine``: one process, no IPC (``workers=1``).
- ``LocalEngine``: ``workers`` processes started with ``spawn`` (default; never forks a process that may
  hold threads or a CUDA context) or ``forkserver``; each limits torch to ``threads`` threads.
- ``RayEngine``: ``workers`` Ray actors (``num_cpus=threads``, ``num_gpus`` when ``device="cuda"``), on a
  local instance or an existing cluster (``address="auto"`` or ``"ray://host:port"``).
"""

from __future__ import annotations

import os
from typing import Optional

from .worker import LabelSettings, Labeler


class InProcessEngine:
    def __init__(self, teacher_spec, settings: LabelSettings, threads: Optional[int]) -> None:
        self.labeler = Labeler(teacher_spec, settings, threads)
        self.capacity = 1
        self._queue: list = []

    def submit(self, task: list) -> None:
        self._queue.append(task)

    def wait(self) -> list:
        return [self.labeler.label(self._queue.pop(0))] if self._queue else []

    def close(self) -> None:
        self._queue.clear()


class _ThreadEnv:
    """Environment for child processes: one OpenMP/BLAS thread each unless told otherwise."""

    NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

    def __init__(self, threads: Optional[int]) -> None:
        self.threads = threads
        self.saved: dict = {}

    def __enter__(self):
        if self.threads is not None:
            for name in self.NAMES:
                self.saved[name] = os.environ.get(name)
                os.environ[name] = str(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LocalEngine:
    def __init__(self, teacher_spec, settings: LabelSettings, workers: int, threads: Optional[int],
                 start_method: str = "spawn") -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from .worker import init_process

        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        self.capacity = 2 * workers
        with _ThreadEnv(threads):
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method),
                                            initializer=init_process, initargs=(teacher_spec, settings, threads))
            # start every worker now, so that the environment above is the one they inherit
            list(self.pool.map(_noop, range(workers)))
        self._futures: set = set()

    def submit(self, task: list) -> None:
        from .worker import run_task

        self._futures.add(self.pool.submit(run_task, task))

    def wait(self) -> list:
        from concurrent.futures import FIRST_COMPLETED, wait

        if not self._futures:
            return []
        done, self._futures = wait(self._futures, return_when=FIRST_COMPLETED)
        return [f.result() for f in done]

    def close(self) -> None:
        for f in self._futures:
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _noop(_):
    return None


class _Actor:
    """A Ray actor holding one Labeler (the class is wrapped by ``ray.remote`` at run time)."""

    def __init__(self, teacher_spec, settings: LabelSettings, threads: Optional[int]) -> None:
        if threads is not None:
            for name in _ThreadEnv.NAMES:
                os.environ[name] = str(threads)
        self.labeler = Labeler(teacher_spec, settings, threads)

    def ready(self) -> bool:
        return True

    def label(self, task: list):
        return self.labeler.label(task)


class RayEngine:
    def __init__(self, teacher_spec, settings: LabelSettings, workers: int, threads: Optional[int],
                 address: Optional[str] = None, device: str = "cpu", gpus_per_worker: float = 1.0) -> None:
        from .extras import require

        ray = require("ray", "ray", "engine 'ray'")
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=max(workers * (threads or 1), 1), include_dashboard=False, log_to_driver=False)
            self.started = True
        options = {"num_cpus": threads or 1}
        if device.startswith("cuda"):
            options["num_gpus"] = gpus_per_worker
        actor_class = ray.remote(**options)(_Actor)
        self.actors = [actor_class.remote(teacher_spec, settings, threads) for _ in range(workers)]
        ray.get([a.ready.remote() for a in self.actors])  # surface a teacher that fails to load now
        self.capacity = 2 * workers
        self._load = {i: 0 for i in range(workers)}
        self._owner: dict = {}

    def submit(self, task: list) -> None:
        i = min(self._load, key=self._load.get)
        ref = self.actors[i].label.remote(task)
        self._load[i] += 1
        self._owner[ref] = i

    def wait(self) -> list:
        if not self._owner:
            return []
        done, _ = self.ray.wait(list(self._owner), num_returns=1)
        out = []
        for ref in done:
            self._load[self._owner.pop(ref)] -= 1
            out.append(self.ray.get(ref))
        return out

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started:
            self.ray.shutdown()


def make_engine(engine: str, teacher_spec, settings: LabelSettings, *, workers: int, threads: Optional[int],
                address: Optional[str], device: str, start_method: str = "spawn"):
    """The engine ``engine`` ("local" or "ray"); ``workers=1`` with "local" runs in this process."""
    if engine == "local":
        if address:
            raise ValueError("--address applies to --engine ray only")
        if workers == 1:
            return InProcessEngine(teacher_spec, settings, threads)
        return LocalEngine(teacher_spec, settings, workers, threads, start_method)
    if engine == "ray":
        return RayEngine(teacher_spec, settings, workers, threads, address, device)
    raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
