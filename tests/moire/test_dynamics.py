"""Dynamical matrix, phonons, relaxation and stability (spec §5, reference values of §8)."""

import numpy as np
import pytest
from scipy.optimize import brentq

from moire_cli.crystals import BUILTIN_CRYSTALS, build_crystal, monkhorst_pack
from moire_cli.dynamics import (
    LatticeModel,
    density_of_states,
    dynamical_matrix,
    energy,
    forces,
    hessian_matrix,
    phonons,
    relax,
    stability,
)
from moire_cli.potentials import Coulomb, DualGate, Keldysh, MoirePotential
from moire_cli.units import E2_MEV_NM, HBAR2_OVER_M0_MEV_NM2

A, KAPPA, MASS = 8.0, 5.1, 0.45
C = E2_MEV_NM / KAPPA


def unpinned_triangular():
    return LatticeModel(build_crystal("triangular", A), None, Coulomb(KAPPA), MASS)


def test_shear_modulus_from_transverse_sound_velocity():
    m = unpinned_triangular()
    n = m.crystal.density
    q = np.array([1e-4, 2e-4]) / A
    for direction in ([1.0, 0.0], [np.cos(0.3), np.sin(0.3)]):  # elastically isotropic
        f, _ = phonons(m, q[:, None] * np.array(direction))
        c_t2 = f[:, 0] ** 2 / q**2 / (HBAR2_OVER_M0_MEV_NM2 / MASS)  # = μ/n (meV)
        mu = c_t2 * n / (C * n**1.5)
        assert mu == pytest.approx(0.245, abs=5e-4)  # Bonsall & Maradudin: 0.245 e² n^{3/2}/κ


def test_plasmon_slope():
    m = unpinned_triangular()
    n = m.crystal.density
    q = np.array([1e-4, 2e-4]) / A
    f, _ = phonons(m, q[:, None] * np.array([1.0, 0.0]))
    ratio = f[:, 1] ** 2 / q / (HBAR2_OVER_M0_MEV_NM2 / MASS * 2 * np.pi * n * C)
    # ω_L² = 2πne²q/(κm)·(1 + O(q)): linear extrapolation to q = 0
    assert 2 * ratio[0] - ratio[1] == pytest.approx(1.0, abs=1e-7)
    assert ratio[0] == pytest.approx(1.0, abs=1e-3)


ONE_SITE = [k for k, v in BUILTIN_CRYSTALS.items() if len(v[1]) == 1]


@pytest.mark.parametrize("name", ONE_SITE)
@pytest.mark.parametrize("inter", [Coulomb(KAPPA), Keldysh(KAPPA, 4.511), DualGate(KAPPA, 10.0)], ids=lambda i: i.name)
def test_gamma_frequency_equals_trap_frequency(name, inter):
    pot = MoirePotential(A, 15.0, np.deg2rad(45.0), carrier_sign=-1)
    m = LatticeModel(build_crystal(name, A), pot, inter, MASS)
    r = relax(m)
    assert np.abs(r.displacement).max() < 1e-9  # only the zigzag stripe moves
    f, _ = phonons(r.model, np.zeros((1, 2)))
    assert f[0] == pytest.approx(pot.hbar_omega_M(MASS), rel=1e-10)


@pytest.mark.parametrize("inter", [Coulomb(KAPPA), Keldysh(KAPPA, 4.511)], ids=lambda i: i.name)
def test_dynamical_matrix_at_gamma_is_fd_hessian_at_relaxed_zigzag(inter):
    pot = MoirePotential(A, 15.0, np.deg2rad(45.0), carrier_sign=-1)
    m = LatticeModel(build_crystal("zigzag_stripe", A), pot, inter, MASS)
    r = relax(m)
    assert r.max_force < 1e-9
    assert r.hessian_psd
    assert np.linalg.norm(r.displacement, axis=1).max() > 0.05  # the zigzag stripe moves
    b0 = r.model.crystal.basis
    h = 2e-4
    hess = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            def e(di, dj, i=i, j=j):
                d = np.zeros(4)
                d[i] += di
                d[j] += dj
                return energy(r.model.with_basis(b0 + d.reshape(2, 2)))
            hess[i, j] = (e(h, h) - e(h, -h) - e(-h, h) + e(-h, -h)) / (4 * h * h)
    d0 = dynamical_matrix(r.model, np.zeros((1, 2)))[0]
    assert np.abs(d0.imag).max() < 1e-12 * np.abs(d0).max()
    assert d0.real == pytest.approx(HBAR2_OVER_M0_MEV_NM2 / MASS * hess, abs=2e-6 * np.abs(d0).max())
    # forces are −∇E
    fd = np.array([-(energy(r.model.with_basis(b0 + dd)) - energy(r.model.with_basis(b0 - dd))) / (2 * h)
                   for dd in np.eye(4).reshape(4, 2, 2) * h]).reshape(2, 2)
    moved = r.model.with_basis(b0 + 0.1)
    assert forces(r.model) == pytest.approx(fd, abs=1e-6 * C / A**2)
    assert np.abs(forces(moved)).max() > 1e-3


def test_keldysh_tends_to_coulomb_in_the_dynamical_matrix():
    cr = build_crystal("honeycomb_gwc", A)
    pot = MoirePotential(A, 15.0, np.deg2rad(45.0), carrier_sign=-1)
    q = monkhorst_pack(cr, (3, 3)) + 0.01
    d_c = dynamical_matrix(LatticeModel(cr, pot, Coulomb(KAPPA), MASS), q)
    d_k = dynamical_matrix(LatticeModel(cr, pot, Keldysh(KAPPA, 1e-3), MASS), q)
    d_k2 = dynamical_matrix(LatticeModel(cr, pot, Keldysh(KAPPA, 4.511), MASS), q)
    scale = np.abs(d_c).max()
    assert np.abs(d_k - d_c).max() < 1e-6 * scale
    assert np.abs(d_k2 - d_c).max() > 1e-3 * scale  # finite r0 does change the bands


