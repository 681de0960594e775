"""The guide's public names: datasets, loaders, collate functions, splits, transforms and the key registry."""

from __future__ import annotations

from ..lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
