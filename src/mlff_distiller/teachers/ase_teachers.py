"""Teachers that ship with ASE (``emt``, ``lj``, ``morse``) and any calculator by import path.

``"module:Class"`` (or ``"module:function"`` returning a calculator) is called with the teacher's
keyword options; ASE calculators that swallow unknown keywords get a warning naming them.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Optional

from .base import Teacher, package_version

#: short names for calculators that ship with ASE
ASE_ALIASES: dict[str, str] = {
    "emt": "ase.calculators.emt:EMT",
    "lj": "ase.calculators.lj:LennardJones",
    "morse": "ase.calculators.morse:MorsePotential",
}


def resolve(spec: str):
    """The callable named by ``"module:attr.path"`` (ValueError naming the spec otherwise)."""
    if ":" not in spec:
        raise ValueError(f"teacher {spec!r}: expected a known teacher name or an import path 'module:Class'")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"teacher {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"teacher {spec!r}: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"teacher {spec!r}: {spec} is not callable")
    return factory


def unknown_options(factory, options: dict) -> list[str]:
    """Keys an ASE calculator would swallow through ``**kwargs`` without knowing them.

    Checked only for classes with ``**kwargs`` and a non-empty ``default_parameters`` dict.
    """
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return []
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []  # the call itself raises TypeError for an unknown keyword
    known = getattr(factory, "default_parameters", None)
    if not isinstance(known, dict) or not known:
        return []
    named = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return sorted(set(options) - named - set(known))


def build(spec: str, factory, options: dict):
    """``factory(**options)`` checked to be an ASE calculator (ValueError naming ``spec`` otherwise)."""
    try:
        calc = factory(**options)
    except TypeError as exc:
        raise ValueError(f"teacher {spec!r}: bad keyword options {options!r} ({exc})") from exc
    if not hasattr(calc, "get_potential_energy") and not hasattr(calc, "calculate"):
        raise ValueError(f"teacher {spec!r}: {spec}(...) is not an ASE calculator")
    return calc


def import_path_teacher(name: str, options: Optional[dict] = None) -> Teacher:
    """A teacher from an alias (``emt``, ``lj``, ``morse``) or an import path ``module:Class``."""
    options = dict(options or {})
    path = ASE_ALIASES.get(name.lower(), name)
    factory = resolve(path)
    unknown = unknown_options(factory, options)
    if unknown:
        warnings.warn(
            f"teacher {name!r}: option(s) {unknown} are not among {path}'s parameters and may be ignored",
            UserWarning,
            stacklevel=3,
        )
    build(name, factory, options)  # fail now, naming the options, not in a worker later
    module_name = path.partition(":")[0]
    canonical = name.lower() if name.lower() in ASE_ALIASES else name
    return Teacher(
        canonical,
        lambda: build(name, factory, options),
        version=package_version(module_name),
        options=options,
        calculator_class=path.replace(":", "."),
    )
