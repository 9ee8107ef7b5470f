"""Moiré potential and pair interactions (spec §2–3)."""

import numpy as np
import pytest

from moire_cli.potentials import Coulomb, DualGate, Keldysh, MoirePotential, image_charge_series
from moire_cli.units import E2_MEV_NM, HBAR2_OVER_M0_MEV_NM2

RNG = np.random.default_rng(7)


def test_high_symmetry_points_and_trap():
    a, V, psi = 8.0, 15.0, np.deg2rad(45.0)
    p = MoirePotential(a, V, psi)
    A1, A2 = np.array([a, 0.0]), np.array([a / 2, a * np.sqrt(3) / 2])
    rs = np.array([np.zeros(2), (A1 + A2) / 3, 2 * (A1 + A2) / 3]) - p.r_min
    theta = psi + np.array([0, -2 * np.pi / 3, 2 * np.pi / 3])
    assert p.value(rs) == pytest.approx(6 * V * np.cos(theta), rel=1e-12)
    b = 4 * np.pi / (np.sqrt(3) * a)
    for s in range(3):
        assert p.hessian(rs[s]) == pytest.approx(-3 * V * b**2 * np.cos(theta[s]) * np.eye(2), abs=1e-10)
    # the origin is the minimum, with stiffness k_M = 16π²V c(ψ)/a², c = −min cos θ_s
    assert p.value(np.zeros(2)) == pytest.approx(6 * V * np.cos(theta).min())
    assert p.k_M == pytest.approx(16 * np.pi**2 * V / a**2 * -np.cos(theta).min())
    assert p.hessian(np.zeros(2)) == pytest.approx(p.k_M * np.eye(2))
    assert p.hbar_omega_M(0.5) == pytest.approx(4 * np.pi / a * np.sqrt(HBAR2_OVER_M0_MEV_NM2 * V * -np.cos(theta).min() / 0.5))
    assert p.gradient(np.zeros(2)) == pytest.approx([0, 0], abs=1e-12)


def test_hole_sign_and_barrier():
    p = MoirePotential(10.0, 2.0, 0.0, carrier_sign=-1)  # ψ + π = π: c = 1, barrier 8V
    assert p.c_psi == pytest.approx(1.0)
    assert p.barrier == pytest.approx(16.0)
    assert MoirePotential(10.0, 2.0, np.pi).k_M == pytest.approx(p.k_M)


@pytest.mark.parametrize("harmonic", [False, True])
def test_gradient_and_hessian_match_finite_differences(harmonic):
    p = MoirePotential(9.0, 7.0, np.deg2rad(-94), harmonic_only=harmonic)
    r = RNG.normal(scale=1.0, size=(5, 2))
    h = 1e-5
    e = np.eye(2) * h
    g_fd = np.stack([(p.value(r + e[i]) - p.value(r - e[i])) / (2 * h) for i in range(2)], -1)
    assert p.gradient(r) == pytest.approx(g_fd, rel=1e-7, abs=1e-8)
    h_fd = np.stack([(p.gradient(r + e[i]) - p.gradient(r - e[i])) / (2 * h) for i in range(2)], -1)
    assert p.hessian(r) == pytest.approx(h_fd, rel=1e-6, abs=1e-6)


def _fd_check(inter, r):
    h = 1e-6 * r
    u, u1, u2 = inter.radial(r)
    up, u1p, _ = inter.radial(r + h)
    um, u1m, _ = inter.radial(r - h)
    assert u1 == pytest.approx((up - um) / (2 * h), rel=1e-6)
    assert u2 == pytest.approx((u1p - u1m) / (2 * h), rel=1e-6)


