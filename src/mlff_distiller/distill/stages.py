"""The stages of a distill run. Each reads the outputs of the stages before it from RUN/ and writes its
own there; each is safe to rerun after being killed (it resumes or starts over, never mixes).

- ``sample``: teacher Langevin MD from every seed structure — one run per training temperature and,
  with another random stream, one per held-out temperature; frames keep the MD call's labels.
  One file + marker per run, so a kill loses at most the run in progress.
- ``label``: the frames already carry the teacher's energy/forces(/stress), so without HVPs the
  runs are merged into ``labels/train_pool.db`` and ``labels/test.db``; with ``hvp`` K,
  ``teachers.label_file`` (resumable journal, ``reuse_labels``) adds K Hessian-vector products per
  training structure at 2K teacher calls each.
- ``split``: training pool -> train/val by provenance: MD runs (``sample_group`` × temperature) cut
  into blocks of ``val_block`` consecutive frames; whole blocks go to validation, so validation is
  whole stretches of trajectory, not single frames between two training neighbours. The held-out
  test set is a separate sampling run.
- ``train``: ``training.train`` (Lightning), resumed from its last checkpoint after a kill.
- ``export``: the best EMA weights -> ``RUN/student.safetensors`` with the distill config in its metadata.
- ``evaluate``: ``evaluation.evaluate`` on the held-out set, teacher timed like for like.
- ``report``: ``RUN/report.md`` + ``report.json`` (evaluation + pipeline summary).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..data.publish import publish, write_atomic
from .config import DistillConfig
from .budget import training_seconds
from .layout import STAGES, RunDir

__all__ = ["Context", "STAGE_FUNCTIONS", "sample_parts"]


@dataclass
class Context:
    config: DistillConfig
    run: RunDir
    teacher: object  # teachers.Teacher
    seeds: list
    log: Callable[[str], None] = print
    info: dict = field(default_factory=dict)  # what stages report (counts, timings)

    def bar(self, total: Optional[int], desc: str, unit: str = "structure"):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
                    disable=None if self.config.progress else True)


def _write(path: Path, structures, metadata: dict) -> int:
    """Structures (labels, provenance and HVPs in ``extras``) into an ASE database with file ``metadata``."""
    from ..data.writers import write_structures

    return write_structures(path, structures, "ase", overwrite=True, metadata=metadata)


# -- sample -------------------------------------------------------------------------------------------
def sample_parts(config: DistillConfig) -> list[dict]:
    """The sampling runs: {name, role ("train"/"test"), temperature K, n, seed}."""
    parts = []
    for k, t in enumerate(config.train_temperatures):
        parts.append({"name": f"train_md_{t:g}K", "role": "train", "method": "md", "temperature": t,
                      "n": config.train_samples, "seed": config.seed * 1000 + k})
    for m in config.extra_methods:
        parts.append({"name": f"train_{m}", "role": "train", "method": m, "temperature": None,
                      "n": config.train_samples, "seed": config.seed * 1000 + 100})
    for k, t in enumerate(config.test_temperatures):  # another random stream than any training run
        parts.append({"name": f"test_md_{t:g}K", "role": "test", "method": "md", "temperature": t,
                      "n": config.test_samples, "seed": config.seed * 1000 + 500 + k, "interval": config.test_interval})
    return parts


def stage_sample(ctx: Context) -> list[Path]:
    from ..teachers.label import sample_to_structure
    from ..teachers.sampling import count_samples, iter_samples

    cfg, run = ctx.config, ctx.run
    run.samples.mkdir(parents=True, exist_ok=True)
    outputs = []
    for part in sample_parts(cfg):
        path = run.samples / f"{part['name']}.db"
        outputs.append(path)
        if run.is_done(f"sample.{part['name']}"):
            continue
        start = time.perf_counter()
        methods = [part["method"]]
        temps = [part["temperature"]] if part["temperature"] is not None else [300.0]
        total = count_samples(ctx.seeds, methods, temps, part["n"])
        options = dict(md_interval=part.get("interval") or cfg.md_interval, md_equilibration=cfg.md_equilibration,
                       timestep_fs=cfg.timestep_fs, rattle_sigma=cfg.rattle_sigma)
        kinetic = []
        metadata = {"teacher": ctx.teacher.info(),
                    "sampling": {"part": part, "seeds": list(cfg.structures), **options}}
        with ctx.bar(total, f"sampling {part['name']}") as bar:
            def structures():
                for atoms in iter_samples(ctx.seeds, ctx.teacher, methods=methods, temperatures=temps, n=part["n"],
                                          seed=part["seed"], **options):
                    if atoms.get_momenta() is not None and part["method"] == "md":
                        kinetic.append(atoms.get_temperature())
                    bar.update(1)
                    yield sample_to_structure(atoms)

            count = _write(path, structures(), metadata)
        seconds = time.perf_counter() - start
        run.mark_done(f"sample.{part['name']}", [path], seconds, frames=count,
                      kinetic_temperature=float(np.mean(kinetic)) if kinetic else None)
        ctx.log(f"sampled {count} frames ({part['name']}) in {seconds:.0f} s"
                + (f", mean kinetic temperature {np.mean(kinetic):.0f} K" if kinetic else ""))
    return outputs


# -- label --------------------------------------------------------------------------------------------
def _read_all(paths: list[Path]) -> list:
    from ..data.readers import open_reader

    structures = []
    for p in paths:
        reader = open_reader(p, "ase")
        try:
            structures += reader.read_many(range(len(reader)))
        finally:
            reader.close()
    return structures


def stage_label(ctx: Context) -> list[Path]:
    """Frames of teacher MD already carry the teacher's energy and forces (the MD call's own): without
    HVPs the labeled sets are the samples merged; with HVPs ``label_file`` adds them (resumably,
    ``reuse_labels``: 2K teacher calls per structure, not 2K + 1)."""
    from ..teachers import label_file

    cfg, run = ctx.config, ctx.run
    run.labels.mkdir(parents=True, exist_ok=True)
    parts = sample_parts(cfg)
    sources = {
        run.train_pool: ([run.samples / f"{p['name']}.db" for p in parts if p["role"] == "train"], cfg.hvp),
        run.test: ([run.samples / f"{p['name']}.db" for p in parts if p["role"] == "test"], 0),
    }
    summaries = {}
    for dst, (paths, hvp) in sources.items():
        if dst.exists():
            continue
        structures = _read_all(paths)
        unlabeled = [k for k, s in enumerate(structures) if s.energy is None or s.forces is None]
        metadata = {"teacher": ctx.teacher.info(), "labeling": {"hvp": 0, "source": "teacher MD calls (kept)"}}
        if not hvp and not unlabeled:
            count = _write(dst, structures, metadata)
            summaries[dst.name] = {"labeled": count, "teacher_calls": 0, "source": "labels kept from the teacher's MD"}
            ctx.log(f"{dst.name}: {count} structures labeled by the teacher's own MD calls (no extra calls)")
            continue
        src = run.labels / f".{dst.stem}_input.db"
        if not src.exists():
            _write(src, structures, metadata)
        ctx.log(f"labeling {dst.name} with {ctx.teacher.name}" + (f" ({hvp} Hessian-vector products each)" if hvp else ""))
        options = {"hvp": hvp, "workers": cfg.label_workers, "threads": cfg.threads, "seed": cfg.seed,
                   "progress": cfg.progress, "reuse_labels": not unlabeled}  # MD frames: only the HVPs cost calls
        if hvp and cfg.hvp_step is not None:
            options["hvp_step"] = cfg.hvp_step
        summary = label_file(src, dst, ctx.teacher, **options)
        if summary.failed:
            raise RuntimeError(f"the teacher failed on {summary.failed} structure(s) of {src}; see {summary.failures_path}")
        summaries[dst.name] = summary.as_dict()
        src.unlink()
    ctx.info["label"] = summaries
    return [run.train_pool, run.test]


# -- split --------------------------------------------------------------------------------------------
def provenance_blocks(rows: list[dict], block: int) -> list[str]:
    """A group name per structure: sample_group/method/temperature/block of ``block`` consecutive frames."""
    counters: dict = {}
    names = []
    for r in rows:
        run_key = (r.get("sample_group", "?"), r.get("sample_method", "?"), r.get("sample_temperature"))
        k = counters.get(run_key, 0)
        counters[run_key] = k + 1
        temp = f"{run_key[2]:g}K" if run_key[2] is not None else "-"
        names.append(f"{run_key[0]}/{run_key[1]}/{temp}/block{k // block}")
    return names


def choose_val_groups(groups: list[str], fraction: float, seed: int) -> set:
    """Whole groups drawn at random until at least ``fraction`` of the structures are in them
    (at least one group; never all)."""
    unique = sorted(set(groups), key=groups.index)
    if len(unique) < 2:
        raise ValueError(f"cannot split {len(groups)} structures by provenance: they form {len(unique)} block(s); "
                         "sample more frames or lower val_block")
    sizes = {g: groups.count(g) for g in unique}
    order = np.random.default_rng(seed).permutation(len(unique))
    chosen, count = set(), 0
    for i in order:
        if count >= fraction * len(groups) and chosen:
            break
        if len(chosen) == len(unique) - 1:
            break
        chosen.add(unique[i])
        count += sizes[unique[i]]
    return chosen


def _copy_rows(src: Path, dst: Path, ids: list[int]) -> None:
    """Copy rows ``ids`` of ASE database ``src`` (atoms, labels, key-value pairs, data) and its metadata."""
    from ase.db import connect

    source = connect(src)
    with publish(dst, overwrite=True) as tmp:  # a fresh empty file (mkstemp) that SQLite fills
        with connect(str(tmp), type="db") as out:
            for row_id in ids:
                row = source.get(id=row_id)
                out.write(row, key_value_pairs=dict(row.key_value_pairs), data=dict(row.data))
        target = connect(str(tmp), type="db")
        target.metadata = source.metadata


def stage_split(ctx: Context) -> list[Path]:
    from ase.db import connect

    cfg, run = ctx.config, ctx.run
    run.split.mkdir(parents=True, exist_ok=True)
    rows = [(row.id, dict(row.key_value_pairs)) for row in connect(run.train_pool).select(sort="id")]
    groups = provenance_blocks([kv for _, kv in rows], cfg.val_block)
    val_groups = choose_val_groups(groups, cfg.val_fraction, cfg.seed)
    train_ids = [rid for (rid, _), g in zip(rows, groups) if g not in val_groups]
    val_ids = [rid for (rid, _), g in zip(rows, groups) if g in val_groups]
    _copy_rows(run.train_pool, run.train_db, train_ids)
    _copy_rows(run.train_pool, run.val_db, val_ids)
    info = {"how": f"training pool cut into blocks of {cfg.val_block} consecutive frames per sampling run "
                   "(sample_group × method × temperature); whole blocks drawn for validation",
            "train": len(train_ids), "val": len(val_ids), "val_blocks": sorted(val_groups),
            "train_rows": [i - 1 for i in train_ids], "val_rows": [i - 1 for i in val_ids]}
    write_atomic(run.split_json, json.dumps(info, indent=1))
    ctx.log(f"split the training pool: {len(train_ids)} train, {len(val_ids)} validation ({len(val_groups)} blocks)")
    return [run.train_db, run.val_db, run.split_json]


# -- train ---------------------------------------------------------------------------------------------
def stage_train(ctx: Context) -> list[Path]:
    from ..training import train

    cfg, run = ctx.config, ctx.run
    resume = (run.train / "checkpoints" / "last.ckpt").exists()
    spent = sum((run.read_marker(stage) or {}).get("seconds", 0.0) for stage in STAGES[: STAGES.index("train")])
    seconds, why = training_seconds(cfg, spent)
    ctx.log(("resuming" if resume else "training") + f" the {cfg.model} student for up to {seconds / 60:.3g} min"
            + ("" if why.startswith("as ") else f" ({why})"))
    ctx.info["train"] = {"max_minutes": round(seconds / 60.0, 3), "why": why}
    options = dict(cfg.train_options)
    options.setdefault("progress_bar", cfg.progress)
    with _quiet_training():
        result = _train(train, cfg, run, resume, options, seconds)
    if result.student is None:
        raise RuntimeError(f"training in {run.train} produced no student (no checkpoint was written)")
    val = result.best_metrics.get("val_forces_mae")
    ctx.log(f"trained {result.epochs_run} epochs in {result.seconds:.0f} s; best epoch {result.best_epoch}"
            + (f", validation force MAE {val:.1f} meV/Å" if val is not None else ""))
    return [Path(result.student)]


@contextlib.contextmanager
def _quiet_training():
    """Lightning's INFO banners (accelerator, tips) off, and the statistics warning that one molecule
    (one stoichiometry) cannot determine per-element E0s — expected in a single-molecule distillation —
    left out; every other warning still shows."""
    import logging

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*reference energies are under-determined.*")
            yield
    finally:
        logger.setLevel(level)


def _train(train, cfg: DistillConfig, run: RunDir, resume: bool, options: dict, seconds: float):
    # a time-budgeted run: the learning rate decays along a cosine over the training minutes (a plateau
    # schedule never fires within a few minutes); train_options={"lr_schedule": "plateau"} overrides it
    options = {"lr_schedule": "cosine", **options}
    return train(
        str(run.train_db), out_dir=str(run.train), model=cfg.model, val=str(run.val_db), epochs=cfg.epochs,
        batch_size=cfg.batch_size, lr=cfg.lr, weights=dict(cfg.weights) or None, hvp_weight=cfg.hvp_weight,
        seed=cfg.seed, resume=resume, overwrite=not resume, cutoff=cfg.cutoff, model_options=dict(cfg.model_options),
        dtype=cfg.dtype, max_time=seconds, num_threads=cfg.threads, **options,
    )


# -- export --------------------------------------------------------------------------------------------
def stage_export(ctx: Context) -> list[Path]:
    from .. import models

    run = ctx.run
    trained = run.train / "student.safetensors"
    if not trained.exists():
        raise FileNotFoundError(2, "the train stage left no student", str(trained))
    model = models.load(trained)
    metadata = models.read_metadata(trained).get("metadata", {})
    metadata["distill"] = {"config": ctx.config.to_dict(), "teacher": ctx.teacher.info(),
                           "run_dir": os.fspath(run.root)}
    models.save(model, run.student, metadata=metadata)  # replaces the file atomically
    ctx.log(f"exported the student to {run.student}")
    return [run.student]


# -- evaluate ------------------------------------------------------------------------------------------
def held_out_description(config: DistillConfig) -> str:
    temps = ", ".join(f"{t:g} K" for t in config.test_temperatures)
    train = ", ".join(f"{t:g} K" for t in config.train_temperatures)
    return (f"separate teacher Langevin MD run(s) at {temps} with their own random stream "
            f"({config.test_samples} frames per seed structure and temperature, every {config.test_interval} MD steps); "
            f"training frames came from runs at {train}")


def stage_evaluate(ctx: Context) -> list[Path]:
    from ..evaluation import evaluate

    cfg, run = ctx.config, ctx.run
    if run.eval.exists():
        shutil.rmtree(run.eval)
    bar = ctx.bar(cfg.md_steps, "student NVE", unit="step")
    last = [0]

    def progress(done: int, total: int) -> None:
        bar.update(done - last[0])
        last[0] = done

    try:
        report = evaluate(
            run.student, run.test, teacher=ctx.teacher, out_dir=run.eval, device=cfg.device, num_threads=cfg.threads,
            speed_structures=cfg.speed_structures, speed_rounds=cfg.speed_rounds,
            speed_max_seconds=max(30.0, 0.05 * 60 * cfg.budget_minutes), batch_size=cfg.batch_size_eval,
            md_steps=cfg.md_steps, md_timestep_fs=cfg.md_timestep_fs, md_temperature=cfg.test_temperatures[0],
            held_out=held_out_description(cfg),
            log=ctx.log, progress=progress,
        )
    finally:
        bar.close()
    acc, speed = report["accuracy"], report["speed"]
    ctx.log(f"held-out force MAE {acc['forces']['mae'] * 1e3:.1f} meV/Å; teacher {speed['teacher']['ms_per_call']:.1f} "
            f"ms/call vs student {speed['student']['ms_per_call']:.2f} ms/call ({speed['speedup']:.1f}×)")
    return [run.eval / "report.json"]


# -- report --------------------------------------------------------------------------------------------
def stage_report(ctx: Context) -> list[Path]:
    from ..evaluation.report import write_report

    run = ctx.run
    report = json.loads((run.eval / "report.json").read_text(encoding="utf-8"))
    report["plots"] = {k: f"eval/{v}" for k, v in (report.get("plots") or {}).items()}
    report["student"]["path"] = os.fspath(run.student)
    report["pipeline"] = pipeline_summary(ctx)
    report["run_dir"] = os.fspath(run.root)
    write_report(report, run.root, title=f"Distilling {ctx.teacher.name} into a {ctx.config.model} student")
    return [run.report_md, run.report_json]


def pipeline_summary(ctx: Context) -> dict:
    cfg, run = ctx.config, ctx.run
    stages = {}
    for stage in ("sample", "label", "split", "train", "export", "evaluate"):
        marker = run.read_marker(stage)
        if marker:
            stages[stage] = f"{marker['seconds']:.0f} s"
    split = json.loads(run.split_json.read_text()) if run.split_json.exists() else {}
    training = {}
    summary_path = run.train / "summary.json"
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        best = s.get("best_metrics") or {}
        training = {"epochs": s.get("epochs_run"), "best epoch": s.get("best_epoch"),
                    "seconds": round(float(s.get("seconds") or 0.0)),
                    **{f"{k} (meV/Å)": round(best[k], 1) for k in ("val_forces_mae", "val_forces_rmse") if k in best},
                    **{f"{k} (meV/atom)": round(best[k], 2) for k in ("val_energy_mae", "val_energy_rmse") if k in best}}
    runs = {}
    for part in sample_parts(cfg):
        marker = run.read_marker(f"sample.{part['name']}") or {}
        if marker:
            t = marker.get("kinetic_temperature")
            runs[part["name"]] = f"{marker.get('frames')} frames" + (f", mean kinetic T {t:.0f} K" if t else "")
    return {
        "seed structures": ", ".join(cfg.structures),
        "sampling runs": runs,
        "sampling": (f"Langevin MD (teacher), train at {', '.join(f'{t:g} K' for t in cfg.train_temperatures)} × "
                     f"{cfg.train_samples} frames, held-out at {', '.join(f'{t:g} K' for t in cfg.test_temperatures)} × "
                     f"{cfg.test_samples} frames per seed, every {cfg.md_interval} (held-out: {cfg.test_interval}) MD "
                     f"steps after {cfg.md_equilibration} equilibration steps"),
        "labels": f"energy, forces{', stress' if any(np.all(a.pbc) for a in ctx.seeds) else ''}"
                  + (f", {cfg.hvp} Hessian-vector products per training structure" if cfg.hvp else ", no Hessian terms"),
        "split": f"{split.get('train', '?')} train / {split.get('val', '?')} validation ({split.get('how', '')})",
        "student": f"{cfg.model} {cfg.model_options or ''} cutoff {cfg.cutoff} Å, {cfg.dtype}",
        "training": training,
        "stage times": stages,
        "plan": _plan_text(cfg.plan),
    }


def _plan_text(plan: dict) -> str:
    if not plan:
        return "every size given explicitly (no budget planning)"
    return (f"{plan['budget_minutes']:g}-minute budget; measured teacher {plan['teacher_ms_per_call']:g} ms/call, "
            f"untrained student {plan['student_ms_per_call_untrained']:g} ms/call; "
            f"{plan['teacher_calls_planned']} teacher calls planned (~{plan['sampling_minutes_planned']:g} min)")


STAGE_FUNCTIONS = {
    "sample": stage_sample,
    "label": stage_label,
    "split": stage_split,
    "train": stage_train,
    "export": stage_export,
    "evaluate": stage_evaluate,
    "report": stage_report,
}
