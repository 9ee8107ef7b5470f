"""The moiré potential and the pair interactions (value, radial derivatives, Fourier form).

Units: nm, meV, m₀. Sources: Wu, Lovorn, Tutuc, MacDonald, PRL 121, 026402 (2018) (moiré
potential); Rytova (1967), Keldysh, JETP Lett. 29, 658 (1979), Cudazzo et al. PRB 84, 085406 (2011)
(Keldysh); image charges between grounded plates (dual gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import special

from moire_cli.units import E2_MEV_NM, HBAR2_OVER_M0_MEV_NM2

SQRT3 = np.sqrt(3.0)


class MoirePotential:
    """Δ(r) = 2V Σ_{j=1,2,3} cos(b_j·r + ψ) (spec §2; Wu et al. PRL 121, 026402 (2018), Eq. 2).

    The b_j are the three moiré reciprocal vectors at 120° (|b| = 4π/(√3 a_M)), oriented so that
    b_j·(A1+A2)/3 = −2π/3 for the lattice A1 = a_M(1, 0), A2 = a_M(1/2, √3/2).

    Coordinates: ``r`` is measured from the deepest of the three high-symmetry points r_s
    (:attr:`r_min`), so a crystal whose sites are moiré lattice points (all built-ins) sits in
    minima. Carriers at maxima (holes, ``carrier_sign=-1``) use ψ + π.

    Args:
        a_M: moiré period (nm) > 0.  V: amplitude (meV) ≥ 0.  psi: phase ψ (rad).
        carrier_sign: +1 (electron) or −1 (hole → ψ + π).
        harmonic_only: replace Δ by Δ_min + ½ k_M |r − r_l|² around the nearest minimum r_l.
    Raises:
        ValueError: a_M ≤ 0, V < 0, carrier_sign ∉ {+1, −1}.
    """

    def __init__(self, a_M: float, V: float, psi: float, carrier_sign: int = +1, harmonic_only: bool = False):
        if not a_M > 0:
            raise ValueError(f"a_M must be positive, got {a_M}")
        if not V >= 0:
            raise ValueError(f"moiré amplitude V must be ≥ 0, got {V}")
        if carrier_sign not in (1, -1):
            raise ValueError(f"carrier_sign must be +1 or -1, got {carrier_sign}")
        self.a_M = float(a_M)
        self.V = float(V)
        self.psi = float(psi)
        self.carrier_sign = int(carrier_sign)
        self.harmonic_only = bool(harmonic_only)
        self.psi_eff = self.psi + (np.pi if carrier_sign == -1 else 0.0)
        g = 2 * np.pi / self.a_M
        b1, b2 = g * np.array([1.0, -1 / SQRT3]), g * np.array([0.0, 2 / SQRT3])
        self.b = np.array([-b1, -b2, b1 + b2])  # (3, 2)
        self.lattice = self.a_M * np.array([[1.0, 0.0], [0.5, SQRT3 / 2]])
        # high-symmetry points r_s and phases φ_s (spec §2)
        rs = np.array([0.0, 1 / 3, 2 / 3])[:, None] * (self.lattice[0] + self.lattice[1])
        cos_s = np.cos(self.psi_eff + np.array([0.0, -2 * np.pi / 3, 2 * np.pi / 3]))
        s = int(np.argmin(cos_s))
        self.r_min = rs[s]
        self.c_psi = float(-cos_s[s])

    # ---- harmonic quantities
    @property
    def k_M(self) -> float:
        """Trap stiffness k_M = (16π²V/a_M²)·c(ψ) (meV/nm²), c(ψ) = −min_s cos θ_s."""
        return 16 * np.pi**2 * self.V / self.a_M**2 * self.c_psi

    def hbar_omega_M(self, mass: float) -> float:
        """ħω_M = √(ħ² k_M / m) (meV) for mass m (m₀)."""
        return float(np.sqrt(HBAR2_OVER_M0_MEV_NM2 / mass * self.k_M))

    @property
    def barrier(self) -> float:
        """Escape barrier from a minimum (meV): the saddle of the minimum-energy path minus Δ_min,
        E_b = 6V c(ψ) − 2V cos 3ψ (8V at ψ = π, V at ψ = 0, where the minima form a honeycomb).

        Derivation: with p_j = b_j·r + ψ (Σ_j p_j = 3ψ since Σ_j b_j = 0), ∇Δ = −2V Σ_j sin p_j b_j = 0
        needs sin p_1 = sin p_2 = sin p_3. Either all p_j are equal (the high-symmetry points r_s,
        where the Hessian −3Vb² cos θ_s·I is isotropic: minima or maxima, never saddles) or two are α
        and one π − α (or one α and two π − α), which the constraint fixes to Δ = −2V cos 3ψ; there the
        Hessian has the eigenvalues V b² cos α and −3V b² cos α, so these points are the saddles, all at
        the same height. The lowest point on the rim of a basin is a saddle, hence E_b.
        Checked against a numerical saddle search in tests/moire/test_potentials.py.
        """
        return float(6 * self.V * self.c_psi - 2 * self.V * np.cos(3 * self.psi_eff))

    def harmonic_warning(self, mass: float, ratio: float = 0.25) -> str | None:
        """A warning when ħω_M > ratio × barrier (the harmonic expansion is then marginal)."""
        if self.V == 0:
            return None
        w = self.hbar_omega_M(mass)
        if w > ratio * self.barrier:
            return (
                f"ħω_M = {w:.3g} meV is not small against the escape barrier between minima "
                f"({self.barrier:.3g} meV, the saddle of the minimum-energy path): the harmonic expansion is marginal"
            )
        return None

    # ---- full potential
    def _phases(self, r: np.ndarray) -> np.ndarray:
        return np.asarray(r, dtype=float) @ self.b.T + self.psi_eff  # (..., 3)

    def _full_value(self, r_abs: np.ndarray) -> np.ndarray:
        return 2 * self.V * np.cos(self._phases(r_abs)).sum(-1)

    def _to_nearest_minimum(self, r: np.ndarray) -> np.ndarray:
        """Displacement (..., 2) from the nearest moiré lattice point (r measured from r_min)."""
        r = np.asarray(r, dtype=float)
        frac = r @ np.linalg.inv(self.lattice)
        base = np.floor(frac)
        cand = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
        pts = (base[..., None, :] + cand) @ self.lattice  # (..., 4, 2)
        d = r[..., None, :] - pts
        i = np.argmin((d**2).sum(-1), axis=-1)
        return np.take_along_axis(d, i[..., None, None], axis=-2)[..., 0, :]

    def value(self, r: np.ndarray) -> np.ndarray:
        """Δ(r) (meV) at positions r (..., 2) nm measured from r_min -> (...)."""
        if self.harmonic_only:
            d = self._to_nearest_minimum(r)
            return -6 * self.V * self.c_psi + 0.5 * self.k_M * (d**2).sum(-1)
        return self._full_value(np.asarray(r, dtype=float) + self.r_min)

    def gradient(self, r: np.ndarray) -> np.ndarray:
        """∇Δ (meV/nm) at r (..., 2) -> (..., 2)."""
        if self.harmonic_only:
            return self.k_M * self._to_nearest_minimum(r)
        s = np.sin(self._phases(np.asarray(r, dtype=float) + self.r_min))
        return -2 * self.V * s @ self.b

    def hessian(self, r: np.ndarray) -> np.ndarray:
        """∂_α∂_βΔ (meV/nm²) at r (..., 2) -> (..., 2, 2); −2V Σ_j b_j b_jᵀ cos(b_j·r + ψ)."""
        r = np.asarray(r, dtype=float)
        if self.harmonic_only:
            return np.broadcast_to(self.k_M * np.eye(2), r.shape[:-1] + (2, 2)).copy()
        c = np.cos(self._phases(r + self.r_min))
        bb = self.b[:, :, None] * self.b[:, None, :]
        return -2 * self.V * np.einsum("...j,jab->...ab", c, bb)


# ---------------------------------------------------------------- pair interactions
@runtime_checkable
class PairInteraction(Protocol):
    """Isotropic pair interaction U(r) (contract: moire.md)."""

    name: str
    coulomb_tail: float

    def radial(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def fourier(self, q: np.ndarray) -> np.ndarray: ...


def force_constants(interaction: PairInteraction, d: np.ndarray, radial=None) -> np.ndarray:
    """Φ_αβ(R) = U″ R̂_αR̂_β + (U′/R)(δ_αβ − R̂_αR̂_β) (meV/nm²) for separations d (..., 2) ≠ 0.

    ``radial`` overrides ``interaction.radial`` (e.g. a short-range remainder). Returns (..., 2, 2).
    """
    d = np.asarray(d, dtype=float)
    r = np.linalg.norm(d, axis=-1)
    _, u1, u2 = (radial or interaction.radial)(r)
    rr = d[..., :, None] * d[..., None, :] / (r**2)[..., None, None]
    eye = np.eye(2)
    return u2[..., None, None] * rr + (u1 / r)[..., None, None] * (eye - rr)


@dataclass(frozen=True)
class Coulomb:
    """U = e²/(κr) (meV), κ the mean dielectric constant (ε_top + ε_bottom)/2."""

    kappa: float
    name: str = "coulomb"

    def __post_init__(self) -> None:
        if not self.kappa > 0:
            raise ValueError(f"kappa must be positive, got {self.kappa}")

    @property
    def coulomb_tail(self) -> float:
        return E2_MEV_NM / self.kappa

    def radial(self, r):
        r = np.asarray(r, dtype=float)
        u = self.coulomb_tail / r
        return u, -u / r, 2 * u / r**2

    def fourier(self, q):
        return 2 * np.pi * self.coulomb_tail / np.asarray(q, dtype=float)

    def short_range_cutoff(self, tol: float) -> float:
        return 0.0


#: x above which F = H0 − Y0 and its derivatives use the asymptotic series (Abramowitz & Stegun 12.1.31).
_KELDYSH_ASYMPTOTIC_X = 40.0
_N_ASYM = 16


def struve_minus_y0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F = H0 − Y0 and its first two derivatives at x > 0, robust for large x.

    x < 40: scipy.special (F′ = 2/π − H1 + Y1, F″ = −F + (H1 − Y1)/x). x ≥ 40: the asymptotic
    series F ~ (2/π) Σ_k (−1)^k ((2k−1)!!)² x^{−(2k+1)} (A&S 12.1.31) and its term-wise
    derivatives, which avoid the cancellations of H0 − Y0 and of 2/π − (H1 − Y1); 16 terms give
    < 1e-15 relative error at x ≥ 40.
    """
    x = np.asarray(x, dtype=float)
    f, f1, f2 = (np.empty_like(x) for _ in range(3))
    small = x < _KELDYSH_ASYMPTOTIC_X
    xs = x[small]
    fs = special.struve(0, xs) - special.y0(xs)
    gs = special.struve(1, xs) - special.y1(xs)
    f[small], f1[small], f2[small] = fs, 2 / np.pi - gs, -fs + gs / xs
    k = np.arange(_N_ASYM)
    dfact = np.concatenate([[1.0], np.cumprod(2 * k[1:] - 1.0)])  # (2k−1)!!
    c = (2 / np.pi) * (-1.0) ** k * dfact**2
    p = 2 * k + 1
    inv = 1 / x[~small][:, None]
    f[~small] = (c * inv**p).sum(-1)
    f1[~small] = (-p * c * inv ** (p + 1)).sum(-1)
    f2[~small] = (p * (p + 1) * c * inv ** (p + 2)).sum(-1)
    return f, f1, f2