def test_dynamical_matrix_hermitian_periodic_and_dos_normalized():
    pot = MoirePotential(A, 15.0, np.deg2rad(45.0), carrier_sign=-1)
    m = relax(LatticeModel(build_crystal("zigzag_stripe", A), pot, Coulomb(KAPPA), MASS)).model
    q = np.array([[0.11, -0.07], [0.3, 0.25]])
    d = dynamical_matrix(m, q)
    assert np.abs(d - np.conj(d.transpose(0, 2, 1))).max() < 1e-12 * np.abs(d).max()
    # phonopy convention: D(q + G) = P† D(q) P with P = diag(e^{iG·τ_κ})
    g = m.crystal.reciprocal[0] + m.crystal.reciprocal[1]
    dg = dynamical_matrix(m, q + g)
    p = np.repeat(np.exp(1j * m.crystal.basis @ g), 2)
    assert dg == pytest.approx(np.conj(p)[None, :, None] * d * p[None, None, :], abs=1e-9 * np.abs(d).max())
    f, _ = phonons(m, monkhorst_pack(m.crystal, (6, 6)))
    e = np.linspace(f.min() - 5, f.max() + 5, 4000)
    assert np.trapezoid(density_of_states(f, e, 0.3), e) == pytest.approx(4.0, rel=1e-6)


def test_stability_verdict():
    f = np.array([[1.0, 2.0], [-0.5, 3.0], [1e-7, 2.0]])
    st = stability(f)
    assert st == {"stable": False, "min_frequency_meV": -0.5, "index": (1, 0), "unstable_modes": 1}
    assert stability(np.abs(f))["stable"]


def _min_w2(name, V, mesh=(12, 12)):
    pot = MoirePotential(A, V, np.deg2rad(45.0), carrier_sign=-1)
    m = LatticeModel(build_crystal(name, A), pot, Coulomb(KAPPA), MASS)
    r = relax(m)
    q = monkhorst_pack(r.model.crystal, mesh)
    return float(np.linalg.eigvalsh(hessian_matrix(r.model, q)).min())


def test_zigzag_stable_down_to_smaller_moire_depth_than_linear_stripe():
    """Thresholds V_c (min ω² over a 12×12 mesh = 0, relaxed each time) by Brent's method.
    Found (a_M = 8 nm, κ = 5.1, ψ = 45°, holes): V_c(linear) ≈ 0.70 meV, V_c(zigzag) ≈ 0.40 meV,
    i.e. the zigzag stripe survives down to ≈ 0.57 × the linear stripe's threshold."""
    v_lin = brentq(lambda v: _min_w2("linear_stripe", v), 0.05, 5.0, xtol=1e-4)
    v_zz = brentq(lambda v: _min_w2("zigzag_stripe", v), 0.05, 5.0, xtol=1e-4)
    assert _min_w2("linear_stripe", 1.05 * v_lin) > 0 > _min_w2("linear_stripe", 0.95 * v_lin)
    assert _min_w2("zigzag_stripe", 0.95 * v_zz) < 0 < _min_w2("zigzag_stripe", 1.05 * v_zz)
    assert v_zz < 0.7 * v_lin
    assert v_lin / v_zz == pytest.approx(1.74, abs=0.05)
    # both thresholds scale with the Coulomb energy e²/(κ a_M): far below it
    assert v_lin < 0.05 * C / A


def test_fast_dos_matches_direct_gaussian_sum():
    rng = np.random.default_rng(3)
    f = rng.uniform(10, 20, size=(500, 4))
    e = np.linspace(8, 22, 300)
    fast = density_of_states(f, e, 0.2)
    direct = density_of_states(f, np.concatenate([e[:-1], [e[-1] + 1e-6]]), 0.2)  # non-uniform: direct
    assert fast == pytest.approx(direct, rel=1e-3, abs=1e-4 * direct.max())
    # modes outside the grid still contribute their tails
    assert density_of_states(np.array([[5.0]]), e, 2.0)[0] == pytest.approx(
        np.exp(-0.5 * 1.5**2) / np.sqrt(2 * np.pi) / 2.0, rel=1e-12)


def test_reduced_phonons_match_direct_on_mesh_and_path():
    from moire_cli.crystals import high_symmetry_path
    from moire_cli.dynamics import phonons_reduced

    pot = MoirePotential(A, 15.0, np.deg2rad(45.0), carrier_sign=-1)
    m = relax(LatticeModel(build_crystal("zigzag_stripe", A), pot, Coulomb(KAPPA), MASS)).model
    qp, _, _ = high_symmetry_path(m.crystal, None, 7)
    q = np.concatenate([qp, monkhorst_pack(m.crystal, (5, 4)), -qp[3:5] + m.crystal.reciprocal[0]])
    f_ref, v_ref = phonons(m, q)
    f, v = phonons_reduced(m, q)
    assert f == pytest.approx(f_ref, abs=1e-10)
    d = dynamical_matrix(m, q)
    # eigenvectors are exact eigenvectors of D(q) (gauge may differ from a direct eigh)
    resid = d @ v - v * (np.sign(f) * f**2)[:, None, :]
    assert np.abs(resid).max() < 1e-9 * np.abs(d).max()
    assert np.abs(np.conj(v.transpose(0, 2, 1)) @ v - np.eye(4)).max() < 1e-12
