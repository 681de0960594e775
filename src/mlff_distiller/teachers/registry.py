"""``get_teacher(name, **options)``: every teacher by name.

Built in: ``emt`` (ASE; the test teacher), ``lj``, ``morse`` (ASE), ``gfn2-xtb`` / ``gfn1-xtb`` (tblite),
``sevennet-0`` (extra ``sevenn``), ``mace:<model file>`` (extra ``mace``), ``chgnet`` (extra ``chgnet``),
and any ASE calculator as ``module:Class`` with keyword options. Optional packages are imported only when
their teacher is asked for; a missing one raises ``MissingExtraError`` naming the extra to install.
``register_teacher`` adds a name in this process (worker processes rebuild teachers by name, so a teacher
meant for ``workers > 1`` or Ray should be importable as ``module:Class``).
"""

from __future__ import annotations

from typing import Callable

from .base import Teacher

#: name -> factory(name, options) -> Teacher, for the built-in names
_FACTORIES: dict[str, Callable[[str, dict], Teacher]] = {}


def _builtin() -> dict[str, Callable[[str, dict], Teacher]]:
    from .ase_teachers import ASE_ALIASES, import_path_teacher
    from .chgnet import chgnet_teacher
    from .sevennet import sevennet_teacher
    from .xtb import METHODS, xtb_teacher

    out: dict[str, Callable[[str, dict], Teacher]] = {k: import_path_teacher for k in ASE_ALIASES}
    out.update({k: xtb_teacher for k in METHODS})
    out["sevennet-0"] = sevennet_teacher
    out["chgnet"] = chgnet_teacher
    return out


def register_teacher(name: str, factory: Callable[[str, dict], Teacher]) -> None:
    """Make ``get_teacher(name, **options)`` call ``factory(name, options)`` (this process only)."""
    _FACTORIES[name.lower()] = factory


def available_teachers() -> list[str]:
    """The teacher names ``get_teacher`` knows (besides ``mace:<path>`` and ``module:Class``)."""
    return sorted(set(_builtin()) | set(_FACTORIES))


def get_teacher(name: str, **options) -> Teacher:
    """The teacher ``name`` built with keyword ``options`` (checked now: a bad option fails here).

    ValueError for an unknown name or bad options, MissingExtraError (an ImportError) when an optional
    package is missing, FileNotFoundError for a missing ``mace:`` model file.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"teacher name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if key in _FACTORIES:
        return _FACTORIES[key](key, options)
    builtin = _builtin()
    if key in builtin:
        return builtin[key](key, options)
    if key.startswith("mace:"):
        from .mace import mace_teacher

        return mace_teacher(name.strip(), options)
    if ":" in name:
        from .ase_teachers import import_path_teacher

        return import_path_teacher(name.strip(), options)
    raise ValueError(
        f"unknown teacher {name!r}; choose from {', '.join(available_teachers())}, "
        "'mace:<model file>' or an import path 'module:Class'"
    )


def as_teacher(teacher_or_calc, **options) -> Teacher:
    """A Teacher from a Teacher, a name (with options) or an ASE calculator instance."""
    from .base import from_calculator

    if isinstance(teacher_or_calc, Teacher):
        if options:
            raise ValueError("options apply to a teacher name, not to a Teacher object")
        return teacher_or_calc
    if isinstance(teacher_or_calc, str):
        return get_teacher(teacher_or_calc, **options)
    if hasattr(teacher_or_calc, "get_potential_energy") or hasattr(teacher_or_calc, "calculate"):
        if options:
            raise ValueError("options apply to a teacher name, not to a calculator instance")
        return from_calculator(teacher_or_calc)
    raise TypeError(f"expected a teacher name, a Teacher or an ASE calculator, got {type(teacher_or_calc).__name__}")
