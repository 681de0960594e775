"""Build a teacher-labeled dataset of built-in prototypes: ``sample`` + ``label`` in one call (EMT by default).

A compatible shortcut over ``mlff_distiller.teachers``: teachers come from ``teachers.get_teacher``, every
snapshot is labeled by ``teachers.label_structure`` (an MD frame keeps the teacher call the MD made for it
instead of being labeled twice), and carries the provenance keys of the teachers package.

Each *run* starts from one prototype — a rattled and strained bulk supercell of an EMT metal
(optionally a random binary alloy), a metal nanocluster (``ase.cluster``) or an H/C/N/O molecule
from ASE's G2 collection — and takes ``snapshots_per_run`` snapshots of a Langevin MD run driven by
the teacher, ``md_interval`` steps apart (the first snapshot is the rattled start). Every snapshot
is labeled by the teacher: energy [eV], forces [N, 3] eV/Å and, for fully periodic structures when
the teacher implements it, stress [3, 3] eV/Å³ (ASE sign convention). Clusters and molecules have a
zero cell, pbc all False and no stress label, so the dataset mixes labeled and unlabeled stress.

Deterministic: run ``k`` draws from ``numpy.random.default_rng([seed, k])`` only, so the same seed
gives identical arrays, and a smaller ``n_structures`` gives a prefix of a larger one.

The teacher is ASE's EMT by default (nothing to download); any teacher name of ``teachers.get_teacher``
(``gfn2-xtb``, ``sevennet-0``...) or ASE calculator import path ``"module:Class"`` works, with keyword
options (``teacher_kwargs``). Every structure's ``extras`` hold ``config_type`` (the prototype kind),
``sample_method`` ("md"), ``sample_seed`` (the run), ``sample_group`` (``"run<k>"``), ``sample_step`` (MD
step), ``sample_temperature`` (K) and the teacher's per-atom ``energies`` when it has them.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.cluster import Decahedron, FaceCenteredCubic, Icosahedron, Octahedron
from ase.collections import g2
from ase.md.langevin import Langevin

from .data.structure import Structure
from .teachers.ase_teachers import ASE_ALIASES

#: metals with EMT parameters (and ASE reference fcc lattice constants)
METALS: tuple[str, ...] = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
#: elements EMT treats (roughly) in molecules
MOLECULE_ELEMENTS = frozenset({"H", "C", "N", "O"})
KINDS: tuple[str, ...] = ("bulk", "cluster", "molecule")
#: teacher name -> "module:Class"; kept under the name this module defined before ``teachers/`` existed
TEACHER_ALIASES = ASE_ALIASES


# -- teacher -----------------------------------------------------------------------------
def load_teacher(spec: str = "emt", kwargs: Optional[dict] = None) -> Calculator:
    """A fresh ASE calculator of ``teachers.get_teacher(spec, **kwargs)`` (a name such as ``emt``,
    ``gfn2-xtb``, or ``"module:Class"``). Raises ValueError naming the spec when it cannot be built."""
    from .teachers import get_teacher

    return get_teacher(spec, **(kwargs or {})).calculator()


# -- prototypes --------------------------------------------------------------------------
def _bulk(rng: np.random.Generator, max_atoms: int) -> Atoms:
    """Rattled, strained fcc supercell [N <= max_atoms], sometimes a random binary alloy."""
    element = str(rng.choice(METALS))
    choices = [
        (c, r)
        for c, r in (
            (True, (2, 2, 2)),
            (False, (3, 3, 3)),
            (True, (2, 2, 3)),
            (False, (2, 2, 2)),
            (True, (1, 1, 2)),
        )
        if (4 if c else 1) * int(np.prod(r)) <= max_atoms
    ]
    if not choices:
        raise ValueError(f"max_atoms={max_atoms} is too small for a bulk supercell (needs >= 8)")
    cubic, reps = choices[int(rng.integers(len(choices)))]
    atoms = bulk(element, "fcc", cubic=cubic).repeat(reps)
    if rng.random() < 0.5:  # random binary alloy: swap a quarter of the sites
        other = str(rng.choice([m for m in METALS if m != element]))
        sites = rng.choice(len(atoms), size=max(1, len(atoms) // 4), replace=False)
        symbols = atoms.get_chemical_symbols()
        for s in sites:
            symbols[int(s)] = other
        atoms.set_chemical_symbols(symbols)
    strain = np.eye(3) + rng.uniform(-0.02, 0.02, size=(3, 3))
    strain = 0.5 * (strain + strain.T)
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.05, size=atoms.positions.shape)
    return atoms


def _cluster(rng: np.random.Generator, max_atoms: int) -> Atoms:
    """A metal nanocluster (icosahedron, octahedron, decahedron or Wulff-like fcc) [N <= max_atoms]."""
    element = str(rng.choice(METALS))
    makers: list[Callable[[], Atoms]] = [
        lambda: Icosahedron(element, 2),  # 13
        lambda: Octahedron(element, 3, 1),  # 13
        lambda: Octahedron(element, 3, 0),  # 19
        lambda: Decahedron(element, 2, 2, 0),  # 13
        lambda: Octahedron(element, 4, 1),  # 38
        lambda: Octahedron(element, 4, 0),  # 44
        lambda: Icosahedron(element, 3),  # 55
        lambda: FaceCenteredCubic(element, [(1, 0, 0), (1, 1, 1)], [2, 2]),  # 55
    ]
    sizes = [13, 13, 19, 13, 38, 44, 55, 55]
    fitting = [m for m, n in zip(makers, sizes) if n <= max_atoms]
    if not fitting:
        raise ValueError(f"max_atoms={max_atoms} is too small for a cluster (needs >= 13)")
    atoms = fitting[int(rng.integers(len(fitting)))]()
    return _as_molecule(atoms, rng, rattle=0.05)


def _molecule_names(max_atoms: int) -> list[str]:
    return [
        name
        for name in g2.names
        if set(g2[name].get_chemical_symbols()) <= MOLECULE_ELEMENTS and 2 <= len(g2[name]) <= max_atoms
    ]


_G2_CACHE: dict[int, list[str]] = {}


def _molecule(rng: np.random.Generator, max_atoms: int) -> Atoms:
    """An H/C/N/O molecule from ASE's G2 collection, slightly rattled."""
    names = _G2_CACHE.get(max_atoms)
    if names is None:
        names = _G2_CACHE[max_atoms] = sorted(_molecule_names(max_atoms))
    if not names:
        raise ValueError(f"max_atoms={max_atoms} is too small for a molecule (needs >= 2)")
    atoms = g2[names[int(rng.integers(len(names)))]]
    return _as_molecule(atoms, rng, rattle=0.02)


