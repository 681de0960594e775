"""``mace:<path to a model file>``: a MACE model through ``mace.calculators.MACECalculator``.

Optional extra ``mace`` (``pip install 'mlff_distiller[mace]'``; not installable beside ``sevenn``).
Importing ``mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process, which turns off
torch's safe loading everywhere. ``mace`` is imported only when a ``mace:`` teacher is requested, and the
variable is restored (unset, or set back to its earlier value) right after the import. A ``.model`` file
is a pickle that MACE unpickles: only label with model files you trust.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .base import Teacher, package_version
from .extras import require

_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def import_mace_calculators(name: str):
    """``mace.calculators``, imported with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` restored afterwards."""
    before = os.environ.get(_ENV)
    try:
        return require("mace.calculators", "mace", f"teacher {name!r}")
    finally:
        if before is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = before


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mace_teacher(name: str, options: dict) -> Teacher:
    path = Path(name.partition(":")[2]).expanduser()
    if not path.name:
        raise ValueError(f"teacher {name!r}: give the model file as 'mace:/path/to/model'")
    if not path.is_file():
        raise FileNotFoundError(2, "no such MACE model file", str(path))
    module = import_mace_calculators(name)
    opts = {"device": "cpu", "default_dtype": "float64"}
    opts.update(options)

    def build():
        return module.MACECalculator(model_paths=str(path), **opts)

    return Teacher(
        f"mace:{path}",
        build,
        version=f"mace-torch {package_version('mace')}; model sha256 {file_sha256(path)}",
        options=opts,
        default_hvp_step=1e-3 if opts.get("default_dtype") == "float64" else 1e-2,
        calculator_class="mace.calculators.MACECalculator",
        devices=("cpu", "cuda"),
    )
