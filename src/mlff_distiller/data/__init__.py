"""The guide's public names: datasets, loaders, collate functions, splits, transforms and the key registry."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MolecularDataset": "dataset",
    "MolecularSubset": "dataset",
    "MolecularDataLoader": "loader",
    "create_dataloaders": "loader",
    "molecular_collate_fn": "collate",
    "molecular_collate_fn_no_padding": "collate",
    "train_test_split": "split",
    "masked_mse_loss": "losses",
    "Transform": "transforms",
    "Compose": "transforms",
    "RandomRotation": "transforms",
    "RandomReflection": "transforms",
    "AddNoise": "transforms",
    "NormalizeEnergy": "transforms",
    "NormalizeForces": "transforms",
    "Key": "keys",
    "KeyRegistry": "keys",
    "DEFAULT_KEYS": "keys",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
