"""Interlayer-exciton pair interactions: closed forms, far-field limits, Hankel transform, derivatives."""

import numpy as np
import pytest
from scipy import special

from moire_cli import excitons as ex
from moire_cli.units import E2_MEV_NM as E2

KAPPA, D, R01, R02 = 3.0, 0.65, 4.5, 3.9  # hBN-encapsulated MoSe₂/WSe₂-like numbers


def _gauss_legendre_hankel(fourier, r, q_max, n_panels, order=16):
    """Brute-force reference: (1/2π)∫₀^q_max F(q) J₀(qr) q dq by composite Gauss–Legendre."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(0.0, q_max, n_panels + 1)
    half = 0.5 * (edges[1] - edges[0])
    q = ((edges[:-1] + half)[:, None] + half * x[None, :]).ravel()
    wq = (half * np.broadcast_to(w, (n_panels, order))).ravel()
    return np.sum(wq * fourier(q) * special.j0(q * r) * q) / (2 * np.pi)


def test_bare_dipole_closed_form_and_far_field():
    r = np.array([0.3, 1.0, 7.0, 40.0, 500.0])
    bare = ex.exciton_interaction("dipole-bare", KAPPA, D)
    u, du, d2u = bare.radial(r)
    rho = np.sqrt(r**2 + D**2)
    np.testing.assert_allclose(u, 2 * E2 / KAPPA * (1 / r - 1 / rho), rtol=1e-9)
    np.testing.assert_allclose(du, 2 * E2 / KAPPA * (-1 / r**2 + r / rho**3), rtol=1e-8)
    np.testing.assert_allclose(d2u, 2 * E2 / KAPPA * (2 / r**3 + 1 / rho**3 - 3 * r**2 / rho**5), rtol=1e-7)
    # far field e²d²/(κr³), correction −(3/2)(d/r)²
    np.testing.assert_allclose(u[-1] * r[-1] ** 3, E2 * D**2 / KAPPA, rtol=2 * (D / r[-1]) ** 2)
    assert bare.coulomb_tail == 0.0 and bare.name == "dipole-bare"


def test_fourier_forms_at_small_q_give_the_far_field_coefficient():
    """U(q) = U(0) − 2πA q + O(q²) with A the 1/r³ coefficient (2D transform of A/r³)."""
    for name in ex.EXCITON_INTERACTIONS:
        inter = ex.exciton_interaction(name, KAPPA, D, R01, R02)
        q = np.array([1e-6, 2e-6])
        u = inter.fourier(q)
        slope = (u[1] - u[0]) / 1e-6
        np.testing.assert_allclose(-slope / (2 * np.pi), inter.far_field_coefficient(), rtol=1e-4)
    lumped = ex.exciton_interaction("dipole-lumped", KAPPA, D, R01, R02)
    np.testing.assert_allclose(
        lumped.far_field_coefficient(), E2 / KAPPA * D * (D + 2 * (R01 + R02) / KAPPA), rtol=1e-14
    )


@pytest.mark.parametrize("name", ["dipole-twosheet", "dipole-lumped"])
def test_remainder_closed_form_matches_the_subtraction(name):
    """R(q) = U(q) − U_bare(q) − Σ a_j [K(ρ_j) − C] (cancellation-free form vs direct subtraction)."""
    inter = ex.exciton_interaction(name, KAPPA, D, R01, R02)
    q = np.array([1e-3, 0.05, 0.4, 1.0, 3.0, 8.0])
    bare = ex.exciton_interaction("dipole-bare", KAPPA, D).fourier(q)
    keldysh = sum(a * (-2 * np.pi * E2 * rho / (KAPPA * (KAPPA + rho * q))) for a, rho in inter._keldysh_terms())
    np.testing.assert_allclose(inter._remainder(q), inter.fourier(q) - bare - keldysh, rtol=1e-10)


def test_twosheet_fourier_reduces_to_sheet_potentials():
    """Δ, V₁₁, V₁₂ of spec §3: with r₀ = 0 the two-sheet form is the bare dipole."""
    q = np.array([0.01, 0.3, 2.0])
    two = ex.exciton_interaction("dipole-twosheet", KAPPA, D, 0.0, 0.0).fourier(q)
    bare = ex.exciton_interaction("dipole-bare", KAPPA, D).fourier(q)
    np.testing.assert_allclose(two, bare, rtol=1e-14)
    k, s = KAPPA, np.exp(-q * D)
    delta = k + q * (R01 + R02) + q**2 * R01 * R02 * (1 - s**2) / k
    v11 = 2 * np.pi * E2 * (k + q * R02 * (1 - s**2)) / (k * q * delta)
    v22 = 2 * np.pi * E2 * (k + q * R01 * (1 - s**2)) / (k * q * delta)
    v12 = 2 * np.pi * E2 * s / (q * delta)
    got = ex.exciton_interaction("dipole-twosheet", KAPPA, D, R01, R02).fourier(q)
    np.testing.assert_allclose(got, v11 + v22 - 2 * v12, rtol=1e-12)


def test_ogata_hankel_transform_of_a_closed_form_pair():
    """2π e^{−qb} ↔ b/(r²+b²)^{3/2}, with first and second derivatives."""
    b = 0.7
    r = np.array([0.2, 0.7, 3.0, 20.0, 150.0])
    rho2 = r**2 + b**2
    exact = (b * rho2**-1.5, -3 * b * r * rho2**-2.5, -3 * b * rho2**-2.5 + 15 * b * r**2 * rho2**-3.5)
    ogata = ex.hankel_transform_2d(lambda q: 2 * np.pi * np.exp(-q * b), r, b)
    for got, ref in zip(ogata, exact, strict=True):  # Ogata serves r < 8d; at r ≫ b its x³ moment loses digits
        np.testing.assert_allclose(got[:4], ref[:4], rtol=1e-8)
    far = r[2:]
    rotated = ex.hankel_transform_2d_rotated(lambda q: 2 * np.pi * np.exp(-q * b), far)
    for got, ref in zip(rotated, exact, strict=True):
        np.testing.assert_allclose(got, ref[2:], rtol=1e-10)


@pytest.mark.parametrize("name", ["dipole-twosheet", "dipole-lumped"])
def test_real_space_remainder_matches_brute_force_transform(name):
    """Ogata (r < 8d) and rotated-contour (r ≥ 8d) transforms of R(q) vs dense Gauss–Legendre."""
    inter = ex.exciton_interaction(name, KAPPA, D, R01, R02)
    r = np.array([0.65, 2.0, 4.0, 6.0, 10.0, 50.0])
    got = inter._hankel_remainder(r)[0]
    ref = np.array([_gauss_legendre_hankel(inter._remainder, ri, 60 / D, int(60 / D * ri / 2) + 600) for ri in r])
    u = inter.radial(r)[0]
    assert np.all(np.abs(got - ref) < 1e-9 * np.abs(u))
    # the two methods agree where both apply
    for rr in (np.array([5.5, 8.0, 13.0])):
        a = ex.hankel_transform_2d(inter._remainder, np.array([rr]), D)
        b = ex.hankel_transform_2d_rotated(inter._remainder, np.array([rr]))
        np.testing.assert_allclose(np.ravel(a), np.ravel(b), rtol=1e-8)


@pytest.mark.parametrize("name", ex.EXCITON_INTERACTIONS)
def test_derivatives_match_finite_differences(name):
    inter = ex.exciton_interaction(name, KAPPA, D, R01, R02)
    r = np.array([1.5, 4.0, 5.19, 5.21, 9.0, 25.0, 80.0])  # 5.2 = 8d: the method switch
    h = 1e-4 * r
    u, du, d2u = inter.radial(r)
    up, dup, _ = inter.radial(r + h)
    um, dum, _ = inter.radial(r - h)
    np.testing.assert_allclose(du, (up - um) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(d2u, (dup - dum) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(d2u[:-1], ((up - 2 * u + um) / h**2)[:-1], rtol=2e-4)


def test_twosheet_tends_to_bare_dipole_far_away():
    """r ≫ r₀/κ: U → e²d²/(κr³) (the far field is unscreened; corrections O((r₀/κr)²))."""
    inter = ex.exciton_interaction("dipole-twosheet", KAPPA, D, R01, R02)
    r = np.array([100.0, 300.0, 1000.0, 3000.0])
    u, du, d2u = inter.radial(r)
    a = E2 * D**2 / KAPPA
    ell = (R01 + R02) / KAPPA
    dev = np.abs(u * r**3 / a - 1)
    assert np.all(dev < 3 * (ell / r) ** 2)
    assert dev[-1] < dev[0] / 50  # converges as r⁻²
    np.testing.assert_allclose(du * r**4 / (-3 * a) - 1, 5 / 3 * (u * r**3 / a - 1), rtol=0.02)  # B/r⁵ term
    np.testing.assert_allclose(d2u * r**5 / (12 * a) - 1, 5 / 2 * (u * r**3 / a - 1), rtol=0.02)
    # 2D screening enhances the dipolar repulsion at intermediate r (spec §3 / seed)
    bare = ex.exciton_interaction("dipole-bare", KAPPA, D)
    r_mid = np.array([3.0, 6.0, 10.0])
    assert np.all(inter.radial(r_mid)[0] > bare.radial(r_mid)[0])


def test_lumped_tends_to_screened_dipole_far_away():
    inter = ex.exciton_interaction("dipole-lumped", KAPPA, D, R01, R02)
    r = np.array([300.0, 1000.0])
    u = inter.radial(r)[0]
    a = E2 / KAPPA * D * (D + 2 * (R01 + R02) / KAPPA)
    dev = np.abs(u * r**3 / a - 1)
    assert np.all(dev < 10 * ((R01 + R02) / KAPPA / r) ** 2)
    np.testing.assert_allclose(dev[0] / dev[1], (1000 / 300) ** 2, rtol=0.01)  # O(r⁻²) correction


def test_twosheet_with_vanishing_screening_equals_bare():
    r = np.array([1.0, 5.0, 20.0, 100.0])
    bare = ex.exciton_interaction("dipole-bare", KAPPA, D).radial(r)
    exact = ex.exciton_interaction("dipole-twosheet", KAPPA, D, 0.0, 0.0).radial(r)
    for a, b in zip(exact, bare, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    tiny = ex.exciton_interaction("dipole-twosheet", KAPPA, D, 1e-7, 2e-7).radial(r)  # numerical path
    for a, b in zip(tiny, bare, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_keldysh_remainder_series_joins_the_special_functions():
    """K − C from Struve/Bessel (x ≤ 60) and from the asymptotic series (x > 60) agree at the seam."""
    r0 = 4.5
    r = np.array([59.99, 60.01]) * r0 / KAPPA
    k = ex._keldysh_minus_coulomb(r, KAPPA, r0)
    for v in k:
        np.testing.assert_allclose(v[0], v[1], rtol=2e-3)  # smooth function, points 3e-4 apart
    x = 60.0
    f = special.struve(0, x) - special.y0(x) - 2 / (np.pi * x)
    series = ex._keldysh_minus_coulomb(np.array([60.0 * r0 / KAPPA * (1 + 1e-12)]), KAPPA, r0)[0][0]
    np.testing.assert_allclose(series, np.pi * E2 / (2 * r0) * f, rtol=1e-8)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="unknown exciton interaction"):
        ex.exciton_interaction("shifted-keldysh", KAPPA, D)
    with pytest.raises(ValueError, match="d > 0"):
        ex.exciton_interaction("dipole-bare", KAPPA, 0.0)
    with pytest.raises(ValueError, match="distances"):
        ex.exciton_interaction("dipole-bare", KAPPA, D).radial(np.array([0.0, 1.0]))
