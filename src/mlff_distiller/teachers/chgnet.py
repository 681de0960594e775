"""``chgnet``: CHGNet's pretrained model (weights inside the ``chgnet`` wheel); periodic structures.

Optional extra ``chgnet`` (``pip install 'mlff_distiller[chgnet]'``). CHGNet needs a non-singular cell:
molecules must be put in a vacuum box with ``pbc=True`` first. Its calculator returns stress in eV/Å³.
"""

from __future__ import annotations

from .base import Teacher, package_version
from .extras import require


def chgnet_teacher(name: str, options: dict) -> Teacher:
    module = require("chgnet.model.dynamics", "chgnet", f"teacher {name!r}")
    opts = {"use_device": "cpu"}
    if "device" in options:
        options = dict(options)
        opts["use_device"] = options.pop("device")
    opts.update(options)

    def build():
        return module.CHGNetCalculator(**opts)

    return Teacher(
        name,
        build,
        version=f"chgnet {package_version('chgnet')}",
        options=opts,
        molecules_ok=False,
        default_hvp_step=1e-2,
        calculator_class="chgnet.model.dynamics.CHGNetCalculator",
        devices=("cpu", "cuda"),
    )
