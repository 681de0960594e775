"""``mlff-distiller sample``: structures sampled from seed structures (teacher MD, rattles, strains, relaxations)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click

from .errors import InputError
from .inputs import format_of, refuse_url_output
from .label import parse_teacher_options, teacher_options
from .options import FORMAT_HELP, FiniteFloatRange, parse_list
from .render import progress


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(t) for t in parse_list(text)]
    except ValueError:
        raise InputError(f"{name}: expected comma-separated numbers, got {text!r}") from None


@click.command()
@click.argument("seeds", metavar="SEEDS...", nargs=-1, required=True)
@click.argument("out")
@teacher_options
@click.option("-m", "--methods", default="md", show_default=True,
              help="Comma-separated: seed, md, rattle, strain (periodic seeds), relax (rattle then a short relaxation).")
@click.option("-T", "--temperatures", default="300", show_default=True, help="MD temperatures (K), comma-separated.")
@click.option("-n", "--num", "n", default=10, show_default=True, type=click.IntRange(min=1),
              help="Samples per seed structure, method and temperature.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same samples.")
@click.option("--rattle-sigma", default=0.05, show_default=True, type=FiniteFloatRange(min=0), help="Å (rattle, relax).")
@click.option("--max-strain", default=0.02, show_default=True, type=FiniteFloatRange(min=0))
@click.option("--md-interval", default=10, show_default=True, type=click.IntRange(min=1), help="MD steps between frames.")
@click.option("--md-equilibration", default=None, type=click.IntRange(min=0),
              help="MD steps before the first frame [default: 100 fs].")
@click.option("--timestep", default=None, type=FiniteFloatRange(min=0, min_open=True),
              help="MD time step (fs) [default: 0.5 with hydrogen, else 2].")
@click.option("--friction", default=0.02, show_default=True, type=FiniteFloatRange(min=0), help="Langevin friction (1/fs).")
@click.option("--relax-steps", default=5, show_default=True, type=click.IntRange(min=0))
@click.option("--relax-fmax", default=0.05, show_default=True, type=FiniteFloatRange(min=0), help="eV/Å.")
@click.option("--optimizer", type=click.Choice(["FIRE", "BFGS", "LBFGS"]), default="FIRE", show_default=True)
@click.option("--no-labels", is_flag=True, help="Do not keep the teacher's results of MD/relaxation frames.")
@click.option("-f", "--format", "fmt", default=None, help=f"Output format: {FORMAT_HELP}.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def sample(seeds: tuple[str, ...], out: str, teacher: str, teacher_option: tuple[str, ...], methods: str,
           temperatures: str, n: int, seed: int, rattle_sigma: float, max_strain: float, md_interval: int,
           md_equilibration: Optional[int], timestep: Optional[float], friction: float, relax_steps: int,
           relax_fmax: float, optimizer: str, no_labels: bool, fmt: Optional[str], overwrite: bool) -> None:
    """Sample structures from SEEDS (files any ASE or mlff-distiller reader reads, or built-in names such as
    aspirin, ethanol, water, cu64, si216) and write them to OUT with their provenance (sample_method,
    sample_seed, sample_group, sample_step, sample_temperature).

    MD and relaxation frames keep the teacher's energy and forces (not --no-labels); label OUT with
    `mlff-distiller label` for Hessian-vector products or another teacher.
    """
    from ..data.writers import write_structures
    from ..teachers import MissingExtraError, get_teacher
    from ..teachers.label import sample_to_structure
    from ..teachers.sampling import count_samples, iter_samples, load_seeds

    refuse_url_output(out)
    method_list = parse_list(methods)
    temps = _floats(temperatures, "--temperatures")
    needs_teacher = bool({"md", "relax"} & set(method_list))
    try:
        teacher_obj = get_teacher(teacher, **parse_teacher_options(teacher_option)) if needs_teacher else None
    except MissingExtraError as exc:
        raise InputError(str(exc)) from None
    seed_atoms = load_seeds(list(seeds))
    start = time.perf_counter()
    samples = iter_samples(
        seed_atoms, teacher_obj, methods=method_list, temperatures=temps, n=n, seed=seed, rattle_sigma=rattle_sigma,
        max_strain=max_strain, md_interval=md_interval, md_equilibration=md_equilibration, timestep_fs=timestep,
        friction_per_fs=friction, relax_steps=relax_steps, relax_fmax=relax_fmax, relax_optimizer=optimizer,
        keep_labels=not no_labels,
    )
    total = count_samples(seed_atoms, method_list, temps, n)
    metadata = {"sampling": {"seeds": list(seeds), "methods": method_list, "temperatures": temps, "n": n, "seed": seed}}
    if teacher_obj is not None and not no_labels:
        metadata["teacher"] = teacher_obj.info()
    structures = (sample_to_structure(a) for a in progress(samples, total, "sample"))
    count = write_structures(Path(out), structures, fmt, overwrite=overwrite, metadata=metadata)
    seconds = time.perf_counter() - start
    click.echo(f"Wrote {count} samples to {out} ({format_of(Path(out), fmt)}) in {seconds:.1f} s")
