"""``mlff-distiller demo``: the main job — distill SevenNet-0 on aspirin into a fast student in about
five minutes on 2 CPU cores, and print teacher vs student side by side. ``--data-only`` runs the
data-layer tour instead (formats, round trips, statistics, loaders)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .render import console

#: the demo's plan for SevenNet-0 on aspirin (measured here: ~50-60 ms per teacher call at 2 threads on an
#: idle 2-core machine, ~9 s to load the teacher): 3 teacher MD runs of 40 equilibration steps; the two
#: training runs (300 K, 600 K) keep every MD step as a labeled frame (the MD call's own labels: no second
#: call), the held-out run (450 K, its own random stream) one frame every 4 steps -> ~1320 teacher calls
#: (~1.3 min), 3 min of training, ~30 s of evaluation (timing + 1 ps of student NVE): ~5 min in all.
#: The sizes are fixed (not planned from a timing), so the demo gives the same student on a busy machine,
#: only later. ``--budget-minutes`` switches to the planner.
DEMO_PLAN = {
    "structures": ["aspirin"],
    "train_temperatures": [300.0, 600.0],
    "test_temperatures": [450.0],
    "train_samples": 500,
    "test_samples": 50,
    "md_interval": 1,
    "test_interval": 4,
    "val_block": 50,
    "md_equilibration": 40,
    "timestep_fs": 1.0,  # sampling MD; the student's NVE check runs at md_timestep_fs
    "epochs": 10_000,
    "train_minutes": 3.0,
    "md_steps": 2000,
    "md_timestep_fs": 0.5,
    "budget_minutes": 5.0,
    "model": "painn",
}
#: quick teachers (a few ms per call: no speed-up to show, the run is about the pipeline)
QUICK_PLAN = {**DEMO_PLAN, "train_minutes": 1.0, "budget_minutes": 1.5}


@click.command()
@click.option("--teacher", default="sevennet-0", show_default=True,
              help="sevennet-0 (the headline), or gfn2-xtb / emt for a quick run.")
@click.option("--structure", default="aspirin", show_default=True, help="Seed structure (file or built-in name).")
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory. [default: demo_run (distill) or demo_output (--data-only)]")
@click.option("--budget-minutes", default=None, type=float,
              help="Plan the run from this budget and measured speeds instead of the demo's fixed sizes.")
@click.option("--hvp", default=0, show_default=True, type=click.IntRange(min=0), help="Hessian-vector products per training structure.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="Threads. [default: all cores]")
@click.option("--overwrite", is_flag=True, help="Run again over an earlier demo in --out.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--data-only", is_flag=True, help="The data-layer tour instead: generate, write every format, check, time loaders.")
@click.option("-n", "--num-structures", default=300, show_default=True, type=click.IntRange(min=3), help="(--data-only) structures to generate.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="(--data-only) loader batch size.")
def demo(teacher: str, structure: str, out: Optional[Path], budget_minutes: Optional[float], hvp: int,
         threads: Optional[int], overwrite: bool, no_progress: bool, data_only: bool, num_structures: int, seed: int, batch_size: int) -> None:
    """Distill SevenNet-0 on aspirin into a student (~5 min on 2 cores) and print teacher vs student:
    ms per call, speed-up, held-out force error, NVE drift, and where the report is."""
    if data_only:
        from .data_tour import run_demo

        run_demo(out or Path("demo_output"), num_structures=num_structures, seed=seed, batch_size=batch_size,
                 overwrite=overwrite, console=console())
        return
    from ..distill import DistillConfig, RunDir
    from ..evaluation.report import load_report, render_table
    from .distill import print_result, run_cli

    out = out or Path("demo_run")
    plan = dict(QUICK_PLAN if teacher.lower() in ("gfn2-xtb", "emt") else DEMO_PLAN)
    if budget_minutes is not None:  # planned from the budget and measured speeds instead
        for name in ("train_samples", "test_samples", "md_interval", "test_interval", "val_block", "md_equilibration",
                     "train_minutes", "md_steps"):
            plan[name] = None
        plan["budget_minutes"] = budget_minutes
    values = dict(plan, teacher=teacher, structures=[structure], out_dir=str(out), hvp=hvp, seed=seed, threads=threads,
                  progress=not no_progress)
    run = RunDir(out)
    if run.finished() and not overwrite:
        report = load_report(run.report_json)
        c = console()
        c.print(render_table(report, title=f"Teacher vs student (finished demo in {out}; --overwrite to run it again)"))
        c.print(f"report: {run.report_md}")
        return
    click.echo(f"distilling {teacher} on {structure} into a student in about {values['budget_minutes']:g} minutes "
        f"(run directory {out}/)", err=True)
    result = run_cli(DistillConfig.from_dict(values), overwrite)
    print_result(result)
