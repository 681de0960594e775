"""Structure sampling from seed structures: teacher-driven Langevin MD, rattles, cell strains and
rattle-then-short-relax (Gardner et al.'s augment-atoms recipe). ASE does the physics (``Langevin``,
``FIRE``/``BFGS``, ``Atoms.rattle``); this module decides what to sample and records where each sample
came from.

Every sample is an ``ase.Atoms`` whose ``info`` holds the provenance keys of ``data.keys.PROVENANCE_KEYS``:
``sample_method`` ("seed", "md", "rattle", "strain", "relax"), ``sample_seed`` (index of the seed
structure), ``sample_group`` (``"seed<i>"``: splits grouped by it keep a seed's samples together),
``sample_step`` (MD step / chain step / draw index) and, for MD, ``sample_temperature`` (K).

Determinism: the samples of (seed structure i, method m, temperature t) come from
``SeedSequence([seed, i, code(m), t])`` alone, so a run is reproducible, and with a larger ``n`` the
earlier samples of every group stay the same.

MD and relaxation call the teacher anyway: when ``keep_labels`` (default), a sample whose geometry the
teacher computed last carries those results in a ``SinglePointCalculator`` (energy, forces, stress for
periodic cells, per-atom energies), exactly what ``label_structure`` computes for it afresh
(provided the teacher's labels do not depend on its history; see ``xtb.py`` for tblite's SCF restart).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Iterator, Optional, Sequence, Union

import numpy as np
from ase import Atoms, units

METHODS: tuple[str, ...] = ("seed", "md", "rattle", "strain", "relax")
_CODES = {m: k for k, m in enumerate(METHODS)}
_OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")
#: friction (1/fs) of the MD equilibration steps, and how long they last by default (fs)
EQUILIBRATION_FRICTION = 0.1
EQUILIBRATION_FS = 100.0


def group_rng(seed: int, seed_index: int, method: str, temperature_index: int = 0) -> np.random.Generator:
    """The RNG of one sampling group (seed structure, method, temperature)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(seed_index), _CODES[method], int(temperature_index)]))


# -- seeds --------------------------------------------------------------------------------------
def load_seeds(spec: Union[str, os.PathLike, Atoms, Sequence]) -> list[Atoms]:
    """Seed structures from Atoms, a list of Atoms / paths / built-in names, a built-in name
    (``"aspirin"``, ``"builtin:cu64"``) or a file: the data layer's formats (ASE db, extxyz, HDF5,
    packed) through its readers, anything else ASE reads through ``ase.io.read(path, ":")``."""
    if isinstance(spec, Atoms):
        return [spec.copy()]
    if isinstance(spec, (list, tuple)):
        out: list[Atoms] = []
        for item in spec:
            out.extend(load_seeds(item))
        return out
    text = os.fspath(spec)
    from ..structures import builtin, builtin_names

    name = text[len("builtin:"):] if text.startswith("builtin:") else text
    if text.startswith("builtin:") or (not os.path.exists(text) and name.lower() in builtin_names()):
        return [builtin(name)]
    if not os.path.exists(text):
        raise FileNotFoundError(2, f"no such file (nor a built-in structure: {', '.join(builtin_names())})", text)
    return _read_file(text)


def _read_file(path: str) -> list[Atoms]:
    from ..data.readers import guess_format, open_reader
    from ..data.structure import structure_to_atoms

    try:
        fmt = guess_format(path)
    except ValueError:
        fmt = None
    if fmt is None:
        from ase.io import read

        frames = read(path, index=":")
        frames = frames if isinstance(frames, list) else [frames]
    else:
        reader = open_reader(path, fmt)
        try:
            frames = []
            for i in range(len(reader)):
                s = reader.read(i)
                atoms = structure_to_atoms(s)
                for key, value in (s.extras or {}).items():
                    if key == "config_type":
                        atoms.info[key] = value
                atoms.calc = None  # seeds are geometries; their labels are not the teacher's
                frames.append(atoms)
        finally:
            reader.close()
    if not frames:
        raise ValueError(f"{path}: no structures to use as seeds")
    return frames


