"""Lindemann ratio, melting temperature and mean-square displacement on synthetic spectra (spec §7)."""

import numpy as np
import pytest

from moire_cli import lindemann as lm
from moire_cli import melt_sweep as ms
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2 as HB2
from moire_cli.units import K_B_MEV_PER_K as KB

SQRT3 = np.sqrt(3.0)


def _mesh(cell, n):
    """Γ-centred full n×n Monkhorst–Pack mesh, Cartesian 1/nm (with 2π)."""
    rec = 2 * np.pi * np.linalg.inv(np.asarray(cell, dtype=float)).T
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    frac = np.stack([i.ravel(), j.ravel()], axis=1) / n
    return frac @ rec


def _spring_model(cell, basis, q, mass, k_long, k_trans, k_pin):
    """ħ²D(q) (N_q, 2n, 2n) meV² of nearest-neighbour springs (U″ = k_long, U′/R = k_trans) + pinning."""
    kappa, kappa_p, delta, a = lm.nearest_neighbour_bonds(cell, basis)
    n = len(basis)
    rhat = delta / np.linalg.norm(delta, axis=1)[:, None]
    phi = k_long * rhat[:, :, None] * rhat[:, None, :] + k_trans * (np.eye(2) - rhat[:, :, None] * rhat[:, None, :])
    d = np.zeros((len(q), 2 * n, 2 * n), dtype=complex)
    phase = np.exp(1j * q @ delta.T)  # (N_q, P)
    for p in range(len(kappa)):  # a few bonds, test helper only
        i, j = 2 * kappa[p], 2 * kappa_p[p]
        d[:, i : i + 2, i : i + 2] += phi[p]
        d[:, i : i + 2, j : j + 2] -= phi[p] * phase[:, p, None, None]
    d += k_pin * np.eye(2 * n)
    return HB2 / mass * d


def _phonons(d):
    w2, e = np.linalg.eigh(d)
    return np.sign(w2) * np.sqrt(np.abs(w2)), e


TRIANGULAR = np.array([[10.0, 0.0], [5.0, 5.0 * SQRT3]])
HONEYCOMB = 10.0 * np.array([[1.5, SQRT3 / 2], [0.0, SQRT3]])
HONEYCOMB_BASIS = 10.0 * np.array([[0.0, 0.0], [1.0, 0.0]])


def test_nearest_neighbour_bonds():
    k, kp, delta, a = lm.nearest_neighbour_bonds(TRIANGULAR, np.zeros((1, 2)))
    assert a == pytest.approx(10.0) and len(k) == 6
    k, kp, delta, a = lm.nearest_neighbour_bonds(HONEYCOMB, HONEYCOMB_BASIS)
    assert a == pytest.approx(10.0) and len(k) == 6 and np.all(k != kp)  # 3 bonds per site, A–B only
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), 10.0, rtol=1e-12)


def test_einstein_limit_ratio_and_melting_temperature():
    """Dispersionless pinned sites: L(T) and T_m equal the closed forms of spec §7, for a whole sweep."""
    mass, a, lc = 0.45, 8.0, 0.3
    hbar_omega = np.array([2.0, 30.0, 60.0, 120.0])  # the first is quantum melted (L₀ = 1.15)
    n_q = 16
    freqs = np.broadcast_to(hbar_omega[:, None, None], (4, n_q, 2)).copy()
    vecs = np.broadcast_to(np.eye(2), (4, n_q, 2, 2)).copy()
    spec = lm.single_site_spectrum(freqs, vecs, mass, a)
    temps = np.array([0.0, 1.0, 10.0, 50.0, 300.0])
    np.testing.assert_allclose(
        spec.lindemann_ratio(temps), lm.einstein_lindemann_ratio(hbar_omega, mass, a, temps), rtol=1e-12
    )
    l0 = np.sqrt(HB2 / (mass * hbar_omega * a * a))
    np.testing.assert_allclose(spec.lindemann_ratio(np.zeros(1))[:, 0], l0, rtol=1e-13)
    res = spec.melting_temperature(lc)
    with np.errstate(invalid="ignore"):
        expected = hbar_omega / (2 * KB * np.arctanh(l0**2 / lc**2))
    assert res.quantum_melted.tolist() == [True, False, False, False]
    assert np.isnan(res.melting_temperature[0])
    np.testing.assert_allclose(res.melting_temperature[1:], expected[1:], rtol=1e-6)
    np.testing.assert_allclose(res.melting_temperature[1:], expected[1:], rtol=1e-12)  # bisection is exact
    np.testing.assert_allclose(lm.einstein_melting_temperature(hbar_omega, mass, a, lc)[1:], expected[1:], rtol=1e-14)
    # closed forms agree with each other: L(T_m) = L_c
    tm = lm.einstein_melting_temperature(hbar_omega[1:], mass, a, lc)
    lt = np.array([lm.einstein_lindemann_ratio(w, mass, a, np.array([t]))[0] for w, t in zip(hbar_omega[1:], tm, strict=True)])
    np.testing.assert_allclose(lt, lc, rtol=1e-12)
    assert res.criterion == "single-site"


