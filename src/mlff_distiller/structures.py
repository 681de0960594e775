"""Built-in seed structures (nothing to download): small molecules and periodic cells.

``builtin(name)`` returns a fresh ``ase.Atoms``; ``builtin_names()`` lists the names. Molecules have no
cell and ``pbc`` all False; periodic cells are cubic supercells at the usual lattice constants.

- ``aspirin`` (C9H8O4, 21 atoms): a snapshot of the MD17 aspirin trajectory (from the nequip test data,
  MIT licence), not a relaxed geometry;
- ``ethanol``, ``water``, ``methane``, ``benzene``: ASE's g2 geometries;
- ``cu64``: fcc Cu, a = 3.61 Å, 2×2×4 cubic cells (64 atoms); ``cu32``: 2×2×2 cubic cells (32 atoms);
- ``si216``: diamond Si, a = 5.43 Å, 3×3×3 cubic cells (216 atoms); ``si64``: 2×2×2 (64 atoms).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from ase import Atoms

_ASPIRIN = """\
C   2.13448882 -0.98436105 -0.19521789
C   0.76264381  0.95941395 -1.67992890
C   2.66034484 -0.40792605 -1.30730391
C   1.91031682  0.39396596 -2.14701986
C  -3.03019023  1.49540496  0.71966213
C   0.84942484 -0.55087107  0.28437510
C   0.23844682  0.47350594 -0.40442190
O   0.89789581 -2.27643204  1.73006105
O  -2.38345218  0.41777894 -1.46285689
O  -0.47620118 -0.52908707  2.33925915
C   0.39299181 -1.19023705  1.53798211
C  -2.12298512  0.95175993 -0.39770490
O  -0.80466616  1.28624594  0.11050910
H  -0.49380317 -1.18679202  3.09597421
H   2.55473471 -1.80249703  0.39213109
H   0.33068982  1.85571098 -2.34526396
H   3.80379391 -0.49371904 -1.45620286
H   2.23114085  0.55718595 -3.12414980
H  -2.70893025  2.48465800  0.92692810
H  -4.13048315  1.48216701  0.43126610
H  -2.87414813  1.00320899  1.69948506
"""


def _from_table(text: str) -> Atoms:
    rows = [line.split() for line in text.strip().splitlines()]
    symbols = [r[0] for r in rows]
    positions = np.array([[float(v) for v in r[1:4]] for r in rows])
    return Atoms(symbols=symbols, positions=positions)


def _g2(name: str) -> Callable[[], Atoms]:
    def build() -> Atoms:
        from ase.build import molecule

        return molecule(name)

    return build


def _bulk(symbol: str, structure: str, a: float, repeat: tuple[int, int, int]) -> Callable[[], Atoms]:
    def build() -> Atoms:
        from ase.build import bulk

        return bulk(symbol, structure, a=a, cubic=True).repeat(repeat)

    return build


_BUILDERS: dict[str, Callable[[], Atoms]] = {
    "aspirin": lambda: _from_table(_ASPIRIN),
    "ethanol": _g2("CH3CH2OH"),
    "water": _g2("H2O"),
    "methane": _g2("CH4"),
    "benzene": _g2("C6H6"),
    "cu32": _bulk("Cu", "fcc", 3.61, (2, 2, 2)),
    "cu64": _bulk("Cu", "fcc", 3.61, (2, 2, 4)),
    "si64": _bulk("Si", "diamond", 5.43, (2, 2, 2)),
    "si216": _bulk("Si", "diamond", 5.43, (3, 3, 3)),
}


def builtin_names() -> list[str]:
    """Names accepted by :func:`builtin`."""
    return sorted(_BUILDERS)


def builtin(name: str) -> Atoms:
    """A fresh copy of the built-in structure ``name`` (ValueError listing the names otherwise)."""
    key = name.lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown built-in structure {name!r}; choose from {', '.join(builtin_names())}")
    atoms = _BUILDERS[key]()
    atoms.info["name"] = key
    return atoms


__all__ = ["builtin", "builtin_names"]