# -- single methods --------------------------------------------------------------------------------
def _tag(atoms: Atoms, method: str, seed_index: int, step: int, temperature: Optional[float] = None) -> Atoms:
    for key in ("sample_method", "sample_seed", "sample_group", "sample_step", "sample_temperature"):
        atoms.info.pop(key, None)
    atoms.info.update(sample_method=method, sample_seed=int(seed_index), sample_group=f"seed{seed_index}",
                      sample_step=int(step))
    if temperature is not None:
        atoms.info["sample_temperature"] = float(temperature)
    return atoms


def _snapshot(atoms: Atoms, calc, keep_labels: bool) -> Atoms:
    """A copy of ``atoms`` (momenta kept) carrying the teacher's results for it when they are current."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from .label import kept_results

    out = atoms.copy()
    out.set_constraint()
    if keep_labels and calc is not None:
        results = kept_results(atoms, calc)
        if results is not None:
            if not np.all(atoms.pbc):
                results.pop("stress", None)
            out.calc = SinglePointCalculator(out, **results)
    return out


def default_timestep_fs(atoms: Atoms) -> float:
    """0.5 fs with hydrogen present, 2 fs otherwise."""
    return 0.5 if 1 in set(atoms.numbers.tolist()) else 2.0


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` drawn from ``rng`` (ASE's ``thermalize_momenta``;
    on older ASE its predecessor ``MaxwellBoltzmannDistribution``)."""
    try:  # recent ASE (the installed 3.29 has it)
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - older ASE
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)


def md_samples(atoms: Atoms, calc, rng: np.random.Generator, *, n: int, temperature_K: float, interval: int,
               equilibration: int, timestep_fs: Optional[float], friction_per_fs: float,
               keep_labels: bool = True) -> Iterator[tuple[int, Atoms]]:
    """``(step, frame)`` for n Langevin frames ``interval`` steps apart after ``equilibration`` steps.

    Momenta start Maxwell-Boltzmann at ``temperature_K``; ``fixcm=False`` (ASE's default ``fixcm=True``
    overheats the hydrogens of small molecules). The equilibration steps use a strong friction
    (at least ``EQUILIBRATION_FRICTION``) so that the potential energy fills up quickly; the frames are
    taken with ``friction_per_fs``."""
    from ase.md.langevin import Langevin

    work = atoms.copy()
    work.calc = calc
    thermalize(work, temperature_K, rng)
    dyn = Langevin(work, timestep=(timestep_fs or default_timestep_fs(work)) * units.fs, temperature_K=temperature_K,
                   friction=max(friction_per_fs, EQUILIBRATION_FRICTION) / units.fs, fixcm=False, rng=rng)
    step = 0
    if equilibration:
        dyn.run(equilibration)
        step += equilibration
    dyn.set_friction(friction_per_fs / units.fs)
    for _ in range(n):
        dyn.run(interval)
        step += interval
        if not np.all(np.isfinite(work.positions)):
            raise ValueError(f"MD of {work.symbols} at {temperature_K} K diverged (non-finite positions) at step {step}")
        yield step, _snapshot(work, calc, keep_labels)


def rattle_samples(atoms: Atoms, rng: np.random.Generator, *, n: int, sigma: float) -> Iterator[tuple[int, Atoms]]:
    """n copies with Gaussian displacements of standard deviation ``sigma`` Å per component."""
    for k in range(n):
        out = atoms.copy()
        out.rattle(stdev=sigma, rng=rng)
        yield k, out


def strain_samples(atoms: Atoms, rng: np.random.Generator, *, n: int, max_strain: float,
                   sigma: float = 0.0) -> Iterator[tuple[int, Atoms]]:
    """n copies with the cell deformed by I + ε (ε symmetric, entries uniform in ±max_strain, atoms
    scaled with the cell), then rattled by ``sigma`` Å when > 0."""
    for k in range(n):
        eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        out = atoms.copy()
        out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        if sigma > 0:
            out.rattle(stdev=sigma, rng=rng)
        yield k, out


