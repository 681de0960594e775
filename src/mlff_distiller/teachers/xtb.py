"""``gfn2-xtb`` / ``gfn1-xtb``: tblite's ASE calculator (semi-empirical tight binding; molecules).

Defaults differ from tblite's in two ways, both recorded in the teacher's options:
``verbosity=0`` (no SCF log on stdout) and ``cache_api=False``. tblite by default restarts each SCF
from the previous structure's wavefunction, so a label would depend on what was computed before it
(differences at the SCF tolerance) and on the number of workers; with ``cache_api=False`` every
structure starts from the same guess and its labels are a function of the structure alone. Pass
``cache_api=True`` to trade that for speed (≈2× on MD-like sequences). For Hessian-vector products,
a tighter SCF (``accuracy=0.01``) lowers finite-difference noise.
"""

from __future__ import annotations

from .base import Teacher, package_version
from .extras import require

METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}


def xtb_teacher(name: str, options: dict) -> Teacher:
    module = require("tblite.ase", None, f"teacher {name!r}", pip="'tblite>=0.4'")
    opts = {"method": METHODS[name], "verbosity": 0, "cache_api": False}
    if "method" in options and options["method"] != METHODS[name]:
        raise ValueError(f"teacher {name!r}: option method={options['method']!r} contradicts the teacher name")
    opts.update(options)
    unknown = sorted(set(opts) - set(module.TBLite.default_parameters) - {"atoms", "directory", "label"})
    if unknown:
        raise ValueError(
            f"teacher {name!r}: unknown option(s) {unknown}; tblite accepts {sorted(module.TBLite.default_parameters)}"
        )

    def build():
        return module.TBLite(**opts)

    return Teacher(
        name,
        build,
        version=f"tblite {package_version('tblite')}",
        options=opts,
        periodic_ok=True,
        molecules_ok=True,
        default_hvp_step=5e-3,
        calculator_class="tblite.ase.TBLite",
    )
