"""Stress/virial normalisation against ASE's own conversions and a real EMT stress."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.labels import LabelKeys, finalize_labels, to_stress_matrix


@pytest.fixture(scope="module")
def emt_cell():
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=3)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.02, 0.0], [0.0, 1.0, 0.03], [0.01, 0.0, 1.0]]), scale_atoms=True)
    atoms.calc = EMT()
    return atoms, atoms.get_stress(voigt=False)


def test_voigt_nine_and_matrix_agree_with_ase(emt_cell):
    atoms, sigma = emt_cell
    kw = dict(key="stress", cell=atoms.cell.array, path="f", index=0)
    voigt = full_3x3_to_voigt_6_stress(sigma)
    assert np.array_equal(to_stress_matrix(voigt, **kw), voigt_6_to_full_3x3_stress(voigt))
    assert np.array_equal(to_stress_matrix(sigma.reshape(9), **kw), sigma)
    assert np.array_equal(to_stress_matrix(sigma[None], **kw), sigma)


def test_virial_becomes_stress_with_ase_sign(emt_cell):
    atoms, sigma = emt_cell
    virial = -sigma * atoms.get_volume()
    got = to_stress_matrix(virial.reshape(9), key="virial", cell=atoms.cell.array, path="f", index=0)
    np.testing.assert_allclose(got, sigma, rtol=1e-12, atol=1e-15)


def test_virial_without_volume_is_an_error():
    with pytest.raises(DataFormatError, match=r"f, structure 4, key 'virial'.*volume"):
        to_stress_matrix(np.ones(9), key="virial", cell=np.zeros((3, 3)), path="f", index=4)


def test_bad_shapes_and_values_name_file_index_key():
    common = dict(natoms=2, cell=np.eye(3) * 5, path="data.xyz", index=7)
    keys = {"energy": "E", "forces": "F", "stress": "S"}
    with pytest.raises(DataFormatError, match=r"data.xyz, structure 7, key 'F'.*shape \(3, 3\)"):
        finalize_labels(energy=None, forces=np.zeros((3, 3)), stress=None, keys=keys, **common)
    with pytest.raises(DataFormatError, match=r"structure 7, key 'E'.*NaN"):
        finalize_labels(energy=np.nan, forces=None, stress=None, keys=keys, **common)
    with pytest.raises(DataFormatError, match=r"key 'S'.*6 \(Voigt\), 9"):
        finalize_labels(energy=None, forces=None, stress=np.zeros(5), keys=keys, **common)
    with pytest.raises(DataFormatError, match=r"key 'F'.*NaN or inf"):
        finalize_labels(energy=None, forces=np.array([[0, 0, np.inf], [0, 0, 0]]), stress=None, keys=keys, **common)


def test_default_keys_try_aliases_explicit_keys_do_not():
    keys = LabelKeys()
    assert keys.candidates("forces") == ("forces", "force", "REF_forces")  # MACE's convention last
    assert "virial" in keys.candidates("stress")
    explicit = LabelKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress")
    assert explicit.candidates("energy") == ("REF_energy",)
    assert not explicit.is_default("forces")
