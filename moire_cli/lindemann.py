"""Lindemann melting of (pinned or free) 2D crystals from their phonon spectrum (spec §7).

Mean-square displacement of site κ, per site, from the harmonic phonons on a full Monkhorst–Pack mesh:

    ⟨u_κ²⟩(T) = (ħ²/2m) (1/N_q) Σ_{q,s} |e_κ,s(q)|² coth(ħω_s/2k_BT) / ħω_s,   |e_κ|² = Σ_α |e_{2κ+α}|²

(coth → 1 at T = 0). The Lindemann ratio is L(T) = √⟨u²⟩ / a (a = nearest-neighbour distance), the
largest over the sites; the melting temperature T_m solves L(T_m) = L_c (L rises monotonically with
T; bracketed root, vectorized over a sweep), and L(0) ≥ L_c means quantum melted (no crystal at any T).

Unpinned 2D crystals: ⟨u²⟩ diverges logarithmically at T > 0 (acoustic modes, ∫d²q/q²), so the
single-site ratio is meaningless there. The modified, relative ratio uses the nearest-neighbour bond
u_i − u_j instead (Bedanov, Gadiyak & Lozovik, Phys. Lett. A 109, 289 (1985)):

    ⟨|u_κ − u_κ′(R)|²⟩ = (ħ²/2m)(1/N_q) Σ_{q,s} Σ_α |e_κα,s − e_κ′α,s e^{iq·δ}|² coth(..)/ħω_s,

δ = R + τ_κ′ − τ_κ (phonopy phase convention), and we report γ = ⟨|u_i − u_j|²⟩/a² together with
the relative Lindemann ratio L_rel = √(γ/2), which equals L for uncorrelated neighbours so that the
same L_c applies. Which ratio is used is returned with every result (`criterion`).

Both are written as a *spectrum*: L²_c(T) = Σ_j W_cj coth(ω_j/2k_BT)/ω_j over channels c (sites or
bonds), all arrays vectorized over a leading batch (sweep) axis. Zero modes (|ħω| < zero_tol, the
acoustic modes at Γ of a free crystal) are dropped; a batch point with an imaginary mode
(ħω < −zero_tol) is unstable and gets NaN. For a free crystal the dropped Γ cell leaves an O(1/N)
error in the T = 0 single-site ⟨u²⟩ (∫d²q/q), which `melt_sweep.melt_sweep` removes by Richardson
extrapolation over the last two meshes (2D Wigner crystal at r_s = 37: L(0) = 0.2830, 0.2856,
0.2869 on 24², 48², 96² meshes; extrapolated 0.2882 from 24/48 and 0.2881 from 48/96).

The sweep driver over lattice models (relaxation, phonons on time-reversal-reduced meshes, mesh
refinement, criteria per point, T_m for all points at once) is :mod:`moire_cli.melt_sweep`.

Units: ħω meV, m in m₀, lengths nm, T K. Constants from `moire_cli.units`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moire_cli.units import HBAR2_OVER_M0_MEV_NM2, K_B_MEV_PER_K

SINGLE_SITE = "single-site"
RELATIVE = "relative"
CRITERIA = (SINGLE_SITE, RELATIVE)

#: Memory bound (float64 elements) of the (batch, modes, temperatures) work array.
_MAX_ELEMENTS = 20_000_000


# --------------------------------------------------------------------------------------------
# Einstein limit (closed forms, spec §7)
# --------------------------------------------------------------------------------------------
def einstein_lindemann_ratio(hbar_omega: np.ndarray, mass: float, a: float, temperatures: np.ndarray) -> np.ndarray:
    """L(T) of independent 2D oscillators: L² = L₀² coth(ħω/2k_BT), L₀² = ħ/(mωa²) (spec §7).

    Args:
        hbar_omega: ħω_M (meV, > 0), any shape S. mass: m/m₀. a: lattice constant (nm).
        temperatures: (N_T,) K (≥ 0).

    Returns:
        (*S, N_T) dimensionless.
    """
    w = np.asarray(hbar_omega, dtype=float)[..., None]
    l0sq = HBAR2_OVER_M0_MEV_NM2 / (mass * w * a * a)
    return np.sqrt(l0sq * _coth_half(w, np.asarray(temperatures, dtype=float)))


def einstein_melting_temperature(hbar_omega: np.ndarray, mass: float, a: float, lindemann_critical: float) -> np.ndarray:
    """T_m = ħω/[2k_B artanh(L₀²/L_c²)] when L₀ < L_c, NaN (quantum melted) otherwise (spec §7).

    Returns:
        T_m in K, shaped like hbar_omega.
    """
    w = np.asarray(hbar_omega, dtype=float)
    ratio = HBAR2_OVER_M0_MEV_NM2 / (mass * w * a * a) / lindemann_critical**2
    with np.errstate(invalid="ignore", divide="ignore"):
        tm = w / (2.0 * K_B_MEV_PER_K * np.arctanh(ratio))
    return np.where(ratio < 1.0, tm, np.nan)


def _coth_half(hbar_omega: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """coth(ħω/2k_BT) broadcast over (..., N_T): 1 + 2/(e^{ħω/k_BT} − 1), accurate for small and
    large arguments; T = 0 or ħω = +inf give exactly 1 (2/expm1(inf) = 0), with no overflow trap."""
    t = np.asarray(temperatures, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return 1.0 + 2.0 / np.expm1(hbar_omega / (K_B_MEV_PER_K * t))


# --------------------------------------------------------------------------------------------
# Neighbour bonds
# --------------------------------------------------------------------------------------------
def nearest_neighbour_bonds(cell: np.ndarray, basis: np.ndarray, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """All nearest-neighbour bonds from each site of the home cell.

    Args:
        cell: (2, 2) rows a1, a2 (nm). basis: (n, 2) Cartesian (nm).
        rtol: relative tolerance on the bond length.

    Returns:
        (kappa (P,), kappa_prime (P,), delta (P, 2) nm with δ = R + τ_κ′ − τ_κ, a (nm)).
    """
    from moire_cli.crystals import neighbour_vectors

    delta, a = neighbour_vectors(cell, basis)  # (κ, κ′, L, 2), searched far enough for any cell basis
    dist = np.linalg.norm(delta, axis=-1)
    k, kp, ll = np.nonzero((dist <= a * (1.0 + rtol)) & (dist > 0.5 * a))
    return k, kp, delta[k, kp, ll], a


# --------------------------------------------------------------------------------------------
# Spectra
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LindemannSpectrum:
    """L²_c(T) = Σ_j weights[..., c, j] · coth(ħω_j/2k_BT)/ħω_j, the Lindemann ratio squared per channel.

    Attributes:
        frequencies: (B..., J) ħω in meV; dropped zero modes are +inf (they contribute 0).
        weights: (B..., C, J) in meV (ħ²/2m · mode weight / (N_q a²)); channels are sites or bonds.
        criterion: "single-site" (⟨u²⟩/a²) or "relative" (⟨|u_i − u_j|²⟩/(2a²)).
        unstable: (B...,) bool, batch points with an imaginary mode (their L is NaN).
        n_zero_modes: (B...,) int, modes dropped as zero modes.
        a: nearest-neighbour distance (nm), scalar or (B...,).
    """

    frequencies: np.ndarray
    weights: np.ndarray
    criterion: str
    unstable: np.ndarray
    n_zero_modes: np.ndarray
    a: np.ndarray | float

    def lindemann_squared(self, temperatures: np.ndarray) -> np.ndarray:
        """L²_c(T): (B..., C, N_T). NaN for unstable batch points."""
        return lindemann_squared_shared([self], temperatures)[0]

    def lindemann_ratio(self, temperatures: np.ndarray) -> np.ndarray:
        """L(T) = √(max_c L²_c(T)): (B..., N_T)."""
        return np.sqrt(self.lindemann_squared(temperatures).max(axis=-2))

    def melting_temperature(self, lindemann_critical: float | np.ndarray, t_max: float = 1e5) -> MeltingResult:
        """T_m with L(T_m) = L_c for every batch point: a bracketed root, vectorized over the batch.

        T_hi doubles from 1 K until L(T_hi) ≥ L_c (at most `t_max`); then the Illinois variant of
        regula falsi (Dowell & Jarratt, BIT 11, 168 (1971)) keeps the bracket and converges
        superlinearly to |L − L_c| ≤ 1e-14 L_c. L(T) is monotone (each coth term rises with T).

        Args:
            lindemann_critical: L_c, scalar or (B...,).
            t_max: K; T_m above it is reported as +inf (crystal up to t_max).

        Returns:
            MeltingResult.
        """
        lc = np.broadcast_to(np.asarray(lindemann_critical, dtype=float), self.unstable.shape).ravel()
        l0 = self.lindemann_ratio(np.zeros(1))[..., 0].ravel()
        n_b = l0.size
        quantum = l0 >= lc
        unstable = np.asarray(self.unstable).ravel() | ~np.isfinite(l0)
        active = ~quantum & ~unstable

        def excess(t: np.ndarray, idx: np.ndarray) -> np.ndarray:
            return self._ratio_at(t, idx) - lc[idx]

        lo = np.zeros(n_b)
        hi = np.ones(n_b)
        never = np.zeros(n_b, dtype=bool)
        idx = np.flatnonzero(active)
        while idx.size:  # bracket: double T_hi (capped at t_max) while L(T_hi) < L_c
            below = excess(hi[idx], idx) < 0
            capped = below & (hi[idx] >= t_max)
            never[idx[capped]] = True
            grow = idx[below & ~capped]
            lo[grow] = hi[grow]
            hi[grow] = np.minimum(2.0 * hi[grow], t_max)
            idx = grow
        idx = np.flatnonzero(active & ~never)
        tm = np.full(n_b, np.nan)
        f_lo, f_hi = excess(lo[idx], idx), excess(hi[idx], idx)
        last = np.zeros(n_b, dtype=int)  # side replaced in the previous step (Illinois bookkeeping)
        for _ in range(200):  # Illinois (modified regula falsi), vectorized: superlinear, bracket kept
            if not idx.size:
                break
            x = (lo[idx] * f_hi - hi[idx] * f_lo) / (f_hi - f_lo)
            x = np.where(np.isfinite(x) & (x > lo[idx]) & (x < hi[idx]), x, 0.5 * (lo[idx] + hi[idx]))
            fx = excess(x, idx)
            left = fx < 0
            lo[idx] = np.where(left, x, lo[idx])
            hi[idx] = np.where(left, hi[idx], x)
            f_hi = np.where(left, np.where(last[idx] == 1, 0.5 * f_hi, f_hi), fx)
            f_lo = np.where(left, fx, np.where(last[idx] == -1, 0.5 * f_lo, f_lo))
            last[idx] = np.where(left, 1, -1)
            done = (np.abs(fx) <= 1e-14 * lc[idx]) | (hi[idx] - lo[idx] <= 1e-13 * hi[idx])
            tm[idx[done]] = x[done]
            idx, f_lo, f_hi = idx[~done], f_lo[~done], f_hi[~done]
        tm[idx] = 0.5 * (lo[idx] + hi[idx])
        tm[never] = np.inf
        shape = self.unstable.shape
        return MeltingResult(
            melting_temperature=tm.reshape(shape),
            lindemann_ratio_zero=l0.reshape(shape),
            quantum_melted=quantum.reshape(shape) & ~unstable.reshape(shape),
            unstable=unstable.reshape(shape),
            criterion=self.criterion,
        )

    def _ratio_at(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """L at one temperature per selected (flattened) batch point: (len(idx),)."""
        w = self.frequencies.reshape(-1, self.frequencies.shape[-1])[idx]
        wt = self.weights.reshape(-1, *self.weights.shape[-2:])[idx]
        factor = _coth_half(w, t[:, None]) / w  # (b, J)
        return np.sqrt(np.einsum("bcj,bj->bc", wt, factor).max(axis=-1))


def lindemann_squared_shared(spectra: Sequence[LindemannSpectrum], temperatures: np.ndarray) -> list[np.ndarray]:
    """L²_c(T) of several spectra over the same modes (e.g. single-site and relative), computing the
    thermal factor coth(ħω/2k_BT)/ħω once: one (B..., C_k, N_T) array per spectrum.

    Raises:
        ValueError: the spectra do not share their frequencies.
    """
    t = np.atleast_1d(np.asarray(temperatures, dtype=float))
    w = spectra[0].frequencies
    if any(s.frequencies is not w and not np.array_equal(s.frequencies, w) for s in spectra[1:]):
        raise ValueError("spectra must share their frequencies")
    batch = w.shape[:-1]
    n_b = int(np.prod(batch)) if batch else 1
    wf = w.reshape(n_b, w.shape[-1])
    wts = [s.weights.reshape(n_b, s.weights.shape[-2], s.weights.shape[-1]) for s in spectra]
    outs = [np.empty((n_b, wt.shape[1], t.size)) for wt in wts]
    step = max(1, _MAX_ELEMENTS // max(1, wf.shape[1] * t.size))
    for start in range(0, n_b, step):  # memory bound only: each block is one matmul per spectrum
        sl = slice(start, start + step)
        factor = _coth_half(wf[sl, :, None], t) / wf[sl, :, None]  # (b, J, N_T); inf modes -> 0
        for out, wt in zip(outs, wts, strict=True):
            out[sl] = wt[sl] @ factor
    unstable = np.asarray(spectra[0].unstable)[..., None, None]
    return [np.where(unstable, np.nan, out.reshape(*batch, out.shape[1], t.size)) for out in outs]


@dataclass(frozen=True)
class MeltingResult:
    """Per batch point: T_m (K; NaN if quantum melted or unstable, +inf if above t_max), L(0), flags."""

    melting_temperature: np.ndarray
    lindemann_ratio_zero: np.ndarray
    quantum_melted: np.ndarray
    unstable: np.ndarray
    criterion: str


def _split_modes(frequencies: np.ndarray, zero_tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequencies with zero modes → +inf, unstable (B...,), n_zero (B...,)); inputs (B..., N_q, 2n)."""
    w = np.asarray(frequencies, dtype=float)
    zero = np.abs(w) < zero_tol
    unstable = np.any(w <= -zero_tol, axis=(-2, -1))
    cleaned = np.where(zero | (w < 0), np.inf, w)
    return cleaned, unstable, zero.sum(axis=(-2, -1))


