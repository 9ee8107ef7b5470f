"""Pair interactions of interlayer excitons (dipoles) for moiré exciton crystals.

An interlayer exciton has its electron in layer 1 (z = 0) and its hole in layer 2 (z = d); two such
excitons interact through U_XX = V_ee + V_hh − 2 V_eh = V₁₁ + V₂₂ − 2 V₁₂ (spec §3). Three models,
all implementing the `PairInteraction` protocol of the moiré contract (radial → U, U′, U″; fourier;
``coulomb_tail = 0`` since U_XX decays as 1/r³):

``dipole-bare``
    U = (2e²/κ)[1/r − 1/√(r² + d²)] → e²d²/(κr³).
``dipole-twosheet`` (default)
    Exact electrostatics of two polarizable sheets (2D polarizabilities r₀₁ at z = 0, r₀₂ at z = d)
    in a medium of dielectric constant κ. With s = e^{−qd} and
    Δ(q) = κ + q(r₀₁ + r₀₂) + q² r₀₁ r₀₂ (1 − s²)/κ:
    V₁₁ = 2πe²[κ + q r₀₂(1 − s²)]/(κqΔ), V₂₂ = (1 ↔ 2), V₁₂ = 2πe² s/(qΔ).
    Far field: e²d²/(κr³), whatever r₀₁, r₀₂ (the screening enhances U at r ≲ r₀/κ only).
``dipole-lumped``
    One sheet of polarizability r₀ = r₀₁ + r₀₂: U(q) = 4πe²(1 − e^{−qd})/[q(κ + r₀q)];
    far field (e²/κ) d (d + 2r₀/κ)/r³.

Real space by Hankel transform, U(r) = (1/2π)∫₀^∞ U(q) J₀(qr) q dq, built so that the numerical part
converges fast (spec §3, "subtracting analytic tails"):

    U(q) = U_bare(q) + Σ_j a_j [K(q; ρ_j) − C(q)] + R(q)

where U_bare is the bare dipole, K(q; ρ) = 2πe²/[q(κ + ρq)] the Rytova–Keldysh interaction and
C = 2πe²/(κq) the Coulomb one; both subtracted pieces have closed forms in real space
(K − C = (πe²/2ρ)[H₀ − Y₀](κr/ρ) − e²/(κr)) and carry the small-q 1/q and large-q 1/q² tails. The
remainder R(q) is written in closed form without cancellations, is finite at q = 0 and decays as
e^{−qd}. Its transforms (U with J₀; U′, U″ with J₀ and J₁: the force constants come from the same
construction, not from differentiating a table) are computed directly at the requested r, with no
table or spline:
- r < 8d: Ogata's double-exponential quadrature at Bessel zeros (H. Ogata, Publ. RIMS Kyoto Univ.
  41, 949 (2005)), step refined for r < 16d;
- r ≥ 8d: the contour rotated onto the imaginary q axis, where J₀ becomes the non-oscillating K₀
  (R is analytic in Re q ≥ 0), by graded Gauss–Legendre quadrature.

Accuracy (tests/moire/test_excitons.py): closed-form Hankel pairs to ≤ 1e-8 (Ogata, r < 30b) and
1e-10 (rotated); the remainder vs a dense brute-force quadrature to < 1e-9 of U for d ≤ r ≤ 80d; the
two methods agree to 1e-8 where both apply; U′, U″ agree with finite differences of U to 1e-6; far
fields reached as r⁻² out to r = 3000 nm; r₀₁ = r₀₂ → 0 gives the bare dipole. Cost: ~0.1 s per
1000 distinct distances (`radial` evaluates each distinct distance once).
Units: r, d, r₀ in nm; U in meV, U′ in meV/nm, U″ in meV/nm².
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import special

from moire_cli.units import E2_MEV_NM

EXCITON_INTERACTIONS: tuple[str, ...] = ("dipole-bare", "dipole-twosheet", "dipole-lumped")
DEFAULT_EXCITON_INTERACTION = "dipole-twosheet"

_TWO_PI = 2.0 * np.pi
#: Above x = κr/r₀ = _ASYMPTOTIC_X the Keldysh-minus-Coulomb remainder uses its asymptotic series.
_ASYMPTOTIC_X = 60.0
_N_ASYMPTOTIC = 14
#: r / d from which the remainder's transform uses the rotated contour (K₀ kernel) instead of Ogata.
_ROTATE_BEYOND = 8.0


# --------------------------------------------------------------------------------------------
# Ogata quadrature for Hankel transforms
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def ogata_nodes(nu: int, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x_k and weights W_k with ∫₀^∞ f(x) J_ν(x) dx ≈ Σ_k W_k f(x_k) (Ogata 2005, eq. 5.2).

    x_k = (π/h) ψ(hξ_k), ξ_k = j_{ν,k}/π (zeros of J_ν), ψ(t) = t tanh((π/2) sinh t),
    W_k = π Y_ν(πξ_k)/J_{ν+1}(πξ_k) · J_ν(x_k) · ψ′(hξ_k). The sum is truncated at 4/h nodes: beyond
    t = hξ ≈ 3.5 the factor J_ν(x_k) has decayed double-exponentially below rounding.

    Args:
        nu: Bessel order (0 or 1 here).
        h: step of the double-exponential transform (smaller = finer near x = 0).

    Returns:
        (x, W), both (N,) float64.
    """
    n = int(np.ceil(4.0 / h))
    zeros = special.jn_zeros(nu, n)
    w = special.yv(nu, zeros) / special.jv(nu + 1, zeros)
    t = h * zeros / np.pi
    u = np.pi * np.sinh(t)
    e = np.exp(-u)
    dpsi = np.pi * t * np.cosh(t) * (2.0 * e / (1.0 + e) ** 2) + np.tanh(u / 2.0)
    x = np.pi * t * np.tanh(u / 2.0) / h
    weights = np.pi * w * special.jv(nu, x) * dpsi
    return x, weights