def test_classical_limit_matches_trace_of_inverse_dynamical_matrix():
    """k_BT ≫ ħω: ⟨u_κ²⟩ = (k_BT/m)⟨tr_κ D⁻¹⟩ + ħ²/(6mk_BT) + O(T⁻³) (coth x = 1/x + x/3 − …)."""
    mass = 0.8
    q = _mesh(HONEYCOMB, 12)
    d = _spring_model(HONEYCOMB, HONEYCOMB_BASIS, q, mass, k_long=3.0, k_trans=-0.3, k_pin=1.2)
    w, e = _phonons(d)
    assert w.min() > 1.0
    t = 2e4 * w.max() / KB  # x = ħω/2k_BT ≤ 2.5e-5
    u2 = lm.mean_square_displacement(w, e, mass, np.array([t]))[:, 0]
    classical = lm.classical_mean_square_displacement(d, mass, t)
    np.testing.assert_allclose(u2, classical + HB2 / (6 * mass * KB * t), rtol=1e-10)
    np.testing.assert_allclose(u2, classical, rtol=1e-8)
    assert u2.shape == (2,)


def test_relative_ratio_equals_single_site_for_independent_sites():
    mass, a = 0.5, 10.0
    q = _mesh(TRIANGULAR, 8)
    freqs = np.full((len(q), 2), 3.0)
    vecs = np.broadcast_to(np.eye(2), (len(q), 2, 2))
    bonds = lm.nearest_neighbour_bonds(TRIANGULAR, np.zeros((1, 2)))
    temps = np.array([0.0, 20.0, 200.0])
    rel = lm.relative_spectrum(freqs, vecs, q, bonds, mass).lindemann_ratio(temps)
    single = lm.single_site_spectrum(freqs, vecs, mass, a).lindemann_ratio(temps)
    np.testing.assert_allclose(rel, single, rtol=1e-12)


def test_unpinned_crystal_single_site_diverges_relative_converges():
    """Free 2D crystal at T > 0: ⟨u²⟩ grows like ln N_mesh, the bond ratio converges (spec §7)."""
    mass, temps = 0.5, np.array([300.0])  # k_BT above ħω of the smallest mesh q: classical ∫d²q/q²
    basis = np.zeros((1, 2))
    bonds = lm.nearest_neighbour_bonds(TRIANGULAR, basis)
    single, rel = [], []
    for n in (12, 24, 48):
        q = _mesh(TRIANGULAR, n)
        w, e = _phonons(_spring_model(TRIANGULAR, basis, q, mass, 2.0, 0.3, 0.0))
        s = lm.single_site_spectrum(w, e, mass, bonds[3])
        assert int(s.n_zero_modes) == 2  # the acoustic pair at Γ is dropped
        single.append(s.lindemann_squared(temps).max())
        rel.append(lm.relative_spectrum(w, e, q, bonds, mass).lindemann_squared(temps).max())
    growth = np.diff(single)
    assert np.all(growth > 0) and growth[1] == pytest.approx(growth[0], rel=0.1)  # ∝ ln 2 per doubling
    assert abs(rel[2] / rel[1] - 1) < 0.01 and abs(rel[2] / rel[1] - 1) < abs(rel[1] / rel[0] - 1)


