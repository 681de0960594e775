"""Built-in seed structures: the right composition and geometry, fresh copies each call."""

import numpy as np
import pytest
from ase.io import read

from mlff_distiller.structures import builtin, builtin_names

REALDATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "realdata"


def test_aspirin_is_the_md17_snapshot():
    atoms = builtin("aspirin")
    assert atoms.get_chemical_formula() == "C9H8O4" and not atoms.pbc.any()
    path = REALDATA / "nequip" / "aspirin.xyz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    reference = read(path, 0)
    assert list(atoms.numbers) == list(reference.numbers)
    np.testing.assert_allclose(atoms.positions, reference.positions, atol=1e-8)


@pytest.mark.parametrize(
    "name, n, formula, periodic",
    [("cu64", 64, "Cu64", True), ("si216", 216, "Si216", True), ("water", 3, "H2O", False)],
)
def test_sizes(name, n, formula, periodic):
    atoms = builtin(name)
    assert len(atoms) == n and atoms.get_chemical_formula() == formula and atoms.pbc.all() == periodic
    if periodic:  # cubic cells: volume = N / (atoms per cubic cell) * a^3
        per_cell, a = (4, 3.61) if name.startswith("cu") else (8, 5.43)
        assert atoms.get_volume() == pytest.approx(n / per_cell * a**3)


def test_fresh_copies_and_unknown_name():
    a = builtin("ethanol")
    a.positions += 1.0
    assert not np.allclose(builtin("ethanol").positions, a.positions)
    with pytest.raises(ValueError, match="aspirin"):
        builtin("unobtainium")
    assert "aspirin" in builtin_names()
