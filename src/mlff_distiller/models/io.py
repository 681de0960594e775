"""Saving and loading students: one ``.safetensors`` file, weights plus a JSON header; no pickle.

The header (safetensors metadata key ``"mlff_distiller"``, a JSON string) holds ``format``,
``format_version``, the model ``config`` (architecture + hyperparameters, species, cutoff,
dtype), ``reference_energies`` {Z: eV}, ``scale``/``shift`` (eV), ``units``,
``package_version`` and the caller's ``metadata`` (teacher info, data fingerprint, ...).
The tensors are the model's ``state_dict``; loading rebuilds the model from the config with the
project's own classes and copies the tensors in (strict: a missing or extra key is an error).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from safetensors import safe_open
from safetensors.torch import save as _safetensors_bytes

from .base import StudentModel
from .registry import build_model

__all__ = ["save", "load", "read_metadata", "FORMAT", "FORMAT_VERSION", "UNITS"]

FORMAT = "mlff_distiller.student"
FORMAT_VERSION = 1
HEADER_KEY = "mlff_distiller"
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3", "hvp": "eV/Å^2"}

PathLike = Union[str, Path]


def _package_version() -> str:
    from .. import __version__

    return __version__


def save(model: StudentModel, path: PathLike, *, metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model`` to ``path`` (one ``.safetensors`` file, replaced atomically); returns the path.

    ``metadata`` must be JSON-serialisable (it is stored verbatim under ``"metadata"``).
    """
    path = Path(path)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config,
        "species": list(model.species),
        "cutoff": model.cutoff,
        "reference_energies": {str(z): e for z, e in model.reference_energy_dict().items()},
        "scale": float(model.scale),
        "shift": float(model.shift),
        "units": dict(UNITS),
        "package_version": _package_version(),
        "metadata": dict(metadata or {}),
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model metadata must be JSON-serialisable (finite numbers, str, lists, dicts): {exc}") from exc
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    from ..data.publish import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, _safetensors_bytes(tensors, metadata={HEADER_KEY: text}))


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON header of a student file (see module docstring); ValueError when it is not one
    or when its format version is newer than this package reads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no student model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(HEADER_KEY)
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise ValueError(f"{path}: not a safetensors file ({exc})") from exc
    if raw is None:
        raise ValueError(f"{path}: a safetensors file without an mlff_distiller header (not a student model file)")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: unreadable mlff_distiller header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: header format is {header.get('format') if isinstance(header, dict) else header!r}, expected {FORMAT!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: student file format version {version} is newer than this mlff_distiller "
            f"({_package_version()}) reads (<= {FORMAT_VERSION}); upgrade mlff_distiller"
        )
    return header


def load(path: PathLike, *, device: Any = "cpu") -> StudentModel:
    """Rebuild the student saved at ``path`` (never unpickles), in eval mode on ``device``."""
    path = Path(path)
    header = read_metadata(path)
    config = dict(header["config"])
    name = config.pop("name", None)
    if name is None:
        raise ValueError(f"{path}: model config has no 'name'")
    try:
        model = build_model(name, **config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot rebuild the student from its config {header['config']}: {exc}") from exc
    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise ValueError(f"{path}: weights do not match model {name!r}: missing {missing}, unexpected {extra}")
    model.load_state_dict(tensors, strict=True)
    for key in ("scale", "shift"):
        if key in header and not math.isclose(float(getattr(model, key)), header[key], rel_tol=0, abs_tol=0):
            raise ValueError(f"{path}: header {key}={header[key]} disagrees with the stored tensor {float(getattr(model, key))}")
    return model.to(device).eval()
