"""Model names -> classes; ``build_model`` and ``available_models``."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import StudentModel, parse_dtype
from .painn import PaiNN
from .schnet import SchNet

__all__ = ["build_model", "available_models", "register_model"]

_MODELS: dict[str, type[StudentModel]] = {}


def register_model(cls: type[StudentModel]) -> type[StudentModel]:
    """Add a ``StudentModel`` subclass under its lower-case ``name``."""
    name = cls.name.lower()
    if not name:
        raise ValueError(f"{cls.__name__} has no name")
    _MODELS[name] = cls
    return cls


def available_models() -> list[str]:
    """Names accepted by ``build_model`` (lower-case, sorted)."""
    return sorted(_MODELS)


def build_model(name: str, *, species: Sequence[int], cutoff: float, dtype: Any = torch.float32, **hyper: Any) -> StudentModel:
    """A freshly initialised student ``name`` for atomic numbers ``species`` and ``cutoff`` Å.

    ``hyper`` are the architecture's hyperparameters (e.g. ``hidden``, ``layers``, ``rbf``); an
    unknown one is a TypeError naming it. ``build_model(**model.config)`` rebuilds ``model``.
    """
    key = str(name).lower()
    if key not in _MODELS:
        raise ValueError(f"unknown student model {name!r}; available: {available_models()}")
    cls = _MODELS[key]
    try:
        return cls(species, cutoff, parse_dtype(dtype), **hyper)
    except TypeError as exc:
        raise TypeError(f"model {key!r}: {exc}") from exc


register_model(SchNet)
register_model(PaiNN)