def test_keldysh_limits_and_derivatives():
    kappa, r0 = 5.0, 4.511
    k = Keldysh(kappa, r0)
    c = Coulomb(kappa)
    r = np.geomspace(0.05, 2000.0, 60)
    _fd_check(k, r)
    # r ≫ r0/κ: Coulomb, with the leading correction −e² r0²/(κ³ r³)
    big = np.array([300.0, 1000.0])
    rem = k.radial(big)[0] - c.radial(big)[0]
    assert rem == pytest.approx(-E2_MEV_NM * r0**2 / (kappa**3 * big**3), rel=1e-2)
    # continuity across the switch to the asymptotic series (x = 40)
    r_sw = 40 * r0 / kappa
    lo, hi = k.radial(np.array([r_sw * (1 - 1e-13)])), k.radial(np.array([r_sw * (1 + 1e-13)]))
    for a, b in zip(lo, hi, strict=True):
        assert a == pytest.approx(b, rel=1e-10)  # scipy struve/y accuracy at x = 40
    # r0 → 0: Coulomb everywhere
    k0 = Keldysh(kappa, 1e-4)
    rr = np.array([1.0, 8.0, 30.0])
    for a, b in zip(k0.radial(rr), c.radial(rr), strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    q = np.array([0.01, 1.0])
    assert k.fourier(q) == pytest.approx(2 * np.pi * E2_MEV_NM / (q * (kappa + r0 * q)))


def test_keldysh_fourier_matches_hankel_transform():
    from scipy import integrate, special

    k = Keldysh(4.0, 3.0)
    q = 0.7
    # U(q) = 2π ∫ U(r) J0(qr) r dr; the Coulomb part is done analytically to tame the tail
    rem = integrate.quad(lambda r: (k.radial(np.array([r]))[0][0] - k.coulomb_tail / r) * special.j0(q * r) * r,
                         0, 400, limit=400)[0]
    assert 2 * np.pi * rem + 2 * np.pi * k.coulomb_tail / q == pytest.approx(float(k.fourier(q)), rel=1e-4)


def test_dual_gate_series_agree_and_limits():
    kappa, d = 4.0, 5.0
    g = DualGate(kappa, d)
    r = np.array([2.0, 5.0, 12.0])
    assert g.radial(r)[0] == pytest.approx(image_charge_series(kappa, d, r), rel=1e-8)
    _fd_check(g, r)
    # far gates: Coulomb; close gates: exponential decay 4e²/(κd)·K0(πr/2d) leading term
    far = DualGate(kappa, 1e4)
    assert far.radial(np.array([3.0]))[0] == pytest.approx(E2_MEV_NM / (kappa * 3.0), rel=1e-3)
    assert g.radial(np.array([40.0]))[0] == pytest.approx(
        2 * E2_MEV_NM / (kappa * d) * float(__import__("scipy").special.k0(np.pi * 40 / (2 * d))), rel=1e-9
    )


def test_bad_parameters_raise():
    with pytest.raises(ValueError):
        MoirePotential(-1, 1, 0)
    with pytest.raises(ValueError):
        MoirePotential(1, -1, 0)
    with pytest.raises(ValueError):
        Keldysh(5, 0.0)
    with pytest.raises(ValueError):
        DualGate(5, -1.0)


# ---------------------------------------------------------------- escape barrier (issue 15 item 5)
def _numerical_escape_barrier(p: MoirePotential) -> float:
    """Independent check: every critical point of Δ in one moiré cell from scipy.optimize.root on
    ∇Δ = 0 (a 12 × 12 grid of starts), the index-1 ones (one negative Hessian eigenvalue) are the
    saddles; the escape barrier is the lowest saddle minus the global minimum."""
    from scipy import optimize

    f = np.linspace(0, 1, 12, endpoint=False)
    starts = np.stack(np.meshgrid(f, f), -1).reshape(-1, 2) @ p.lattice
    saddles = []
    for r0 in starts:
        # Levenberg–Marquardt: scipy 1.17's default hybr at tol=1e-13 ends many starts on spurious
        # points (success=False); the gradient norm below is the criterion either way
        sol = optimize.root(lambda r: p.gradient(r), r0, jac=lambda r: p.hessian(r), method="lm", tol=1e-13)
        if np.all(np.isfinite(sol.x)) and np.linalg.norm(p.gradient(sol.x)) < 1e-9 * p.V / p.a_M:
            ev = np.linalg.eigvalsh(p.hessian(sol.x))
            if ev[0] < -1e-6 * abs(ev).max() and ev[1] > 1e-6 * abs(ev).max():
                saddles.append(float(p.value(sol.x)))
    return min(saddles) - float(p.value(np.zeros(2)))


def _midpoint_barrier(p: MoirePotential) -> float:
    """The old (wrong) estimate: Δ halfway to the next minimum along A1, minus Δ_min."""
    return float(p.value(0.5 * p.lattice[0]) - p.value(np.zeros(2)))


@pytest.mark.parametrize("psi_deg", [0, 17, 30, 45, 60, 90, 120, 150, 180, 200, 245, 300])
@pytest.mark.parametrize("sign", [1, -1])
def test_escape_barrier_is_the_saddle(psi_deg, sign):
    p = MoirePotential(8.0, 15.0, np.deg2rad(psi_deg), carrier_sign=sign)
    assert p.barrier == pytest.approx(_numerical_escape_barrier(p), rel=1e-9, abs=1e-9)
    assert p.barrier <= _midpoint_barrier(p) + 1e-9  # the straight line is never below the saddle


def test_escape_barrier_closed_forms_and_issue_numbers():
    V = 15.0
    # ψ = π: the saddle is the midpoint of two minima (by symmetry), 8V (spec §2)
    p = MoirePotential(8.0, V, np.pi)
    assert p.barrier == pytest.approx(8 * V, rel=1e-12) == _midpoint_barrier(p)
    # ψ = 0: the minima form a honeycomb; escape to the neighbouring minimum costs V, while the
    # straight line to the next equivalent minimum rises by 4V
    p = MoirePotential(8.0, V, 0.0)
    assert p.barrier == pytest.approx(V, rel=1e-12)
    assert _midpoint_barrier(p) == pytest.approx(4 * V, rel=1e-12)
    # the shipped WSe2/WS2 hole crystal (ψ = 45°, holes): 42.4 meV escape, not 84.9 (issue 15 item 5)
    p = MoirePotential(8.0, V, np.deg2rad(45.0), carrier_sign=-1)
    assert p.barrier == pytest.approx(2 * np.sqrt(2) * V, rel=1e-12)
    assert round(p.barrier, 1) == 42.4 and round(_midpoint_barrier(p), 1) == 84.9
    # harmonic ratio: the warning now fires when ħω_M > barrier / 4 with the true barrier
    assert MoirePotential(8.0, V, 0.0).harmonic_warning(0.45) is not None