def test_dispersive_sweep_is_vectorized_and_monotone():
    """Batch of pinned spring models: T_m from the batch equals T_m point by point; L(T) rises."""
    mass = 0.6
    q = _mesh(TRIANGULAR, 10)
    basis = np.zeros((1, 2))
    pins = np.array([0.3, 1.0, 3.0])
    spectra = [_phonons(_spring_model(TRIANGULAR, basis, q, mass, 2.0, -0.2, kp)) for kp in pins]
    w = np.stack([s[0] for s in spectra])
    e = np.stack([s[1] for s in spectra])
    batch = lm.single_site_spectrum(w, e, mass, 10.0)
    res = batch.melting_temperature(0.3)
    assert not res.quantum_melted.any() and np.all(np.isfinite(res.melting_temperature))
    for i in range(3):
        one = lm.single_site_spectrum(w[i], e[i], mass, 10.0).melting_temperature(0.3)
        np.testing.assert_allclose(res.melting_temperature[i], one.melting_temperature, rtol=1e-12)
        np.testing.assert_allclose(
            lm.single_site_spectrum(w[i], e[i], mass, 10.0).lindemann_ratio(np.array([one.melting_temperature])),
            0.3,
            rtol=1e-10,
        )
    assert np.all(np.diff(res.melting_temperature) > 0)  # deeper pinning melts later
    lt = batch.lindemann_ratio(np.linspace(0, 400, 9))
    assert np.all(np.diff(lt, axis=-1) > 0)


def test_unstable_point_is_nan_and_flagged():
    mass = 0.6
    q = _mesh(TRIANGULAR, 6)
    basis = np.zeros((1, 2))
    w_ok, e_ok = _phonons(_spring_model(TRIANGULAR, basis, q, mass, 2.0, 0.1, 1.0))
    w_bad, e_bad = _phonons(_spring_model(TRIANGULAR, basis, q, mass, 2.0, 0.1, -0.5))
    spec = lm.single_site_spectrum(np.stack([w_ok, w_bad]), np.stack([e_ok, e_bad]), mass, 10.0)
    assert spec.unstable.tolist() == [False, True]
    res = spec.melting_temperature(0.3)
    assert res.unstable.tolist() == [False, True] and np.isnan(res.melting_temperature[1])
    assert np.isfinite(res.melting_temperature[0]) and not res.quantum_melted[1]


def test_refine_mesh_reports_convergence():
    mass = 0.6
    basis = np.zeros((1, 2))

    def u2(n):
        q = _mesh(TRIANGULAR, n)
        w, e = _phonons(_spring_model(TRIANGULAR, basis, q, mass, 2.0, -0.2, 1.0))
        return lm.single_site_spectrum(w, e, mass, 10.0).lindemann_squared(np.array([0.0, 50.0]))

    value, conv = ms.refine_mesh(u2, [4, 8, 16, 32, 64], tolerance=1e-5)
    assert conv.converged and conv.change < 1e-5 and conv.mesh == 32  # exponential convergence (pinned)
    assert [h[0] for h in conv.history] == [4, 8, 16, 32]
    np.testing.assert_allclose(value, u2(48), rtol=1e-5)
    _, strict = ms.refine_mesh(u2, [2, 3], tolerance=1e-15)
    assert not strict.converged and strict.history[-1][0] == 3
    with pytest.raises(ValueError):
        ms.refine_mesh(u2, [4], 1e-3)


def test_time_reversal_representatives_with_multiplicities_give_the_full_mesh_result():
    """q and −q carry the same frequencies and mode weights: half the mesh, weighted, is exact."""
    from moire_cli import crystals, dynamics
    from moire_cli.potentials import Coulomb, MoirePotential

    cr = crystals.build_crystal("honeycomb_gwc", 8.0)
    model = dynamics.LatticeModel(cr, MoirePotential(8.0, 5.0, 0.3), Coulomb(4.0), 0.5)
    q = crystals.monkhorst_pack(cr, (9, 9))
    rep = dynamics.time_reversal_representatives(cr, q)[0]
    todo, counts = np.unique(rep, return_counts=True)
    assert len(todo) < 0.6 * len(q)
    bonds = lm.nearest_neighbour_bonds(cr.cell, cr.basis)
    temps = np.array([0.0, 30.0, 300.0])
    w, e = dynamics.phonons(model, q)
    wr, er = dynamics.phonons(model, q[todo])
    full = lm.single_site_spectrum(w, e, 0.5, bonds[3]).lindemann_squared(temps)
    half = lm.single_site_spectrum(wr, er, 0.5, bonds[3], q_weights=counts).lindemann_squared(temps)
    np.testing.assert_allclose(half, full, rtol=1e-12)
    full_rel = lm.relative_spectrum(w, e, q, bonds, 0.5).lindemann_squared(temps)
    half_rel = lm.relative_spectrum(wr, er, q[todo], bonds, 0.5, q_weights=counts).lindemann_squared(temps)
    np.testing.assert_allclose(half_rel, full_rel, rtol=1e-12)
    with pytest.raises(ValueError, match="q_weights"):
        lm.single_site_spectrum(wr, er, 0.5, 8.0, q_weights=counts[:-1])
