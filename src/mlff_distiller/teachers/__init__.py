"""Teachers, sampling and labeling: the slow, accurate side of distillation.

- ``get_teacher(name, **options)`` -> ``Teacher`` (``emt``, ``gfn2-xtb``, ``sevennet-0``, ``mace:<file>``,
  ``chgnet``, ``module:Class``); ``Teacher.calculator()`` is a fresh ASE calculator, ``.info()`` what files record.
- ``label_structure(teacher, atoms, hvp=K, rng=...)`` -> ``Structure`` with energy, forces, stress (periodic),
  per-atom energies, Hessian-vector products (``hvp`` = H·v, eV/Å²) and provenance.
- ``sample_structures(seeds, teacher, methods=..., temperatures=..., n=..., seed=...)`` -> ``list[Atoms]``.
- ``label_file(src, dst, teacher, hvp=K, workers=N, engine="local" | "ray")`` -> ``LabelSummary``
  (resumable after ``kill -9``, output order = input order).
"""

from .base import UNITS, Teacher, from_calculator
from .extras import MissingExtraError
from .hvp import cartesian_directions, hessian_finite_difference, hvp_finite_difference, random_directions, structure_rng
from .label import PROVENANCE_KEYS, label_structure
from .labeling import LabelSummary, label_file
from .registry import as_teacher, available_teachers, get_teacher, register_teacher
from .sampling import METHODS as SAMPLE_METHODS
from .sampling import iter_samples, load_seeds, sample_structures

__all__ = [
    "Teacher", "UNITS", "from_calculator", "MissingExtraError", "get_teacher", "register_teacher", "available_teachers",
    "as_teacher", "label_structure", "PROVENANCE_KEYS", "random_directions", "cartesian_directions",
    "hvp_finite_difference", "hessian_finite_difference", "structure_rng", "sample_structures", "iter_samples",
    "load_seeds", "SAMPLE_METHODS", "label_file", "LabelSummary",
]
