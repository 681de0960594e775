"""``sevennet-0``: SevenNet's pretrained universal potential (weights inside the ``sevenn`` wheel).

Optional extra ``sevenn`` (``pip install 'mlff_distiller[sevenn]'``, pins ``sevenn==0.13.0``); it cannot
share an environment with ``mace-torch`` (their ``e3nn`` pins clash). Runs on ``device="cpu"`` unless told
(``device="cuda"``). The model computes in float32, hence the larger default finite-difference step
(1e-2 Å) for Hessian-vector products.
"""

from __future__ import annotations

import warnings

from .base import Teacher, package_version
from .extras import require


def sevennet_teacher(name: str, options: dict) -> Teacher:
    module = require("sevenn.calculator", "sevenn", f"teacher {name!r}")
    opts = {"device": "cpu"}
    opts.update(options)
    if "model" in opts and opts["model"] != "7net-0":
        raise ValueError(f"teacher {name!r} is the 7net-0 model; use 'module:Class' for other SevenNet models")
    opts.pop("model", None)

    def build():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*accelerator.*")
            return module.SevenNetCalculator("7net-0", **opts)

    return Teacher(
        name,
        build,
        version=f"sevenn {package_version('sevenn')}; model 7net-0",
        options=opts,
        default_hvp_step=1e-2,
        calculator_class="sevenn.calculator.SevenNetCalculator",
        devices=("cpu", "cuda"),
    )
