"""optics.py: f-sum rule, generalized-Kohn selection rules and weights, helicity flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moire_cli import crystals, dynamics, optics, potentials
from moire_cli.config import load_config
from moire_cli.gyroscopic import cyclotron_energy

from .spring_model import honeycomb, triangular

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs", "moire").glob("*.yaml"))
GAMMA = np.zeros((1, 2))


def _optics(model: dynamics.LatticeModel, field_T: float, charge: int) -> optics.GammaOptics:
    w_c = cyclotron_energy(field_T, model.mass, charge)
    return optics.gamma_optics(dynamics.dynamical_matrix(model, GAMMA), omega_c=w_c, mass=model.mass, charge_sign=charge)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
@pytest.mark.parametrize("field_T", [0.0, 30.0, -12.0])
def test_f_sum_rule_every_shipped_crystal(path, field_T):
    cfg = load_config(path)
    model = dynamics.relax(cfg.build_model()).model
    charge = cfg.chirality.carrier_charge(cfg.moire_potential.carrier)
    sums = _optics(model, field_T, charge).f_sums()
    for key in ("x", "y", "circular_mean"):
        assert sums[key] == pytest.approx(1.0, abs=1e-8), key


@pytest.mark.parametrize("trap_scale", [None, (1.0, 0.8), (1.0, 1.3)])
@pytest.mark.parametrize("omega_c", [0.0, 2.5, -7.0])
def test_f_sum_rule_spring_honeycomb_traps(trap_scale, omega_c):
    traps = (3.0, 3.0) if trap_scale is None else tuple(3.0 * s for s in trap_scale)
    model = honeycomb(*traps, k_l=1.0, k_t=0.3)
    o = optics.gamma_optics(model.dynamical_matrix(GAMMA), omega_c=omega_c, mass=0.5)
    sums = o.f_sums()
    for key in ("x", "y", "circular_mean"):
        assert sums[key] == pytest.approx(1.0, abs=1e-10)
    if trap_scale is not None and trap_scale[1] != 1.0:  # the relative mode borrows weight
        assert np.sum(o.oscillator_strengths["x"] > 1e-6) > (2 if omega_c == 0 else 1)


@pytest.mark.parametrize("name", ["triangular", "triangular_gwc"])
@pytest.mark.parametrize("field_T", [3.0, 30.0, -30.0])
@pytest.mark.parametrize("charge", [-1, 1])
def test_one_site_crystal_absorbs_only_on_the_fock_darwin_lines(name, field_T, charge):
    crystal = crystals.build_crystal(name, 8.0)
    pot = potentials.MoirePotential(8.0, 15.0, np.pi, +1)
    model = dynamics.LatticeModel(crystal, pot, potentials.Keldysh(4.5, 4.5), 0.45)
    o = _optics(model, field_T, charge)
    w_c = cyclotron_energy(field_T, model.mass, charge)
    fd = optics.fock_darwin_lines(pot.hbar_omega_M(model.mass), w_c)
    np.testing.assert_allclose(o.frequencies, [fd["lower"], fd["upper"]], rtol=1e-9)
    up = fd["upper_polarization"]
    lo = "sigma-" if up == "sigma+" else "sigma+"
    s = o.oscillator_strengths
    np.testing.assert_allclose(s[up], [0.0, fd["f_upper"]], atol=1e-9)
    np.testing.assert_allclose(s[lo], [fd["f_lower"], 0.0], atol=1e-9)
    np.testing.assert_allclose(s["x"], [fd["f_lower"] / 2, fd["f_upper"] / 2], atol=1e-9)
    np.testing.assert_allclose(np.abs(o.circular_polarization), 1.0, atol=1e-9)
    # helicity of the upper line: σ+ for ω_c > 0 (electrons in B > 0), flipped by either sign
    assert np.sign(o.circular_polarization[1]) == np.sign(w_c) == -charge * np.sign(field_T)


def test_one_site_at_zero_field_is_one_doubly_degenerate_line_in_circular_basis():
    o = optics.gamma_optics(triangular(trap=4.0, k_l=1.0, k_t=0.2).dynamical_matrix(GAMMA), omega_c=0.0, mass=0.5)
    np.testing.assert_allclose(o.frequencies, [2.0, 2.0], rtol=1e-12)
    s = o.oscillator_strengths
    np.testing.assert_allclose(np.sort(s["sigma+"]), [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(np.sort(s["sigma-"]), [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(np.sort(o.l_z), [-1.0, 1.0], atol=1e-12)
    # the σ+ line is the l_z = +1 rotation
    assert o.l_z[np.argmax(s["sigma+"])] == pytest.approx(1.0)


def test_dipole_is_the_zero_point_amplitude():
    o = optics.gamma_optics(triangular(trap=4.0).dynamical_matrix(GAMMA), omega_c=0.0, mass=0.5, charge_sign=1)
    # |d| = e √(ħ²/(2mω)) for the bright line of one carrier; (76.1996 meV nm² / (2 · 0.5 · 2 meV))^½
    amp = np.sqrt(76.19964 / (2 * 0.5 * 2.0))
    np.testing.assert_allclose(np.linalg.norm(o.dipoles, axis=1), amp, rtol=1e-5)


def test_absorption_spectrum_integrates_to_the_sum_rule_and_broadening_errors():
    model = honeycomb(3.0, 2.4, k_l=1.0, k_t=0.3)
    o = optics.gamma_optics(model.dynamical_matrix(GAMMA), omega_c=0.8, mass=0.5)
    e = np.linspace(-400, 400, 400001)
    a = o.absorption(e, 0.05)
    for key in ("sigma+", "sigma-", "x", "y"):
        integral = np.trapezoid(a[key], e)
        assert integral == pytest.approx(np.sum(o.oscillator_strengths[key]), rel=2e-4)
    peak = o.frequencies[np.argmax(o.oscillator_strengths["sigma+"])]
    assert a["circular_dichroism"][np.argmin(np.abs(e - peak))] > 0.9
    with pytest.raises(ValueError, match="broadening"):
        o.absorption(e, 0.0)


def test_unstable_gamma_mode_is_refused():
    model = triangular(trap=-1.0)
    with pytest.raises(ValueError, match="unstable"):
        optics.gamma_optics(model.dynamical_matrix(GAMMA), omega_c=0.0, mass=0.5)
