"""thermal_hall.py: the c₂ weight (closed form vs its integral, limits), κ_xy odd in B, zero at B = 0,
converged on the mesh, and its high-temperature limit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from moire_cli import thermal_hall as th
from moire_cli.gyroscopic import gyroscopic_modes
from moire_cli.topology import berry_curvature_mesh
from moire_cli.units import K_B_MEV_PER_K

from .spring_model import gamma_grid, honeycomb


@pytest.mark.parametrize("x", [1e-9, 3e-5, 1e-4, 2e-4, 0.01, 0.3, 1.0, 7.0, 250.0])
def test_c2_equals_its_integral_form(x):
    ref, _ = integrate.quad(lambda t: np.log1p(1 / t) ** 2, 0, x, limit=200, epsabs=0, epsrel=1e-13)
    assert th.c2_weight(np.array(x)) == pytest.approx(ref, rel=1e-10)


def test_c2_limits():
    assert th.c2_weight(np.array([0.0]))[0] == 0.0
    assert th.c2_weight(np.array([np.inf]))[0] == pytest.approx(np.pi**2 / 3, rel=1e-15)
    for x in (1e4, 1e6):
        assert abs(th.c2_weight(np.array(x)) - (np.pi**2 / 3 - 1 / x)) < 1 / x**2
    x = np.array([1e-12, 1e-8])
    lx = np.log(x)
    np.testing.assert_allclose(th.c2_weight(x), x * (lx**2 - 2 * lx + 2), rtol=1e-6)
    # continuous across the switch to the series
    x = np.array([_ * 1e-4 for _ in (1 - 1e-12, 1 + 1e-12)])
    c = th.c2_weight(x)
    assert abs(c[1] - c[0]) < 1e-11 * c[0]
    with pytest.raises(ValueError):
        th.c2_weight(np.array([-1.0]))


def _kappa(model, omega_c, mesh, temps):
    q = gamma_grid(model.reciprocal, mesh)
    modes = gyroscopic_modes(model.dynamical_matrix(q), omega_c)
    berry = berry_curvature_mesh(modes, q, mesh, model.basis, model.reciprocal)
    return th.thermal_hall_from_modes(modes, berry, model.reciprocal, temps), modes


TEMPS = np.array([0.0, 5.0, 20.0, 80.0, 300.0])


def test_kappa_xy_odd_in_field_and_zero_without_field_whatever_the_traps():
    model = honeycomb(40.0, 25.0, k_l=30.0, k_t=6.0)
    plus, _ = _kappa(model, 2.0, (24, 24), TEMPS)
    minus, _ = _kappa(model, -2.0, (24, 24), TEMPS)
    zero, _ = _kappa(model, 0.0, (24, 24), TEMPS)
    scale = np.max(np.abs(plus.kappa_xy_kB2T_per_hbar))
    assert scale > 1e-4
    assert plus.kappa_xy_kB2T_per_hbar[0] == 0.0  # T = 0
    np.testing.assert_allclose(minus.kappa_xy_kB2T_per_hbar, -plus.kappa_xy_kB2T_per_hbar, atol=1e-10 * scale)
    np.testing.assert_allclose(zero.kappa_xy_kB2T_per_hbar, 0.0, atol=1e-12 * scale)
    assert abs(plus.chern_sum) < 1e-9


def test_kappa_xy_converges_on_the_mesh():
    model = honeycomb(40.0, 25.0, k_l=30.0, k_t=6.0)
    vals = [_kappa(model, 2.0, (n, n), TEMPS[1:])[0].kappa_xy_kB2T_per_hbar for n in (12, 24, 48)]
    e1 = np.max(np.abs(vals[1] - vals[2]))
    e0 = np.max(np.abs(vals[0] - vals[2]))
    assert e1 < 0.02 * np.max(np.abs(vals[2]))
    assert e1 < 0.5 * e0


def test_kappa_xy_high_temperature_limit_is_constant():
    """c₂ → π²/3 − 1/n_B and Σ_σ C_σ = 0: κ_xy [W/K] → (k_B/ħ) Σ ħω F / 4π², independent of T."""
    model = honeycomb(40.0, 25.0, k_l=30.0, k_t=6.0)
    q = gamma_grid(model.reciprocal, (16, 16))
    modes = gyroscopic_modes(model.dynamical_matrix(q), 2.0)
    berry = berry_curvature_mesh(modes, q, (16, 16), model.basis, model.reciprocal)
    pf = th.plaquette_frequencies(modes.frequencies, berry.order, berry.mesh)
    area = abs(np.linalg.det(model.reciprocal)) / 256
    limit = np.sum(pf * berry.berry_curvature * area) / (4 * np.pi**2 * K_B_MEV_PER_K)  # κ·T in K
    temps = np.array([1e5, 1e6])
    res = th.thermal_hall_conductivity(pf, berry.berry_curvature, model.reciprocal, temps)
    np.testing.assert_allclose(res.kappa_xy_kB2T_per_hbar * temps, limit, rtol=2e-3)


def test_undefined_curvature_is_refused():
    f = np.ones((2, 2, 2))
    om = np.zeros((2, 2, 2))
    om[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="refine"):
        th.thermal_hall_conductivity(f, om, np.eye(2), np.array([1.0]))
    with pytest.raises(ValueError, match="energy"):
        th.thermal_hall_conductivity(-f, np.zeros_like(f), np.eye(2), np.array([1.0]))