@dataclass(frozen=True)
class Keldysh:
    """Rytova–Keldysh U = (πe²/2r₀)[H₀(x) − Y₀(x)], x = κr/r₀; U(q) = 2πe²/[q(κ + r₀q)] (spec §3).

    r₀ in nm (> 0). Tends to e²/(κr) for r ≫ r₀/κ.
    """

    kappa: float
    r0: float
    name: str = "keldysh"

    def __post_init__(self) -> None:
        if not self.kappa > 0:
            raise ValueError(f"kappa must be positive, got {self.kappa}")
        if not self.r0 > 0:
            raise ValueError(f"r0 must be positive, got {self.r0} (use coulomb for r0 = 0)")

    @property
    def coulomb_tail(self) -> float:
        return E2_MEV_NM / self.kappa

    def radial(self, r):
        r = np.asarray(r, dtype=float)
        f, f1, f2 = struve_minus_y0(self.kappa * r / self.r0)
        pref = np.pi * E2_MEV_NM / (2 * self.r0)
        s = self.kappa / self.r0
        return pref * f, pref * s * f1, pref * s**2 * f2

    def fourier(self, q):
        q = np.asarray(q, dtype=float)
        return 2 * np.pi * E2_MEV_NM / (q * (self.kappa + self.r0 * q))

    def short_range_cutoff(self, tol: float) -> float:
        """R_c where the remainder's force constants (∝ (r₀/κ)²/R⁵) fall below tol × Coulomb's:
        R_c = (r₀/κ)·tol^{-1/2} … taken as 4 (r₀/κ) tol^{-1/3} (documented; overridable)."""
        return 4 * (self.r0 / self.kappa) * tol ** (-1 / 3)


