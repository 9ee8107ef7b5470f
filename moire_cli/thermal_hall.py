"""Phonon thermal Hall conductivity κ_xy(T) from the Berry curvature of the field-dressed modes (spec §11).

Per layer (a 2D sheet), with the energy-magnetisation correction included (Qin, Zhou & Shi, PRB 86,
104305 (2012), Eq. 28 in 2D; the symplectic Berry curvature of Zhang, Ren, Wang & Li, PRL 105, 225901
(2010); the same weight as for magnons, Matsumoto & Murakami, PRL 106, 197202 (2011)):

    κ_xy = −(k_B² T/ħ) ∫_BZ d²k/(2π)² Σ_σ c₂(n_B(ω_σ(k))) Ω_σ(k),
    c₂(x) = (1 + x) [ln((1 + x)/x)]² − (ln x)² − 2 Li₂(−x) = ∫₀ˣ ln²(1 + 1/t) dt,

summed over the 2n physical (positive-Krein-norm) bands. On the Fukui–Hatsugai–Suzuki mesh of
:func:`berry_curvature_mesh` each plaquette carries the Berry phase F = Ω·(plaquette area), so the
integral is Σ_plaquettes Σ_σ c₂ F / (2π)², with ω_σ the mean of the plaquette's four corners.
Limits of the weight: c₂(x) ≈ x (ln²x − 2 ln x + 2) for x → 0 (κ_xy → 0 exponentially as T → 0);
c₂(x) → π²/3 − 1/x for x → ∞, so at high T κ_xy → −(k_B²T/ħ)(π²/3)(Σ_σ C_σ)/2π + (k_B/ħ) Σ ħωF/4π²
(the Chern numbers of a phonon spectrum sum to 0: κ_xy tends to a T-independent constant).
κ_xy is odd in B and vanishes at B = 0 (time reversal: Ω(−k) = −Ω(k)) whatever the inversion breaking.
Units: κ_xy in W/K per layer and in units of k_B²T/ħ (dimensionless).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from moire_cli.units import K_B_MEV_PER_K, KB2_OVER_HBAR_W_PER_K2

#: Below this Bose factor c₂ uses its series (the closed form cancels to ~eps/x there).
_SERIES_BELOW = 1e-4


def c2_weight(x: np.ndarray) -> np.ndarray:
    """The thermal Hall weight c₂(x) (dimensionless) of Bose occupations x ≥ 0, any shape.

    Closed form with Li₂(−x) = ``scipy.special.spence(1 + x)``; for x < 1e-4 the series
    x(L² − 2L + 2) − x²(L − ½) + x³(L + ⅔)/3, L = ln x (relative error < 1e-12). c₂(0) = 0, c₂(∞) = π²/3.

    Raises:
        ValueError: negative or NaN occupations.
    """
    x = np.asarray(x, dtype=float)
    if np.any(~(x >= 0)):
        raise ValueError("c2 weight needs Bose occupations x ≥ 0")
    out = np.empty_like(x)
    small = x < _SERIES_BELOW
    xs = x[small]
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.log(xs)
        xc = np.where(xs > 1e-100, xs, 0.0)  # corrections vanish; avoid denormal arithmetic
        ser = xs * ((ls - 1) ** 2 + 1 - xc * (ls - 0.5) + xc**2 * (ls + 2.0 / 3.0) / 3)
    out[small] = np.where(xs > 0, ser, 0.0)
    xb = x[~small]
    inf = np.isinf(xb)
    xf = np.where(inf, 1.0, xb)
    lb = np.log(xf)
    val = (1 + xf) * np.log1p(1 / xf) ** 2 - lb**2 - 2 * special.spence(1 + xf)
    out[~small] = np.where(inf, np.pi**2 / 3, val)
    return out


def bose_occupation(frequencies_meV: np.ndarray, temperature_K: np.ndarray) -> np.ndarray:
    """n_B = 1/(e^{ħω/k_BT} − 1), broadcasting ``temperature_K`` (N_T,) against ħω (...): (N_T, ...).

    T = 0 gives 0 (ħω/k_BT is capped at 700, n_B ≈ 1e-304). Raises ValueError for ħω ≤ 0 or T < 0.
    """
    w = np.asarray(frequencies_meV, dtype=float)
    t = np.atleast_1d(np.asarray(temperature_K, dtype=float))
    if np.any(~(w > 0)):
        raise ValueError("Bose occupations need positive mode energies")
    if np.any(~(t >= 0)):
        raise ValueError("temperatures must be ≥ 0 K")
    beta = np.where(t > 0, 1 / (K_B_MEV_PER_K * np.where(t > 0, t, 1.0)), np.inf)
    x = np.minimum(beta.reshape((-1,) + (1,) * w.ndim) * w, 700.0)  # n_B < 1e-304 there: no overflow
    return np.where(t.reshape((-1,) + (1,) * w.ndim) > 0, 1 / np.expm1(x), 0.0)


@dataclass(frozen=True)
class ThermalHall:
    """κ_xy(T) of one crystal.

    Attributes:
        temperatures_K: (N_T,).
        kappa_xy_kB2T_per_hbar: (N_T,) dimensionless κ_xy/(k_B²T/ħ).
        kappa_xy_W_per_K: (N_T,) per layer.
        per_band_kB2T_per_hbar: (N_T, 2n) the band-resolved contributions (sum = the total).
        chern_sum: Σ_σ C_σ on the mesh (Σ F/2π over every band; 0 up to round-off for phonons).
        omega_c: ħω_c in meV used; mesh: (N1, N2).
    """

    temperatures_K: np.ndarray
    kappa_xy_kB2T_per_hbar: np.ndarray
    kappa_xy_W_per_K: np.ndarray
    per_band_kB2T_per_hbar: np.ndarray
    chern_sum: float
    omega_c: float
    mesh: tuple[int, int]

    def summary(self) -> dict:
        """JSON-ready digest: the largest |κ_xy| and where, the mesh, the Chern sum."""
        i = int(np.argmax(np.abs(self.kappa_xy_W_per_K)))
        return {
            "hbar_omega_c_meV": self.omega_c,
            "mesh": list(self.mesh),
            "temperature_range_K": [float(self.temperatures_K.min()), float(self.temperatures_K.max())],
            "max_abs_kappa_xy_W_per_K": float(abs(self.kappa_xy_W_per_K[i])),
            "at_temperature_K": float(self.temperatures_K[i]),
            "kappa_xy_W_per_K_at_max": float(self.kappa_xy_W_per_K[i]),
            "chern_sum": self.chern_sum,
        }


def plaquette_frequencies(frequencies: np.ndarray, order: np.ndarray, mesh: tuple[int, int]) -> np.ndarray:
    """Mean ħω of the four corners of each FHS plaquette: (N1·N2, 2n) in input order → (N1, N2, 2n)."""
    n1, n2 = mesh
    f = np.asarray(frequencies)[order].reshape(n1, n2, -1)
    return 0.25 * (f + np.roll(f, -1, 0) + np.roll(f, -1, 1) + np.roll(np.roll(f, -1, 0), -1, 1))


def thermal_hall_conductivity(
    plaquette_frequencies_meV: np.ndarray,
    berry_curvature_nm2: np.ndarray,
    reciprocal: np.ndarray,
    temperatures_K: np.ndarray,
    *,
    omega_c: float = 0.0,
) -> ThermalHall:
    """κ_xy(T) from a full FHS mesh of Berry curvatures (Qin, Zhou & Shi 2012; vectorised over T, k, σ).

    Args:
        plaquette_frequencies_meV: (N1, N2, 2n) ħω per plaquette (:func:`plaquette_frequencies`).
        berry_curvature_nm2: (N1, N2, 2n) Ω per plaquette and band (``BerryCurvatureMesh.berry_curvature``).
        reciprocal: (2, 2) rows b1, b2 (1/nm with 2π).
        temperatures_K: (N_T,) ≥ 0.
        omega_c: ħω_c in meV (recorded only).

    Returns:
        :class:`ThermalHall`.

    Raises:
        ValueError: shapes disagree; a Berry curvature is undefined (NaN: unstable mode or a mesh too
        coarse to resolve it — refine the mesh); a mode energy ≤ 0 (negative-energy modes have no
        Bose weight).
    """
    f = np.asarray(plaquette_frequencies_meV, dtype=float)
    om = np.asarray(berry_curvature_nm2, dtype=float)
    if f.shape != om.shape or f.ndim != 3:
        raise ValueError(f"frequencies {f.shape} and Berry curvature {om.shape} must both be (N1, N2, 2n)")
    if np.isnan(om).any():
        raise ValueError(
            f"Berry curvature undefined on {int(np.isnan(om).sum())} plaquette(s) (unstable modes or a mesh too "
            "coarse to resolve it): κ_xy is not computed; refine mesh.size"
        )
    if np.any(~(f > 0)):
        raise ValueError("κ_xy needs every mode energy > 0 on the mesh (unstable or negative-energy modes found)")
    n1, n2, _ = f.shape
    b = np.asarray(reciprocal, dtype=float)
    area = abs(float(b[0, 0] * b[1, 1] - b[0, 1] * b[1, 0])) / (n1 * n2)
    phase = (om * area).reshape(n1 * n2, -1)  # Berry phase per plaquette and band
    t = np.atleast_1d(np.asarray(temperatures_K, dtype=float))
    weight = c2_weight(bose_occupation(f.reshape(n1 * n2, -1), t))  # (N_T, P, 2n)
    per_band = -np.einsum("tps,ps->ts", weight, phase) / (2 * np.pi) ** 2
    per_band = np.where(np.abs(per_band) < 1e-300, 0.0, per_band)  # no −0 or denormal noise at T → 0
    total = per_band.sum(axis=1) + 0.0
    return ThermalHall(
        t,
        total,
        KB2_OVER_HBAR_W_PER_K2 * t * total,
        per_band,
        float(phase.sum() / (2 * np.pi)),
        float(omega_c),
        (n1, n2),
    )


def thermal_hall_from_modes(modes, berry, reciprocal: np.ndarray, temperatures_K: np.ndarray) -> ThermalHall:
    """κ_xy(T) from :func:`gyroscopic_modes` on a mesh and its :class:`BerryCurvatureMesh` (same q order)."""
    pf = plaquette_frequencies(modes.frequencies, berry.order, berry.mesh)
    return thermal_hall_conductivity(pf, berry.berry_curvature, reciprocal, temperatures_K, omega_c=modes.omega_c)
