"""anharmonic.py: U‴ of every interaction, cubic constants = finite differences of the harmonic ones,
translation invariance, decay rates zero where energy conservation fails, the thermal factor,
convergence in mesh and broadening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moire_cli import anharmonic as an
from moire_cli import crystals, dynamics, optics, potentials
from moire_cli.config import load_config
from moire_cli.excitons import exciton_interaction
from moire_cli.gyroscopic import cyclotron_energy
from moire_cli.thermal_hall import bose_occupation

A_M = 8.0
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "moire"
INTERACTIONS = {
    "coulomb": potentials.Coulomb(5.1),
    "keldysh": potentials.Keldysh(5.1, 4.511),
    "dual-gate": potentials.DualGate(5.1, 6.0),
    "dipole-bare": exciton_interaction("dipole-bare", 5.1, 0.6),
    "dipole-twosheet": exciton_interaction("dipole-twosheet", 4.0, 0.6, 4.0, 4.5),
}


@pytest.mark.parametrize("name", list(INTERACTIONS))
def test_third_derivative_is_the_derivative_of_u2(name):
    inter = INTERACTIONS[name]
    r = np.array([0.8, 3.0, 8.0, 13.9, 40.0, 170.0]) if name == "keldysh" else np.array([1.5, 8.0, 13.9, 24.0])
    h = 1e-4 * r
    fd = (inter.radial(r + h)[2] - inter.radial(r - h)[2]) / (2 * h)
    np.testing.assert_allclose(an.third_derivative(inter, r), fd, rtol=2e-6 if name == "dipole-twosheet" else 1e-7)


def _model(name: str, inter, trap_scale=None, V=15.0, psi=0.7) -> dynamics.LatticeModel:
    cr = crystals.build_crystal(name, A_M)
    pot = None if V is None else potentials.MoirePotential(A_M, V, psi, +1)
    return dynamics.LatticeModel(cr, pot, inter, 0.45, trap_scale=trap_scale)


def _fd_coupling(model: dynamics.LatticeModel, q: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """∂H(q)/∂τ_μγ by central differences, with the phase convention's i q_γ term removed."""
    n = model.crystal.n_sites
    h0 = dynamics.hessian_matrix(model, q)
    kap = np.repeat(np.arange(n), 2)
    out = np.zeros((n, 2) + h0.shape, dtype=complex)
    for mu in range(n):
        coef = (kap[None, :] == mu).astype(float) - (kap[:, None] == mu).astype(float)
        for g in range(2):
            bp, bm = model.crystal.basis.copy(), model.crystal.basis.copy()
            bp[mu, g] += h
            bm[mu, g] -= h
            fd = (dynamics.hessian_matrix(model.with_basis(bp), q) - dynamics.hessian_matrix(model.with_basis(bm), q)) / (
                2 * h
            )
            out[mu, g] = fd - 1j * q[:, g, None, None] * coef * h0
    return out


Q = np.array([[0.05, 0.11], [0.3, -0.2], [0.0, 0.0], [-0.41, 0.07]])


CASES = [
    ("coulomb", "honeycomb_gwc", True),
    ("coulomb", "honeycomb_gwc", False),
    ("coulomb", "triangular", True),
    ("keldysh", "honeycomb_gwc", True),
    ("keldysh", "honeycomb_gwc", False),
    ("dual-gate", "honeycomb_gwc", False),
    ("dipole-bare", "honeycomb_gwc", True),
    ("dipole-bare", "honeycomb_gwc", False),
]


@pytest.mark.parametrize("name, crystal, with_moire", CASES)
def test_cubic_constants_equal_finite_differences_of_harmonic_ones(name, crystal, with_moire):
    """One site per cell without the moiré potential has W = 0 exactly (Kohn); see the translation test."""
    trap = (1.0, 0.8) if crystal == "honeycomb_gwc" and with_moire else None
    model = _model(crystal, INTERACTIONS[name], trap if with_moire else None, V=15.0 if with_moire else None)
    w = an.gamma_coupling(model, Q)
    ref = _fd_coupling(model, Q)
    assert np.max(np.abs(ref)) > 0
    assert np.max(np.abs(w - ref)) < 1e-6 * np.max(np.abs(ref))


def test_ewald_cubic_sums_do_not_depend_on_eta():
    base = _model("honeycomb_gwc", potentials.Coulomb(5.1), V=None)
    t1 = an.cubic_force_constant_sums(base, Q)
    for eta in (0.08, 0.3):
        t2 = an.cubic_force_constant_sums(dynamics.LatticeModel(base.crystal, None, base.interaction, 0.45, ewald_eta=eta), Q)
        assert np.max(np.abs(t2 - t1)) < 1e-10 * np.max(np.abs(t1))


def test_pair_part_is_translation_invariant_and_one_site_couples_only_through_the_moire_potential():
    model = _model("honeycomb_gwc", potentials.Keldysh(5.1, 4.511), V=None)
    w = an.gamma_coupling(model, Q)
    assert np.max(np.abs(w.sum(axis=0))) < 1e-12 * np.max(np.abs(w))
    one = _model("triangular", potentials.Coulomb(5.1), V=15.0, psi=0.7)
    w1 = an.gamma_coupling(one, Q)
    d3 = an.moire_third_derivative(one)[0]
    for g in range(2):
        np.testing.assert_allclose(w1[0, g], np.broadcast_to(d3[..., g], (len(Q), 2, 2)), atol=1e-12 * np.abs(d3).max())