def _as_molecule(atoms: Atoms, rng: np.random.Generator, rattle: float) -> Atoms:
    """Zero cell, pbc all False, centred at the origin, rattled by ``rattle`` Å."""
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=np.zeros((3, 3)), pbc=False)
    out.positions -= out.positions.mean(axis=0)
    out.positions += rng.normal(0.0, rattle, size=out.positions.shape)
    return out


PROTOTYPES: dict[str, Callable[[np.random.Generator, int], Atoms]] = {
    "bulk": _bulk,
    "cluster": _cluster,
    "molecule": _molecule,
}


# -- labeling ----------------------------------------------------------------------------
def label(atoms: Atoms, calc: Calculator, results: Optional[dict] = None) -> Structure:
    """A Structure of ``atoms`` with the teacher's energy, forces, (periodic) stress and per-atom energies
    (``teachers.label_structure``); ``results`` reuses a calculation already made for these positions.

    Raises ValueError when the positions or cell (e.g. after an unstable MD run) or a value the
    teacher returns are not finite: a NaN structure is never produced.
    """
    from .teachers import label_structure

    return label_structure(calc, atoms, results=results, calc=calc)


def md_snapshots(
    atoms: Atoms,
    calc: Calculator,
    rng: np.random.Generator,
    *,
    n_snapshots: int,
    md_interval: int,
    temperature_K: float,
    timestep_fs: float,
    friction_per_fs: float = 0.02,
) -> Iterator[Structure]:
    """Label ``atoms`` and ``n_snapshots - 1`` Langevin MD snapshots ``md_interval`` steps apart
    (``extras["sample_step"]`` is the MD step; a frame reuses the force call the MD made for it)."""
    from .teachers.label import kept_results
    from .teachers.sampling import thermalize

    atoms.calc = calc
    first = label(atoms, calc)
    first.extras["sample_step"] = 0
    yield first
    if n_snapshots <= 1:
        return
    thermalize(atoms, temperature_K, rng)
    dyn = Langevin(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    for k in range(1, n_snapshots):
        dyn.run(md_interval)
        structure = label(atoms, calc, results=kept_results(atoms, calc))
        structure.extras["sample_step"] = k * md_interval
        yield structure


def iter_dataset(
    n_structures: int,
    seed: int = 0,
    *,
    teacher: str | Calculator = "emt",
    teacher_kwargs: Optional[dict] = None,
    kinds: Sequence[str] = KINDS,
    max_atoms: int = 64,
    snapshots_per_run: int = 5,
    md_interval: int = 4,
    temperature_K: float = 300.0,
) -> Iterator[Structure]:
    """An iterator over ``n_structures`` teacher-labeled structures (see the module docstring).

    Arguments are checked and the teacher is built before this returns. Runs cycle through
    ``kinds``; run ``k`` uses ``default_rng([seed, k])``. Molecules use a 0.5 fs time step
    (hydrogen), bulk and clusters 2 fs.
    """
    if n_structures < 0:
        raise ValueError(f"n_structures must be >= 0, got {n_structures}")
    if snapshots_per_run < 1 or md_interval < 1:
        raise ValueError("snapshots_per_run and md_interval must be >= 1")
    if not (math.isfinite(temperature_K) and temperature_K >= 0):
        raise ValueError(f"temperature_K must be a finite number >= 0 (kelvin), got {temperature_K}")
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in PROTOTYPES]
    if unknown or not kinds:
        raise ValueError(f"unknown structure kind(s) {unknown}; choose from {', '.join(KINDS)}")
    calc = teacher if not isinstance(teacher, str) else load_teacher(teacher, teacher_kwargs)
    for kind in kinds:  # fail now, not after minutes of MD, when max_atoms is too small
        PROTOTYPES[kind](np.random.default_rng(0), max_atoms)
    return _runs(n_structures, seed, calc, kinds, max_atoms, snapshots_per_run, md_interval, temperature_K)


def _runs(
    n_structures: int,
    seed: int,
    calc: Calculator,
    kinds: tuple[str, ...],
    max_atoms: int,
    snapshots_per_run: int,
    md_interval: int,
    temperature_K: float,
) -> Iterator[Structure]:
    produced = 0
    run = 0
    while produced < n_structures:
        kind = kinds[run % len(kinds)]
        rng = np.random.default_rng([seed, run])
        atoms = PROTOTYPES[kind](rng, max_atoms)
        count = min(snapshots_per_run, n_structures - produced)
        for structure in md_snapshots(
            atoms,
            calc,
            rng,
            n_snapshots=count,
            md_interval=md_interval,
            temperature_K=temperature_K,
            timestep_fs=0.5 if kind == "molecule" else 2.0,
        ):
            structure.extras.update(config_type=kind, sample_method="md", sample_seed=run, sample_group=f"run{run}",
                                    sample_temperature=float(temperature_K))
            yield structure
        produced += count
        run += 1


def generate_dataset(n_structures: int, seed: int = 0, **options) -> list[Structure]:
    """``list(iter_dataset(n_structures, seed, **options))``."""
    return list(iter_dataset(n_structures, seed, **options))
