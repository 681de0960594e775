"""The run directory OUT: file names, and the checks made before a run starts (cheap: no torch)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import TrainConfig

__all__ = ["prepare_out_dir", "CONFIG_FILE", "STUDENT_FILE", "SPLIT_FILE", "RUN_FILES"]

CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.json"
STUDENT_FILE = "student.safetensors"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
#: what ``overwrite=True`` removes from OUT (only files a run writes)
RUN_FILES = (CONFIG_FILE, SPLIT_FILE, STUDENT_FILE, SUMMARY_FILE, METRICS_FILE, CHECKPOINT_DIR, LOG_DIR)


def check_out_dir(cfg: TrainConfig, overwrite: bool = False) -> list[str]:
    """Errors for an OUT that cannot take this run; returns the run files ``overwrite`` would remove.

    ``cfg.resume``: ``OUT/checkpoints/last.ckpt`` must exist and ``cfg`` must equal the saved
    ``OUT/config.yaml`` in every option but those that may change (``RESUMABLE_CHANGES``).
    Otherwise OUT must hold no run unless ``overwrite``.
    """
    out = Path(cfg.out_dir)
    if cfg.resume:
        last = out / CHECKPOINT_DIR / "last.ckpt"
        if not last.exists():
            raise FileNotFoundError(2, "no checkpoint to resume from (no such file)", str(last))
        saved = out / CONFIG_FILE
        if saved.exists():
            diff = cfg.differences(TrainConfig.load(saved))
            if diff:
                raise ValueError(
                    f"{saved}: --resume needs the options of the interrupted run; changed: " + "; ".join(diff)
                )
        return []
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            17,
            f"already holds a training run ({', '.join(existing)}); resume it (--resume, resume=True) or "
            "replace it (--overwrite, overwrite=True)",
            str(out),
        )
    return existing


def prepare_out_dir(cfg: TrainConfig, overwrite: bool = False) -> None:
    """``check_out_dir``, then remove the previous run's files when ``overwrite`` (rank 0 only)."""
    out = Path(cfg.out_dir)
    for name in check_out_dir(cfg, overwrite):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