@pytest.mark.parametrize(
    "config", ["wse2_ws2_honeycomb_gwc_inversion_breaking.yaml", "wse2_ws2_triangular_field.yaml"]
)
def test_decay_is_exactly_zero_where_energy_conservation_cannot_be_met(config):
    cfg = load_config(CONFIGS / config)
    model = cfg.build_model()  # the honeycomb and triangular sites do not move on relaxation
    charge = cfg.chirality.carrier_charge(cfg.moire_potential.carrier)
    w_c = cyclotron_energy(cfg.chirality.magnetic_field_T, model.mass, charge)
    o = optics.gamma_optics(dynamics.dynamical_matrix(model, np.zeros((1, 2))), omega_c=w_c, mass=model.mass, charge_sign=charge)
    q = crystals.monkhorst_pack(model.crystal, (12, 12))
    res = an.three_phonon_decay(
        model, q, o.frequencies, o.displacements, omega_c=w_c, temperatures_K=np.array([0.0, 50.0]), sigma_meV=0.5
    )
    assert res.two_phonon_min_meV > o.frequencies.max() + an.SIGMA_CUTOFF * 0.5
    assert np.all(res.rates == 0.0)
    assert not res.summary()["energy_conservation_possible"]


def _field_crystal():
    """One hole per moiré cell, weak moiré (V = 0.5 meV), 60 T: the upper Fock–Darwin line ω₊ can decay
    into two lower-band phonons of equal energy ω₊/2 (inversion: ω(−q) = ω(q))."""
    model = _model("triangular", potentials.Coulomb(5.1), V=0.5, psi=np.pi / 4)
    w_c = cyclotron_energy(60.0, model.mass, 1)
    o = optics.gamma_optics(dynamics.dynamical_matrix(model, np.zeros((1, 2))), omega_c=w_c, mass=model.mass, charge_sign=1)
    return model, w_c, o


def test_thermal_factor_of_the_decay_rate():
    model, w_c, o = _field_crystal()
    q = crystals.monkhorst_pack(model.crystal, (36, 36))
    temps = np.array([0.0, 10.0, 30.0, 80.0])
    sigma = 0.2
    res = an.three_phonon_decay(model, q, o.frequencies, o.displacements, omega_c=w_c, temperatures_K=temps, sigma_meV=sigma)
    g0 = res.rates[0, 1]
    assert g0 > 0 and res.rates[0, 0] == 0.0  # the lower line cannot decay
    half = 0.5 * o.frequencies[1]
    width = 0.5 * an.SIGMA_CUTOFF * sigma
    lo = 1 + 2 * bose_occupation(np.array([half + width]), temps)[:, 0]
    hi = 1 + 2 * bose_occupation(np.array([half - width]), temps)[:, 0]
    ratio = res.rates[:, 1] / g0
    assert np.all(ratio >= lo * (1 - 1e-12)) and np.all(ratio <= hi * (1 + 1e-12))
    assert np.all(np.diff(ratio) > 0)


@pytest.mark.slow
def test_decay_rate_converges_in_mesh_and_broadening():
    model, w_c, o = _field_crystal()
    temps = np.array([0.0])

    def rate(n, sigma):
        q = crystals.monkhorst_pack(model.crystal, (n, n))
        return an.three_phonon_decay(
            model, q, o.frequencies, o.displacements, omega_c=w_c, temperatures_K=temps, sigma_meV=sigma
        ).rates[0, 1]

    r = {(n, s): rate(n, s) for n, s in [(24, 0.5), (48, 0.5), (72, 0.5), (96, 0.35)]}
    # measured 2026-12-01: 0.10252, 0.10251, 0.10254 meV (48/0.5, 72/0.5, 96/0.35)
    assert abs(r[48, 0.5] - r[72, 0.5]) < 1e-3 * r[72, 0.5]  # mesh at fixed σ
    assert abs(r[24, 0.5] - r[72, 0.5]) > abs(r[48, 0.5] - r[72, 0.5])
    assert abs(r[96, 0.35] - r[72, 0.5]) < 1e-3 * r[72, 0.5]  # broadening


def test_valley_labels_and_decay_input_errors():
    cr = crystals.build_crystal("honeycomb_gwc", A_M)
    pts = crystals.special_points(cr)
    q = cr.to_cartesian(np.array([pts["G"], pts["K"], pts["K'"], pts["K"] + [1.0, 0.0], 0.95 * pts["K"]]))
    np.testing.assert_array_equal(an.valley_labels(cr, q), [0, 1, 2, 1, 1])
    model, w_c, o = _field_crystal()
    with pytest.raises(ValueError, match="sigma"):
        an.three_phonon_decay(model, np.zeros((1, 2)), o.frequencies, o.displacements, omega_c=w_c, temperatures_K=[0.0], sigma_meV=0)
