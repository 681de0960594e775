"""Hessian-vector products: H·v with H = ∂²E/∂x∂x (eV/Å²), checked against an analytic Hessian, torch
autograd and their own finite-difference error; directions are per-structure and reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from mlff_distiller.structures import builtin
from mlff_distiller.teachers import (
    cartesian_directions,
    hessian_finite_difference,
    hvp_finite_difference,
    label_structure,
    random_directions,
    structure_rng,
)
from mlff_distiller.teachers.toy import Harmonic, HarmonicTeacher

K, R0 = 2.0, 1.3


@pytest.fixture(scope="module")
def molecule():
    atoms = builtin("ethanol")
    atoms.rattle(0.05, seed=7)
    return atoms


def _h_dot(hessian: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """H·v_k for directions [N, K, 3] -> [N, K, 3]."""
    n, k, _ = directions.shape
    v = directions.transpose(1, 0, 2).reshape(k, 3 * n)  # [K, 3N]
    return (v @ hessian.T).reshape(k, n, 3).transpose(1, 0, 2)


def test_directions_are_unit_reproducible_and_per_structure():
    d = random_directions(9, 4, structure_rng(3, 11))
    assert d.shape == (9, 4, 3) and d.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(d.transpose(1, 0, 2).reshape(4, -1), axis=1), 1.0, rtol=1e-14)
    assert np.array_equal(d, random_directions(9, 4, structure_rng(3, 11)))
    assert not np.allclose(d, random_directions(9, 4, structure_rng(3, 12)))
    assert not np.allclose(d, random_directions(9, 4, structure_rng(4, 11)))
    e = cartesian_directions(2)
    assert e.shape == (2, 6, 3) and e[1, 4, 1] == 1.0 and e.sum() == 6.0


def test_finite_difference_hvp_is_h_dot_v_within_its_error(molecule):
    calc = Harmonic(k=K, r0=R0)
    exact = _h_dot(calc.hessian(molecule), random_directions(len(molecule), 3, structure_rng(0, 0)))
    d = random_directions(len(molecule), 3, structure_rng(0, 0))
    before = molecule.positions.copy()
    errors = []
    for h in (1e-2, 1e-3):
        fd = hvp_finite_difference(calc, molecule, d, h)
        errors.append(np.abs(fd - exact).max())
    scale = np.abs(exact).max()
    assert scale > 1.0
    assert errors[1] < 1e-5 * scale  # the sign convention: H·v, not −H·v (that would be off by 2|Hv|)
    assert 50 < errors[0] / errors[1] < 200  # central differences: error ∝ h²
    assert np.array_equal(molecule.positions, before)  # atoms left as they were


def test_curvature_sign_at_a_minimum():
    """At a minimum every curvature v·H·v is positive: a flipped sign fails here whatever H is."""
    from ase import Atoms

    atoms = Atoms("H3", positions=[[0, 0, 0], [R0, 0, 0], [R0 / 2, R0 * np.sqrt(3) / 2, 0]])  # every spring at rest
    d = random_directions(3, 5, structure_rng(1, 2))
    hv = hvp_finite_difference(Harmonic(k=K, r0=R0), atoms, d, 1e-3)
    curvature = np.einsum("nkc,nkc->k", d, hv)
    assert (curvature > 1e-3).all()


def test_full_hessian_by_finite_differences(molecule):
    calc = Harmonic(k=K, r0=R0)
    np.testing.assert_allclose(hessian_finite_difference(calc, molecule, 1e-3), calc.hessian(molecule), atol=1e-5)


def test_label_structure_hvp_autograd_and_fd(molecule):
    teacher = HarmonicTeacher(K, R0)
    exact_h = Harmonic(k=K, r0=R0).hessian(molecule)
    auto = label_structure(teacher, molecule, hvp=3, rng=structure_rng(5, 1))
    fd = label_structure(teacher, molecule, hvp=3, rng=structure_rng(5, 1), hvp_method="fd", hvp_step=1e-3)
    d = auto.extras["hvp_directions"]
    assert np.array_equal(d, fd.extras["hvp_directions"]) and d.shape == (len(molecule), 3, 3)
    exact = _h_dot(exact_h, d)
    np.testing.assert_allclose(auto.extras["hvp"], exact, rtol=0, atol=1e-12)  # autograd: exact
    err = np.abs(fd.extras["hvp"] - exact).max()
    assert 1e-10 < err < 1e-5  # finite differences: O(h²), not exact
    with pytest.raises(ValueError, match="no autograd"):
        label_structure("emt", molecule, hvp=1, rng=structure_rng(0, 0), hvp_method="autograd")


def test_label_structure_full_hessian(molecule):
    s = label_structure(HarmonicTeacher(K, R0), molecule, hessian=True, hvp_method="fd", hvp_step=1e-3)
    n = len(molecule)
    assert s.extras["hvp"].shape == (n, 3 * n, 3)
    assert np.array_equal(s.extras["hvp_directions"], cartesian_directions(n))
    full = s.extras["hvp"].transpose(0, 2, 1).reshape(3 * n, 3 * n)  # hvp[a, k, c] = H[3a + c, k]
    np.testing.assert_allclose(full, Harmonic(k=K, r0=R0).hessian(molecule), atol=1e-5)


def test_emt_hvp_converges_and_is_symmetric():
    """For a real teacher: two steps agree to O(h²), and u·(H v) = v·(H u) (H symmetric)."""
    atoms = builtin("cu32")
    atoms.rattle(0.05, seed=3)
    s1 = label_structure("emt", atoms, hvp=2, rng=structure_rng(0, 4), hvp_step=2e-3)
    s2 = label_structure("emt", atoms, hvp=2, rng=structure_rng(0, 4), hvp_step=1e-3)
    hv, d = s2.extras["hvp"], s2.extras["hvp_directions"]
    np.testing.assert_allclose(s1.extras["hvp"], hv, atol=1e-4 * np.abs(hv).max())
    uhv = np.einsum("nc,nc->", d[:, 0], hv[:, 1])
    vhu = np.einsum("nc,nc->", d[:, 1], hv[:, 0])
    assert abs(uhv - vhu) < 1e-5 * np.abs(hv).max()


def test_hvp_needs_an_rng_and_valid_settings(molecule):
    with pytest.raises(ValueError, match="needs an rng"):
        label_structure("emt", molecule, hvp=2)
    with pytest.raises(ValueError, match="either hvp"):
        label_structure("emt", molecule, hvp=2, hessian=True, rng=structure_rng(0, 0))
    with pytest.raises(ValueError, match="step"):
        hvp_finite_difference(Harmonic(), molecule, random_directions(len(molecule), 1, structure_rng(0, 0)), 0.0)
