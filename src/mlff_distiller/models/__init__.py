"""Student models: small, fast, conservative force fields on graph batches.

>>> from mlff_distiller.models import build_model, predict, atoms_to_batch
>>> from mlff_distiller.structures import builtin
>>> model = build_model("schnet", species=[1, 6, 8], cutoff=5.0)
>>> out = predict(model, atoms_to_batch(builtin("aspirin"), model.cutoff))
>>> sorted(out), out["forces"].shape
(['energy', 'forces'], torch.Size([21, 3]))
"""

from .base import StudentModel, edge_vectors
from .graph import atoms_to_batch
from .io import load, read_metadata, save
from .predict import predict
from .registry import available_models, build_model, register_model

__all__ = [
    "StudentModel",
    "atoms_to_batch",
    "available_models",
    "build_model",
    "edge_vectors",
    "load",
    "predict",
    "read_metadata",
    "register_model",
    "save",
]