def single_site_spectrum(
    frequencies: np.ndarray,
    eigenvectors: np.ndarray,
    mass: float,
    a: float | np.ndarray,
    zero_tol: float = 1e-6,
    q_weights: np.ndarray | None = None,
) -> LindemannSpectrum:
    """Spectrum of the single-site ratio L²_κ = ⟨u_κ²⟩/a² (spec §7).

    Args:
        frequencies: (B..., N_q, 2n) ħω meV on a full Monkhorst–Pack mesh (negative = imaginary).
        eigenvectors: (B..., N_q, 2n, 2n), columns = modes, row index 2κ + α.
        mass: m/m₀ (scalar or (B...,)). a: nearest-neighbour distance nm (scalar or (B...,)).
        zero_tol: |ħω| below this (meV) is a zero mode, dropped.
        q_weights: (N_q,) multiplicity of each q (e.g. a q standing for itself and −q, which have
            the same spectrum and weights); None = all 1. The mesh average divides by their sum.

    Returns:
        LindemannSpectrum with channels = sites (n).
    """
    w, unstable, n_zero = _split_modes(frequencies, zero_tol)
    e = np.asarray(eigenvectors)
    n_q, dof = w.shape[-2], w.shape[-1]
    amp = np.abs(e) ** 2  # (B..., N_q, 2n, 2n): [.., q, 2κ+α, s]
    site = amp.reshape(*amp.shape[:-2], dof // 2, 2, dof).sum(axis=-2)  # (B..., N_q, n, 2n)
    site = np.moveaxis(site, -3, -2) * _q_multiplicity(q_weights, n_q)  # (B..., n, N_q, 2n)
    pref = _prefactor(mass, a, _q_total(q_weights, n_q), w.shape[:-2])
    weights = pref[..., None, None, None] * site
    batch = w.shape[:-2]
    return LindemannSpectrum(
        frequencies=w.reshape(*batch, n_q * dof),
        weights=weights.reshape(*batch, dof // 2, n_q * dof),
        criterion=SINGLE_SITE,
        unstable=np.asarray(unstable),
        n_zero_modes=np.asarray(n_zero),
        a=a,
    )


def relative_spectrum(
    frequencies: np.ndarray,
    eigenvectors: np.ndarray,
    q: np.ndarray,
    bonds: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    mass: float,
    zero_tol: float = 1e-6,
    q_weights: np.ndarray | None = None,
) -> LindemannSpectrum:
    """Spectrum of the relative ratio L²_rel = ⟨|u_κ − u_κ′(R)|²⟩/(2a²) per nearest-neighbour bond.

    Args:
        frequencies, eigenvectors: as in `single_site_spectrum`.
        q: (N_q, 2) Cartesian 1/nm (with 2π), the mesh the frequencies were computed on.
        bonds: `nearest_neighbour_bonds(cell, basis)`.
        mass: m/m₀.
        q_weights: as in `single_site_spectrum` (|e_κ − e_κ′e^{iq·δ}|² is the same at q and −q).

    Returns:
        LindemannSpectrum with channels = bonds (P). γ = ⟨|u_i − u_j|²⟩/a² = 2 L²_rel.
    """
    kappa, kappa_p, delta, a = bonds
    w, unstable, n_zero = _split_modes(frequencies, zero_tol)
    e = np.asarray(eigenvectors)
    n_q, dof = w.shape[-2], w.shape[-1]
    phase = np.exp(1j * np.asarray(q) @ np.asarray(delta).T)  # (N_q, P)
    rows_k = 2 * kappa[:, None] + np.arange(2)  # (P, 2)
    rows_kp = 2 * kappa_p[:, None] + np.arange(2)
    ek = e[..., rows_k, :]  # (B..., N_q, P, 2, 2n)
    ekp = e[..., rows_kp, :]
    diff = ek - ekp * phase[:, :, None, None]
    bond = (np.abs(diff) ** 2).sum(axis=-2)  # (B..., N_q, P, 2n)
    bond = np.moveaxis(bond, -3, -2) * _q_multiplicity(q_weights, n_q)  # (B..., P, N_q, 2n)
    pref = _prefactor(mass, a, _q_total(q_weights, n_q), w.shape[:-2]) / 2.0
    batch = w.shape[:-2]
    weights = pref[..., None, None, None] * bond
    return LindemannSpectrum(
        frequencies=w.reshape(*batch, n_q * dof),
        weights=weights.reshape(*batch, len(kappa), n_q * dof),
        criterion=RELATIVE,
        unstable=np.asarray(unstable),
        n_zero_modes=np.asarray(n_zero),
        a=a,
    )


def _q_multiplicity(q_weights: np.ndarray | None, n_q: int) -> np.ndarray | float:
    """(N_q, 1) multiplicities broadcasting against (…, N_q, 2n), or 1."""
    if q_weights is None:
        return 1.0
    qw = np.asarray(q_weights, dtype=float)
    if qw.shape != (n_q,) or np.any(qw < 0):
        raise ValueError(f"q_weights must be {n_q} non-negative numbers")
    return qw[:, None]


def _q_total(q_weights: np.ndarray | None, n_q: int) -> float:
    return float(n_q if q_weights is None else np.sum(q_weights))


def _prefactor(mass: float | np.ndarray, a: float | np.ndarray, n_q: float, batch: tuple[int, ...]) -> np.ndarray:
    """ħ²/(2m N_q a²) in meV (ħω-weighted), broadcast to the batch shape."""
    m = np.broadcast_to(np.asarray(mass, dtype=float), batch)
    aa = np.broadcast_to(np.asarray(a, dtype=float), batch)
    return HBAR2_OVER_M0_MEV_NM2 / (2.0 * m * n_q * aa * aa)


def mean_square_displacement(
    frequencies: np.ndarray, eigenvectors: np.ndarray, mass: float, temperatures: np.ndarray, zero_tol: float = 1e-6
) -> np.ndarray:
    """⟨u_κ²⟩(T) per site (spec §7): (B..., n, N_T) in nm² (NaN where unstable).

    Inputs as in `single_site_spectrum`; temperatures (N_T,) K.
    """
    spec = single_site_spectrum(frequencies, eigenvectors, mass, 1.0, zero_tol)
    return spec.lindemann_squared(temperatures)


def classical_mean_square_displacement(dynamical_matrices: np.ndarray, mass: float, temperature: float) -> np.ndarray:
    """High-T limit ⟨u_κ²⟩ = (k_BT/m) ⟨tr_κ D⁻¹(q)⟩_q per site (nm²), from ħ²D (B..., N_q, 2n, 2n) meV².

    With ħ²D stored: k_BT (ħ²/m) tr_κ[(ħ²D)⁻¹] (the κ-th 2×2 diagonal block).
    """
    inv = np.linalg.inv(np.asarray(dynamical_matrices))
    diag = np.real(np.diagonal(inv, axis1=-2, axis2=-1))  # (B..., N_q, 2n)
    site = diag.reshape(*diag.shape[:-1], -1, 2).sum(axis=-1).mean(axis=-2)  # (B..., n)
    return K_B_MEV_PER_K * temperature * HBAR2_OVER_M0_MEV_NM2 / mass * site


def stack_spectra(spectra: Sequence[LindemannSpectrum]) -> LindemannSpectrum:
    """Stack unbatched spectra (same number of modes J) into a batch; channels padded with zeros.

    Raises:
        ValueError: empty input, mixed criteria or different J.
    """
    if not spectra:
        raise ValueError("no spectra to stack")
    crit = {s.criterion for s in spectra}
    modes = {s.frequencies.shape[-1] for s in spectra}
    if len(crit) != 1 or len(modes) != 1:
        raise ValueError("spectra to stack must share the criterion and the number of modes")
    n_c = max(s.weights.shape[-2] for s in spectra)
    weights = np.zeros((len(spectra), n_c, modes.pop()))
    for i, s in enumerate(spectra):
        weights[i, : s.weights.shape[-2]] = s.weights
    return LindemannSpectrum(
        frequencies=np.stack([s.frequencies for s in spectra]),
        weights=weights,
        criterion=crit.pop(),
        unstable=np.array([bool(s.unstable) for s in spectra]),
        n_zero_modes=np.array([int(s.n_zero_modes) for s in spectra]),
        a=np.array([float(s.a) for s in spectra]),
    )
