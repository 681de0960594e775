"""``Teacher``: a named, versioned recipe for a fresh ASE calculator.

A teacher records what labeled a file (name, version, options, units) and builds a new calculator
whenever asked (``calculator()``), so that every worker process or Ray actor holds its own. Units are
ASE's: energy eV, forces eV/Å, stress eV/Å³ (ASE sign), Hessian-vector products eV/Å².
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

#: units of everything a teacher labels (ASE's)
UNITS: dict[str, str] = {
    "energy": "eV",
    "energies": "eV",
    "forces": "eV/Å",
    "stress": "eV/Å^3",
    "hvp": "eV/Å^2",
    "positions": "Å",
}


class Teacher:
    """A teacher: builds fresh ASE calculators and describes itself.

    name:        the spec it was made from (``"emt"``, ``"gfn2-xtb"``, ``"mace:/models/x.model"``,
                 ``"ase.calculators.lj:LennardJones"``); ``get_teacher(name, **options)`` rebuilds it
    version:     version of the package providing the calculator (and model, where it has one)
    options:     JSON-able keyword options the calculator was built with
    periodic_ok / molecules_ok: which structures it can label (``check(atoms)`` refuses the others)
    default_hvp_step: central-difference step (Å) suited to its numerical precision
    rebuildable: False for a teacher wrapping a calculator instance (it cannot be sent to workers)
    """

    units = UNITS

    def __init__(
        self,
        name: str,
        build: Callable[[], object],
        *,
        version: str = "unknown",
        options: Optional[dict] = None,
        periodic_ok: bool = True,
        molecules_ok: bool = True,
        default_hvp_step: float = 1e-3,
        calculator_class: str = "",
        rebuildable: bool = True,
        devices: tuple[str, ...] = ("cpu",),
    ) -> None:
        self.name = name
        self.version = version
        self.options = dict(options or {})
        self.periodic_ok = periodic_ok
        self.molecules_ok = molecules_ok
        self.default_hvp_step = float(default_hvp_step)
        self.calculator_class = calculator_class
        self.rebuildable = rebuildable
        self.devices = devices
        self._build = build

    def calculator(self):
        """A fresh ASE calculator (no state shared with earlier calls)."""
        return self._build()

    def info(self) -> dict:
        """JSON-able description stored with every labeled file: name, version, options, units."""
        out = {"name": self.name, "version": self.version, "options": self.options, "units": dict(self.units)}
        if self.calculator_class:
            out["calculator"] = self.calculator_class
        return json.loads(json.dumps(out, default=_json_default))

    def check(self, atoms) -> None:
        """ValueError when this teacher cannot label ``atoms`` (periodic cell / molecule)."""
        periodic = bool(np.any(atoms.pbc))
        if periodic and not self.periodic_ok:
            raise ValueError(f"teacher {self.name!r} labels molecules only; got a periodic structure ({atoms.symbols})")
        if not periodic and not self.molecules_ok:
            raise ValueError(
                f"teacher {self.name!r} labels periodic structures only; got a molecule ({atoms.symbols}): "
                "put it in a vacuum box with pbc=True"
            )

    def hvp(self, atoms, directions: np.ndarray) -> Optional[np.ndarray]:
        """Hessian-vector products by autograd, ``[N, K, 3]`` eV/Å², or None when this teacher has
        none (then finite differences of its forces are used). ``directions``: ``[N, K, 3]``."""
        return None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Teacher({self.name!r}{', ' + opts if opts else ''}; version {self.version})"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def from_calculator(calc, name: Optional[str] = None) -> Teacher:
    """A Teacher around an existing calculator instance (its ``calculator()`` returns that instance;
    it cannot be rebuilt in another process, so labeling with it runs in this process only)."""
    cls = type(calc)
    return Teacher(
        name or f"{cls.__module__}:{cls.__qualname__}",
        lambda: calc,
        version=package_version(cls.__module__),
        options={},
        calculator_class=f"{cls.__module__}.{cls.__qualname__}",
        rebuildable=False,
    )


@lru_cache(maxsize=None)
def package_version(module_name: str) -> str:
    """The installed version of the distribution providing top-level module ``module_name``."""
    from importlib import metadata

    top = module_name.split(".")[0]
    try:
        dists = metadata.packages_distributions().get(top) or [top]
    except Exception:  # pragma: no cover - broken metadata
        dists = [top]
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