@dataclass(frozen=True)
class DualGate:
    """Charge midway between grounded gates at ±d_g: U(q) = (2πe²/κq)·tanh(q d_g) (spec §3).

    Real space: the Hankel transform of U(q), done with the partial fractions of tanh, is the
    Bessel-K₀ series U(r) = (2e²/κd_g) Σ_{k≥0} K₀((2k+1)π r / 2d_g) (equivalent to the
    alternating image-charge series Σ_m (−1)^m e²/(κ√(r² + (2m d_g)²))); it converges like
    e^{−πr/d_g} per term, so it is used with as many terms as r_min/d_g requires.
    """

    kappa: float
    d_g: float
    name: str = "dual-gate"
    coulomb_tail: float = 0.0
    tol: float = 1e-15

    def __post_init__(self) -> None:
        if not self.kappa > 0:
            raise ValueError(f"kappa must be positive, got {self.kappa}")
        if not self.d_g > 0:
            raise ValueError(f"gate distance d_g must be positive, got {self.d_g}")

    def radial(self, r):
        r = np.asarray(r, dtype=float)
        rmin = float(np.min(r)) if r.size else 1.0
        c = np.pi / (2 * self.d_g)
        n_terms = int(np.clip(np.ceil(np.log(1 / self.tol) / (2 * c * rmin)) + 1, 1, 20000))
        k = c * (2 * np.arange(n_terms) + 1)
        kr = r[..., None] * k
        k0 = special.k0(kr)
        k1 = special.k1(kr)
        pref = 2 * E2_MEV_NM / (self.kappa * self.d_g)
        u = pref * k0.sum(-1)
        u1 = -pref * (k * k1).sum(-1)
        u2 = pref * (k**2 * (k0 + k1 / kr)).sum(-1)
        return u, u1, u2

    def fourier(self, q):
        q = np.asarray(q, dtype=float)
        return 2 * np.pi * E2_MEV_NM / (self.kappa * q) * np.tanh(q * self.d_g)

    def short_range_cutoff(self, tol: float) -> float:
        """R_c with e^{−πR_c/2d_g} = tol: (2d_g/π) ln(1/tol)."""
        return 2 * self.d_g / np.pi * np.log(1 / tol)


def image_charge_series(kappa: float, d_g: float, r: np.ndarray, n_images: int = 200001) -> np.ndarray:
    """Slow reference: Σ_m (−1)^m e²/(κ√(r² + (2m d_g)²)) (meV), averaged over the last two partial
    sums to tame the alternation. For tests only."""
    r = np.asarray(r, dtype=float)
    m = np.arange(1, n_images)
    terms = (-1.0) ** m / np.sqrt(r[..., None] ** 2 + (2 * m * d_g) ** 2)
    partial = 1 / r[..., None] + 2 * np.cumsum(terms, axis=-1)
    return E2_MEV_NM / kappa * 0.5 * (partial[..., -1] + partial[..., -2])