def _ogata_step(r: np.ndarray, length: float) -> np.ndarray:
    """Step h per distance r: 0.02, halved per factor 2 that r lies below 16·length.

    Resolves the e^{−q·length} scale near x = qr = 0 (tested to 1e-12 against brute force).
    """
    ratio = np.maximum(16.0 * length / np.maximum(r, 1e-300), 1.0)
    k = np.ceil(np.log2(ratio)).astype(int)
    return 0.02 / 2.0**k


def hankel_transform_2d(
    fourier: Callable[[np.ndarray], np.ndarray], r: np.ndarray, length: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radial 2D inverse Fourier transform G(r) = (1/2π)∫₀^∞ F(q) J₀(qr) q dq and G′, G″.

    With x = qr: G = (1/2πr²) ∫ x F(x/r) J₀(x) dx, G′ = −(1/2πr³) ∫ x² F J₁ dx,
    G″ = (1/2πr⁴)[∫ x² F J₁ dx − ∫ x³ F J₀ dx], each by Ogata quadrature (`ogata_nodes`).
    F must be smooth on (0, ∞), finite at 0 and decay at least as e^{−q·length}; the step h is
    refined for r < 16·length.

    Args:
        fourier: F(q) (q array of any shape, 1/nm) -> same shape.
        r: distances (N,) nm, > 0.
        length: decay length of F (nm, > 0).

    Returns:
        G (N,), G′ (N,), G″ (N,) in F's unit / nm², / nm³, / nm⁴.
    """
    r = np.asarray(r, dtype=float)
    g = np.empty_like(r)
    g1 = np.empty_like(r)
    g2 = np.empty_like(r)
    steps = _ogata_step(r, length)
    for h in np.unique(steps):  # a few step sizes; each group is one vectorized evaluation
        idx = np.flatnonzero(steps == h)
        x0, w0 = ogata_nodes(0, float(h))
        x1, w1 = ogata_nodes(1, float(h))
        chunk = max(1, 2_000_000 // x0.size)
        for start in range(0, idx.size, chunk):  # bounds memory only
            sel = idx[start : start + chunk]
            rr = r[sel]
            f0 = fourier(x0[None, :] / rr[:, None])
            f1 = fourier(x1[None, :] / rr[:, None])
            i0 = f0 @ (w0 * x0)
            i2 = f0 @ (w0 * x0**3)
            i1 = f1 @ (w1 * x1**2)
            g[sel] = i0 / (_TWO_PI * rr**2)
            g1[sel] = -i1 / (_TWO_PI * rr**3)
            g2[sel] = (i1 - i2) / (_TWO_PI * rr**4)
    return g, g1, g2


def _k0_panels() -> tuple[np.ndarray, np.ndarray]:
    """Composite 16-point Gauss–Legendre nodes/weights on u ∈ [0, 60] (368 nodes).

    Panels grow geometrically (×10) from 1e-8 to 0.1 so the u·ln u behaviour of u K₀(u) at 0 is
    resolved, then widen with the e^{−u} decay (Im F(iu/r) turns by < 2.5 rad per panel for r ≥ 8d).
    """
    edges = np.array(
        [0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0]
        + [2.0, 3.5, 5.5, 8.0, 11.0, 15.0, 20.0, 26.0, 33.0, 41.0, 50.0, 60.0]
    )
    x, w = np.polynomial.legendre.leggauss(16)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    return (mid[:, None] + half[:, None] * x).ravel(), (half[:, None] * w).ravel()


_K0_U, _K0_W = _k0_panels()
_K0_KERNELS = (
    _K0_W * special.k0(_K0_U) * _K0_U,
    _K0_W * special.k1(_K0_U) * _K0_U**2,
    _K0_W * (special.k0(_K0_U) * _K0_U**3 + special.k1(_K0_U) * _K0_U**2),
)


def hankel_transform_2d_rotated(
    fourier: Callable[[np.ndarray], np.ndarray], r: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """G(r) = (1/2π)∫₀^∞ F(q) J₀(qr) q dq, G′, G″ by rotating the contour onto the imaginary q axis.

    Writing J₀ = (H₀⁽¹⁾ + H₀⁽²⁾)/2 and turning each half onto q = ±it (H₀⁽¹⁾(itr) = (2/πi)K₀(tr)):
    G = −(1/π²r²) ∫₀^∞ Im F(iu/r) K₀(u) u du, G′ = (1/π²r³) ∫ Im F(iu/r) K₁(u) u² du,
    G″ = −(1/π²r⁴) ∫ Im F(iu/r) [K₀(u)u³ + K₁(u)u²] du: no oscillation, decaying as e^{−u}
    (Gauss–Legendre on u ≤ 60, panels graded at 0 for the logarithm of K₀).
    Valid when F is analytic and bounded in Re q ≥ 0 with F(q̄) = F(q)* (true for the exciton
    remainders: their poles lie on the negative real axis and the two-sheet Δ(q) has no zero in
    Re q ≥ 0, checked by the argument principle). Accurate when F varies slowly on the scale 1/r,
    i.e. r ≳ 8 d here; `hankel_transform_2d` covers the short distances.

    Args:
        fourier: F(q) accepting complex q (any shape). r: (N,) nm.

    Returns:
        G, G′, G″ (N,) each.
    """
    r = np.asarray(r, dtype=float)
    im = fourier(1j * _K0_U[None, :] / r[:, None]).imag
    i0, i1, i2 = (im @ k for k in _K0_KERNELS)
    pi2 = np.pi**2
    return -i0 / (pi2 * r**2), i1 / (pi2 * r**3), -i2 / (pi2 * r**4)


# --------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------
def bare_dipole_radial(r: np.ndarray, kappa: float, d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U = (2e²/κ)[1/r − 1/√(r²+d²)] and its r-derivatives, in cancellation-free form.

    Args:
        r: distances (any shape, nm, > 0). kappa: dielectric constant. d: layer separation (nm).

    Returns:
        U (meV), dU/dr (meV/nm), d²U/dr² (meV/nm²), each shaped like r.
    """
    r = np.asarray(r, dtype=float)
    c = 2.0 * E2_MEV_NM / kappa
    rho = np.sqrt(r * r + d * d)
    s = rho + r
    u = c * d * d / (r * rho * s)
    du = -c * d * d * (rho * rho + rho * r + r * r) / (s * r * r * rho**3)
    p = rho**4 + rho**3 * r + rho**2 * r**2 + rho * r**3 + r**4
    d2u = c * d * d * (2.0 * p / s + r**3) / (r**3 * rho**5)
    return u, du, d2u


def _keldysh_minus_coulomb(r: np.ndarray, kappa: float, r0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K(r) − e²/(κr) with K the Rytova–Keldysh interaction (spec §3), and its r-derivatives.

    K = (πe²/2r₀) F(x), x = κr/r₀, F = H₀ − Y₀; g(x) = F(x) − 2/(πx) is evaluated with Struve/Bessel
    functions for x ≤ 60 and by its asymptotic series (Abramowitz & Stegun 12.1.30)
    g = (2/π) Σ_{k≥1} (−1)^k [(2k−1)!!]² x^{−(2k+1)} beyond, so r₀ → 0 is exact (no cancellation).
    Derivatives: F′ = 2/π − H₁ + Y₁, F″ = −F + (H₁ − Y₁)/x.

    Returns:
        (ΔU meV, ΔU′ meV/nm, ΔU″ meV/nm²) shaped like r; zeros when r₀ = 0.
    """
    r = np.asarray(r, dtype=float)
    if r0 == 0.0:
        z = np.zeros_like(r)
        return z, z.copy(), z.copy()
    x = kappa * r / r0
    g = np.empty_like(x)
    g1 = np.empty_like(x)
    g2 = np.empty_like(x)
    small = x <= _ASYMPTOTIC_X
    xs = x[small]
    if xs.size:
        f = special.struve(0, xs) - special.y0(xs)
        h1y1 = special.struve(1, xs) - special.y1(xs)
        g[small] = f - 2.0 / (np.pi * xs)
        g1[small] = 2.0 / np.pi - h1y1 + 2.0 / (np.pi * xs**2)
        g2[small] = -f + h1y1 / xs - 4.0 / (np.pi * xs**3)
    xl = x[~small]
    if xl.size:
        acc = [np.zeros_like(xl) for _ in range(3)]
        ck = 1.0
        for k in range(1, _N_ASYMPTOTIC + 1):
            ck *= (2 * k - 1) ** 2
            sign = (-1.0) ** k
            acc[0] += sign * ck * xl ** (-(2 * k + 1))
            acc[1] += -sign * (2 * k + 1) * ck * xl ** (-(2 * k + 2))
            acc[2] += sign * (2 * k + 1) * (2 * k + 2) * ck * xl ** (-(2 * k + 3))
        g[~small], g1[~small], g2[~small] = (2.0 / np.pi * a for a in acc)
    pref = np.pi * E2_MEV_NM / (2.0 * r0)
    scale = kappa / r0
    return pref * g, pref * scale * g1, pref * scale * scale * g2


# --------------------------------------------------------------------------------------------
# Interactions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DipoleInteraction:
    """Interlayer-exciton pair interaction U_XX (base of the three models; use `exciton_interaction`).

    Attributes:
        kappa: dielectric constant of the surrounding medium, κ = (ε_top + ε_bottom)/2.
        d: electron–hole layer separation (nm, > 0).
        r0_1, r0_2: 2D polarizabilities (screening lengths) of the electron and hole layers (nm, ≥ 0).
    """

    kappa: float
    d: float
    r0_1: float = 0.0
    r0_2: float = 0.0
    name: str = field(default="dipole", init=False)
    coulomb_tail: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not (self.kappa > 0 and self.d > 0 and self.r0_1 >= 0 and self.r0_2 >= 0):
            raise ValueError(
                f"{self.name}: need kappa > 0, d > 0, r0_1 >= 0, r0_2 >= 0 "
                f"(got kappa={self.kappa}, d={self.d}, r0_1={self.r0_1}, r0_2={self.r0_2})"
            )

    # -- pieces a model defines ------------------------------------------------------------
    def _keldysh_terms(self) -> tuple[tuple[float, float], ...]:
        """(a_j, ρ_j): U ⊃ Σ_j a_j [K(ρ_j) − C]."""
        return ()

    def _remainder(self, q: np.ndarray) -> np.ndarray | None:
        """R(q) (meV·nm²) in closed form, or None when it vanishes identically."""
        return None

    def fourier(self, q: np.ndarray) -> np.ndarray:
        """2D Fourier transform U(q) = ∫ d²r U(r) e^{−iq·r} at |q| (1/nm, any shape) -> meV·nm²."""
        raise NotImplementedError

    # -- real space ---------------------------------------------------------------------
    def _hankel_remainder(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """G, G′, G″ of the remainder R(q) at r (1-D, nm): Ogata for r < 8d, rotated contour beyond."""
        near = r < _ROTATE_BEYOND * self.d
        out = [np.empty_like(r) for _ in range(3)]
        for mask, method in ((near, None), (~near, "rotated")):
            if np.any(mask):
                if method is None:
                    parts = hankel_transform_2d(self._remainder, r[mask], self.d)
                else:
                    parts = hankel_transform_2d_rotated(self._remainder, r[mask])
                for o, p in zip(out, parts, strict=True):
                    o[mask] = p
        return out[0], out[1], out[2]

    def radial(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """U, dU/dr, d²U/dr² at distances r (any shape, nm, > 0) -> meV, meV/nm, meV/nm².

        Raises:
            ValueError: a distance ≤ 0.
        """
        r = np.asarray(r, dtype=float)
        shape = r.shape
        if r.size and not np.all(r > 0):
            raise ValueError(f"{self.name}: distances must be > 0")
        # Lattice sums repeat distances up to rounding: evaluate each once, after clearing the 12
        # lowest mantissa bits (relative change ≤ 2⁻⁴⁰ ≈ 1e-12) so symmetric copies coincide.
        key = (np.ascontiguousarray(r, dtype=np.float64).ravel().view(np.int64) & ~np.int64(0xFFF)).view(np.float64)
        flat, inverse = np.unique(key, return_inverse=True)
        u, du, d2u = bare_dipole_radial(flat, self.kappa, self.d)
        for a, rho in self._keldysh_terms():
            k0, k1, k2 = _keldysh_minus_coulomb(flat, self.kappa, rho)
            u, du, d2u = u + a * k0, du + a * k1, d2u + a * k2
        if self._remainder(np.zeros(1)) is not None and flat.size:  # None: no numerical part
            g0, g1, g2 = self._hankel_remainder(flat)
            u, du, d2u = u + g0, du + g1, d2u + g2
        return u[inverse].reshape(shape), du[inverse].reshape(shape), d2u[inverse].reshape(shape)

    def far_field_coefficient(self) -> float:
        """A (meV·nm³) with U → A/r³ for r ≫ d, r₀/κ (from the |q|-linear term of U(q): A = −c/2π)."""
        raise NotImplementedError


@dataclass(frozen=True)
class DipoleBare(DipoleInteraction):
    """`dipole-bare`: U = (2e²/κ)[1/r − 1/√(r² + d²)], U(q) = 4πe²(1 − e^{−qd})/(κq) (spec §3).

    r0_1, r0_2 are accepted (and ignored) so that all models share one signature.
    """

    name: str = field(default="dipole-bare", init=False)

    def fourier(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        return 4.0 * np.pi * E2_MEV_NM * _one_minus_exp_over_q(q, self.d) / self.kappa

    def far_field_coefficient(self) -> float:
        return E2_MEV_NM * self.d**2 / self.kappa


@dataclass(frozen=True)
class DipoleLumped(DipoleInteraction):
    """`dipole-lumped`: one sheet r₀ = r₀₁ + r₀₂, U(q) = 4πe²(1 − e^{−qd})/[q(κ + r₀q)] (spec §3).

    Decomposition: U = U_bare + 2[K(r₀) − C] + R, R(q) = 4πe² r₀ e^{−qd}/[κ(κ + r₀q)],
    c₁ = −4πe² r₀ (d + r₀/κ)/κ². Far field (e²/κ) d (d + 2r₀/κ)/r³.
    """

    name: str = field(default="dipole-lumped", init=False)

    @property
    def r0(self) -> float:
        return self.r0_1 + self.r0_2

    def fourier(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        return 4.0 * np.pi * E2_MEV_NM * _one_minus_exp_over_q(q, self.d) / (self.kappa + self.r0 * q)

    def _keldysh_terms(self) -> tuple[tuple[float, float], ...]:
        return ((2.0, self.r0),) if self.r0 > 0 else ()

    def _remainder(self, q: np.ndarray) -> np.ndarray | None:
        if self.r0 == 0:
            return None
        k = self.kappa
        return 4.0 * np.pi * E2_MEV_NM * self.r0 * np.exp(-q * self.d) / (k * (k + self.r0 * q))

    def far_field_coefficient(self) -> float:
        return E2_MEV_NM / self.kappa * self.d * (self.d + 2.0 * self.r0 / self.kappa)


@dataclass(frozen=True)
class DipoleTwoSheet(DipoleInteraction):
    """`dipole-twosheet` (default): exact two-sheet electrostatics (spec §3), U = V₁₁ + V₂₂ − 2V₁₂.

    Decomposition: U = U_bare + [K(r₀₁) − C] + [K(r₀₂) − C] + R with (Δ₀ = (κ + r₀₁q)(κ + r₀₂q)/κ,
    p = r₀₁r₀₂, ρ = r₀₁ + r₀₂, N₀ = 2κ + qρ)
    R(q) = 2πe² s [2Δ₀(ρ + qp(1 − s²)/κ) − s(ρΔ₀ − N₀qp/κ)] / (κΔΔ₀), c₁ = −2πe²(r₀₁² + r₀₂²)/κ³.
    Far field e²d²/(κr³).
    """

    name: str = field(default="dipole-twosheet", init=False)

    def _delta(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """s = e^{−qd}, Δ₀ = Δ(s = 0) and Δ = Δ₀ − q²r₀₁r₀₂s²/κ."""
        k, p = self.kappa, self.r0_1 * self.r0_2
        s = np.exp(-q * self.d)
        delta0 = (k + self.r0_1 * q) * (k + self.r0_2 * q) / k
        return s, delta0, delta0 - q * q * p * s * s / k

    def fourier(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        k, rho = self.kappa, self.r0_1 + self.r0_2
        s, _, delta = self._delta(q)
        # U = 2πe²[2κ(1 − s) + qρ(1 − s²)]/(κqΔ), written with (1 − s)/q to stay finite at q = 0
        a = _one_minus_exp_over_q(q, self.d)
        return 2.0 * np.pi * E2_MEV_NM * (2.0 * k * a + rho * q * a * (1.0 + s)) / (k * delta)

    def _keldysh_terms(self) -> tuple[tuple[float, float], ...]:
        return tuple((1.0, r0) for r0 in (self.r0_1, self.r0_2) if r0 > 0)

    def _remainder(self, q: np.ndarray) -> np.ndarray | None:
        if self.r0_1 == 0 and self.r0_2 == 0:
            return None
        k, p, rho = self.kappa, self.r0_1 * self.r0_2, self.r0_1 + self.r0_2
        s, delta0, delta = self._delta(q)
        one_minus_s2 = -np.expm1(-2.0 * q * self.d)
        n0 = 2.0 * k + q * rho
        bracket = 2.0 * delta0 * (rho + q * p * one_minus_s2 / k) - s * (rho * delta0 - n0 * q * p / k)
        return 2.0 * np.pi * E2_MEV_NM * s * bracket / (k * delta * delta0)

    def far_field_coefficient(self) -> float:
        return E2_MEV_NM * self.d**2 / self.kappa


def _one_minus_exp_over_q(q: np.ndarray, d: float) -> np.ndarray:
    """(1 − e^{−qd})/q, → d at q = 0 (no 0/0)."""
    q = np.asarray(q, dtype=float)
    safe = np.where(q > 0, q, 1.0)
    return np.where(q > 0, -np.expm1(-safe * d) / safe, d)


_MODELS: dict[str, type[DipoleInteraction]] = {
    "dipole-bare": DipoleBare,
    "dipole-twosheet": DipoleTwoSheet,
    "dipole-lumped": DipoleLumped,
}


def exciton_interaction(
    name: str, kappa: float, d: float, r0_1: float = 0.0, r0_2: float = 0.0
) -> DipoleInteraction:
    """Factory: the exciton pair interaction called ``name`` (one of `EXCITON_INTERACTIONS`).

    Raises:
        ValueError: unknown name or unphysical parameter (κ ≤ 0, d ≤ 0, r₀ < 0).
    """
    try:
        cls = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown exciton interaction {name!r}; choose one of {list(EXCITON_INTERACTIONS)}") from None
    return cls(kappa=float(kappa), d=float(d), r0_1=float(r0_1), r0_2=float(r0_2))
