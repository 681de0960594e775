"""Lazy package exports (PEP 562): a package names its public objects and the modules that hold
them, and each module is imported on first access to one of its names, so importing the package
itself stays cheap (no torch, Lightning or h5py until they are needed)."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(namespace: dict, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the package whose ``globals()`` is ``namespace``:
    ``exports`` maps each public name to the module (relative to the package) that defines it; a name
    is imported on first access and then kept in the package's namespace."""
    package = namespace["__name__"]

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
