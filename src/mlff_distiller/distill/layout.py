"""The files of a distill run directory and its done-markers.

RUN/::

    config.yaml              the resolved DistillConfig (every choice; ``distill --config`` repeats it)
    samples/<part>.db        teacher MD frames of one sampling run (the MD call's labels kept)
    labels/train_pool.db     labeled training pool (energy, forces[, stress][, hvp]) — ASE database
    labels/test.db           labeled held-out structures (a separate MD run per test temperature)
    split/train.db, val.db   the training pool split by provenance blocks; split/split.json says how
    train/                   the training run (training.train's out_dir: checkpoints, metrics.csv, ...)
    student.safetensors      the exported student (models.save, with teacher/training/distill metadata)
    eval/                    evaluation: report.json, parity/error/NVE plots
    report.md, report.json   the run's report (headline table, accuracy, speed, MD, pipeline, plots)
    .stages/<stage>.done     JSON done-marker: when, how long, which outputs

A stage is done when its marker exists *and* every output the marker lists exists.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Optional

__all__ = ["RunDir", "STAGES"]

#: the stages in order
STAGES = ("sample", "label", "split", "train", "export", "evaluate", "report")


class RunDir:
    """Paths of one run directory and its stage markers."""

    def __init__(self, root) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.samples = self.root / "samples"
        self.labels = self.root / "labels"
        self.train_pool = self.labels / "train_pool.db"
        self.test = self.labels / "test.db"
        self.split = self.root / "split"
        self.train_db = self.split / "train.db"
        self.val_db = self.split / "val.db"
        self.split_json = self.split / "split.json"
        self.train = self.root / "train"
        self.student = self.root / "student.safetensors"
        self.eval = self.root / "eval"
        self.report_md = self.root / "report.md"
        self.report_json = self.root / "report.json"
        self.markers = self.root / ".stages"

    # -- markers -----------------------------------------------------------------------------------
    def marker(self, stage: str) -> Path:
        return self.markers / f"{stage}.done"

    def read_marker(self, stage: str) -> Optional[dict]:
        try:
            return json.loads(self.marker(stage).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_done(self, stage: str) -> bool:
        info = self.read_marker(stage)
        return info is not None and all((self.root / p).exists() for p in info.get("outputs", []))

    def mark_done(self, stage: str, outputs: Iterable[Path], seconds: float, **extra) -> None:
        self.markers.mkdir(parents=True, exist_ok=True)
        info = {
            "stage": stage,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(float(seconds), 3),
            "outputs": [os.fspath(Path(p).relative_to(self.root)) for p in outputs],
            **extra,
        }
        from ..data.publish import write_atomic

        write_atomic(self.marker(stage), json.dumps(info, indent=1, default=str))

    def clear_marker(self, stage: str) -> None:
        self.marker(stage).unlink(missing_ok=True)

    def first_unfinished(self) -> Optional[str]:
        for stage in STAGES:
            if not self.is_done(stage):
                return stage
        return None

    def finished(self) -> bool:
        return self.first_unfinished() is None

    def has_run(self) -> bool:
        return self.config.exists() or self.markers.exists()

    # -- cleaning --------------------------------------------------------------------------------
    def owned(self) -> list[Path]:
        """Everything a run writes (what ``overwrite`` removes; nothing else in RUN/ is touched)."""
        return [self.config, self.samples, self.labels, self.split, self.train, self.student, self.eval,
                self.report_md, self.report_json, self.markers]

    def remove_run(self) -> None:
        for path in self.owned():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