def relax_samples(atoms: Atoms, calc, rng: np.random.Generator, *, n: int, sigma: float, steps: int, fmax: float,
                  optimizer: str = "FIRE", keep_labels: bool = True) -> Iterator[tuple[int, Atoms]]:
    """A chain of n samples: rattle by ``sigma`` Å, relax at most ``steps`` optimizer steps (or to ``fmax``
    eV/Å) with the teacher, take the result as the next start."""
    import ase.optimize

    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"relax optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    opt_class = getattr(ase.optimize, optimizer)
    current = atoms.copy()
    for k in range(n):
        work = current.copy()
        work.rattle(stdev=sigma, rng=rng)
        work.calc = calc
        opt_class(work, logfile=None).run(fmax=fmax, steps=steps)
        if not np.all(np.isfinite(work.positions)):
            raise ValueError(f"relaxation of {work.symbols} diverged (non-finite positions) in chain step {k}")
        yield k, _snapshot(work, calc, keep_labels)
        current = work


# -- the whole plan ---------------------------------------------------------------------------------
def iter_samples(
    seeds,
    teacher=None,
    *,
    methods: Sequence[str] = ("md",),
    temperatures: Sequence[float] = (300.0,),
    n: int = 10,
    seed: int = 0,
    rattle_sigma: float = 0.05,
    max_strain: float = 0.02,
    strain_sigma: float = 0.0,
    md_interval: int = 10,
    md_equilibration: Optional[int] = None,
    timestep_fs: Optional[float] = None,
    friction_per_fs: float = 0.02,
    relax_steps: int = 5,
    relax_fmax: float = 0.05,
    relax_optimizer: str = "FIRE",
    keep_labels: bool = True,
) -> Iterator[Atoms]:
    """Samples in a fixed order: for each seed structure, for each method (in the order given), for each
    temperature (MD only), ``n`` samples (``"seed"`` gives the seed itself once). See ``sample_structures``."""
    from .registry import as_teacher

    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown sampling method(s) {bad}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"sampling methods repeated: {list(methods)}")
    temperatures = tuple(float(t) for t in temperatures)
    if "md" in methods and (not temperatures or not all(math.isfinite(t) and t >= 0 for t in temperatures)):
        raise ValueError(f"MD temperatures must be finite numbers >= 0 (K), got {list(temperatures)}")
    for name, value, low in (("n", n, 1), ("md_interval", md_interval, 1), ("relax_steps", relax_steps, 0),
                             ("md_equilibration", 0 if md_equilibration is None else md_equilibration, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    for name, value in (("rattle_sigma", rattle_sigma), ("max_strain", max_strain), ("strain_sigma", strain_sigma),
                        ("friction_per_fs", friction_per_fs), ("relax_fmax", relax_fmax)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if timestep_fs is not None and not (math.isfinite(timestep_fs) and timestep_fs > 0):
        raise ValueError(f"timestep_fs must be a finite number > 0, got {timestep_fs}")
    needs_teacher = {"md", "relax"} & set(methods)
    if needs_teacher and teacher is None:
        raise ValueError(f"sampling method(s) {sorted(needs_teacher)} need a teacher")
    teacher = as_teacher(teacher) if teacher is not None else None
    seed_atoms = load_seeds(seeds)
    if "strain" in methods and not any(np.all(a.pbc) for a in seed_atoms):
        raise ValueError("method 'strain' needs periodic seed structures (pbc all True); none is periodic")
    if needs_teacher:
        for i, atoms in enumerate(seed_atoms):
            try:
                teacher.check(atoms)
            except ValueError as exc:
                raise ValueError(f"seed structure {i}: {exc}") from None
    skipped = [i for i, a in enumerate(seed_atoms) if not np.all(a.pbc)] if "strain" in methods else []
    if skipped:
        warnings.warn(f"method 'strain' skips seed structure(s) {skipped}: not periodic", UserWarning, stacklevel=2)
    return _plan(seed_atoms, teacher, methods, temperatures, int(n), int(seed), rattle_sigma, max_strain,
                 strain_sigma, int(md_interval), md_equilibration, timestep_fs, friction_per_fs,
                 int(relax_steps), relax_fmax, relax_optimizer, keep_labels)


def _plan(seed_atoms, teacher, methods, temperatures, n, seed, rattle_sigma, max_strain, strain_sigma, md_interval,
          md_equilibration, timestep_fs, friction_per_fs, relax_steps, relax_fmax, relax_optimizer, keep_labels):
    calc = None
    for i, base in enumerate(seed_atoms):
        base = base.copy()
        base.calc = None
        for method in methods:
            if method == "seed":
                yield _tag(base.copy(), "seed", i, 0)
            elif method == "rattle":
                for k, atoms in rattle_samples(base, group_rng(seed, i, method), n=n, sigma=rattle_sigma):
                    yield _tag(atoms, method, i, k)
            elif method == "strain":
                if not np.all(base.pbc):
                    continue  # warned above
                for k, atoms in strain_samples(base, group_rng(seed, i, method), n=n, max_strain=max_strain,
                                               sigma=strain_sigma):
                    yield _tag(atoms, method, i, k)
            elif method == "md":
                for t_index, temperature in enumerate(temperatures):
                    calc = teacher.calculator() if calc is None else calc
                    dt = timestep_fs or default_timestep_fs(base)
                    equilibration = md_equilibration
                    if equilibration is None:
                        equilibration = int(math.ceil(EQUILIBRATION_FS / dt))
                    for step, atoms in md_samples(base, calc, group_rng(seed, i, method, t_index), n=n,
                                                  temperature_K=temperature, interval=md_interval,
                                                  equilibration=equilibration, timestep_fs=dt,
                                                  friction_per_fs=friction_per_fs, keep_labels=keep_labels):
                        yield _tag(atoms, method, i, step, temperature)
            elif method == "relax":
                calc = teacher.calculator() if calc is None else calc
                for k, atoms in relax_samples(base, calc, group_rng(seed, i, method), n=n, sigma=rattle_sigma,
                                              steps=relax_steps, fmax=relax_fmax, optimizer=relax_optimizer,
                                              keep_labels=keep_labels):
                    yield _tag(atoms, method, i, k)


def sample_structures(seeds, teacher=None, *, methods: Sequence[str] = ("md",), temperatures: Sequence[float] = (300.0,),
                      n: int = 10, seed: int = 0, **options) -> list[Atoms]:
    """Sample structures from ``seeds`` (Atoms, files, built-in names; see ``load_seeds``).

    methods:      any of "seed" (the seed itself), "md" (teacher Langevin MD at each of ``temperatures`` K),
                  "rattle" (Gaussian displacements, ``rattle_sigma`` Å), "strain" (periodic seeds: cell
                  deformed by up to ``max_strain``), "relax" (rattle by ``rattle_sigma`` then at most
                  ``relax_steps`` optimizer steps with the teacher, chained)
    n:            samples per seed structure, method and temperature
    seed:         run seed; the same seed gives the same samples
    options:      ``md_interval`` (steps between frames, 10), ``md_equilibration`` (steps before the first
                  frame, run with friction 0.1/fs; default 100 fs), ``timestep_fs`` (0.5 with H, else 2),
                  ``friction_per_fs`` (0.02, while frames are taken), ``relax_steps`` (5),
                  ``relax_fmax`` (0.05 eV/Å), ``relax_optimizer`` ("FIRE", "BFGS", "LBFGS"), ``strain_sigma``,
                  ``keep_labels`` (True: MD/relax samples keep the teacher's results)

    Returns ``ase.Atoms`` with provenance in ``info`` (see the module docstring).
    """
    return list(iter_samples(seeds, teacher, methods=methods, temperatures=temperatures, n=n, seed=seed, **options))


def count_samples(seeds_atoms: Sequence[Atoms], methods: Sequence[str], temperatures: Sequence[float], n: int) -> int:
    """How many samples ``iter_samples`` yields for these seeds (for progress bars)."""
    total = 0
    for atoms in seeds_atoms:
        for m in methods:
            if m == "seed":
                total += 1
            elif m == "md":
                total += n * len(temperatures)
            elif m == "strain":
                total += n if np.all(atoms.pbc) else 0
            else:
                total += n
    return total
