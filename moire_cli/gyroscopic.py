"""Phonon modes in a perpendicular magnetic field: the gyroscopic (Lorentz-force) problem (spec §6).

Pure functions on arrays, vectorized over q (no Python loop over q-points). Conventions (shared by
:mod:`moire_cli.chirality` and :mod:`moire_cli.topology`):

* ``D`` is ħ²D in meV², shape (N_q, 2n, 2n), phonopy's phase convention e^{iq·(R_l + τ_κ′ − τ_κ)};
  degrees of freedom ordered 2κ + α (site κ, α ∈ {x, y}); q Cartesian in 1/nm including 2π.
* Equation of motion for carriers of charge q_c = s·e (s = −1 electrons, +1 holes) in B = B ẑ:
  ü = −D u + ω_c J u̇, ω_c = −s·eB/m (ω_c > 0 for electrons), J = [[0, −1], [1, 0]] per site.
  With u ∝ e^{−iωt}: (D − ω² + ω G) u = 0, G = iω_c J (Hermitian). Energies ħω, ħω_c in meV.
* Phase space x = (u, p), p = u̇ − (ω_c/2) J u, Hamiltonian form H x = ω K x with the symplectic
  metric K = iΣ. For two solutions, x_a†K x_b = u_a†[(ω_a + ω_b) − G] u_b. Physical modes have
  x†Kx > 0 (Krein signature); they are normalised to x†Kx = 1, i.e. u†(2ω − G)u = 1 (u in meV^-½).
  At B = 0 this is u = ε/√(2ω) with the usual unit polarization vector ε.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moire_cli.units import HBAR_OMEGA_C_MEV_PER_T

#: Default relative tolerance (fraction of the largest |ħω|) below which an imaginary part is noise
#: and two frequencies count as degenerate.
DEGENERACY_RTOL = 1e-6

_J = np.array([[0.0, -1.0], [1.0, 0.0]])


def cyclotron_energy(field_T: float, mass: float, charge_sign: int = -1) -> float:
    """Signed cyclotron energy ħω_c in meV for a carrier of charge ``charge_sign``·e.

    ħω_c = −s · (ħe/m₀) B / (m/m₀): positive for electrons (s = −1) in B > 0, negative for holes.

    Args:
        field_T: perpendicular field B in tesla (either sign).
        mass: carrier mass in m₀ (> 0).
        charge_sign: −1 (electrons) or +1 (holes).

    Raises:
        ValueError: mass ≤ 0 or charge_sign not ±1.
    """
    if not mass > 0:
        raise ValueError(f"mass must be positive, got {mass}")
    if charge_sign not in (-1, 1):
        raise ValueError(f"charge_sign must be -1 (electrons) or +1 (holes), got {charge_sign}")
    return -float(charge_sign) * HBAR_OMEGA_C_MEV_PER_T * float(field_T) / float(mass) + 0.0  # no −0


def gyroscopic_term(n_dof: int, omega_c: float) -> np.ndarray:
    """G = iω_c J ⊗ 1_sites, the (n_dof, n_dof) Hermitian gyroscopic matrix in meV (DOF order 2κ + α)."""
    if n_dof % 2:
        raise ValueError(f"n_dof must be even (x, y per site), got {n_dof}")
    return 1j * omega_c * np.kron(np.eye(n_dof // 2), _J)


@dataclass(frozen=True)
class GyroscopicModes:
    """Physical (positive-Krein-signature) phonon modes at N_q wave vectors.

    Attributes:
        frequencies: (N_q, 2n) ħω in meV, ascending per q. An unstable mode (complex ω) is reported as
            −|ω| (at B = 0 this is phonopy's −√|λ|); see ``growth_rates``. Under B a *real* negative
            frequency with positive symplectic norm is a negative-energy mode (dynamically stable,
            e.g. the magnetron mode of a field-stabilised repulsive trap); ``real`` tells them apart.
        displacements: (N_q, 2n, 2n) complex, column s is u_s. Stable modes: u†(2ω − G)u = 1 (meV^-½);
            modes that cannot be normalised (unstable or ω ≈ 0) have unit 2-norm.
        normalized: (N_q, 2n) bool, True where u carries the symplectic normalisation (ω real, ≠ 0).
        growth_rates: (N_q, 2n) Im ω ≥ 0 in meV (0 for real modes).
        omega_c: signed ħω_c in meV used.
        real_tol: absolute tolerance (meV) used to decide that ω is real.
    """

    frequencies: np.ndarray
    displacements: np.ndarray
    normalized: np.ndarray
    growth_rates: np.ndarray
    omega_c: float
    real_tol: float

    @property
    def polarizations(self) -> np.ndarray:
        """(N_q, 2n, 2n) unit polarization vectors ε_s = u_s/|u_s| (columns)."""
        u = self.displacements
        return u / np.linalg.norm(u, axis=-2, keepdims=True)

    @property
    def real(self) -> np.ndarray:
        """(N_q, 2n) bool: ω real within ``real_tol`` (stable mode)."""
        return self.growth_rates <= self.real_tol


def gyroscopic_modes(
    dynamical_matrix: np.ndarray, omega_c: float = 0.0, *, rtol: float = DEGENERACY_RTOL
) -> GyroscopicModes:
    """Phonon modes under a perpendicular magnetic field, all q at once.

    Solves ω [u; v] = [[0, 1], [D, G]] [u; v] (the companion linearisation of (D − ω² + ωG)u = 0,
    spec §6) with batched ``numpy.linalg.eig``; of the 4n eigenvalues keeps the 2n physical ones:
    real ω with positive symplectic norm u†(2ω − G)u, plus, for each complex-conjugate pair
    (unstable mode), the growing member (Im ω > 0). At ω_c = 0 it reduces to batched ``eigh`` of D.

    Args:
        dynamical_matrix: (N_q, 2n, 2n) Hermitian ħ²D in meV².
        omega_c: signed ħω_c in meV (see :func:`cyclotron_energy`).
        rtol: relative tolerance (of the largest |ħω|) for "Im ω = 0".

    Returns:
        :class:`GyroscopicModes`.

    Raises:
        ValueError: wrong shape.
    """
    d = np.asarray(dynamical_matrix)
    if d.ndim != 3 or d.shape[1] != d.shape[2] or d.shape[1] % 2:
        raise ValueError(f"dynamical_matrix must have shape (N_q, 2n, 2n), got {d.shape}")
    n_q, m, _ = d.shape
    d = 0.5 * (d + np.conj(np.swapaxes(d, -1, -2)))
    gmat = gyroscopic_term(m, omega_c)
    if omega_c == 0.0:
        lam, eps = np.linalg.eigh(d)
        w = np.sign(lam) * np.sqrt(np.abs(lam))
        tol = rtol * max(float(np.max(np.abs(w), initial=0.0)), 1e-300)
        growth = np.where(w < -tol, -w, 0.0)
        ok = w > tol
        u = eps / np.sqrt(np.where(ok, 2.0 * w, 1.0))[:, None, :]
        return GyroscopicModes(w, _fix_phase(u), ok, growth, 0.0, tol)

    # Balance the companion matrix: v' = v/s with s a typical frequency.
    s = max(np.sqrt(float(np.max(np.abs(np.linalg.eigvalsh(d))))), abs(omega_c), 1e-300)
    a = np.zeros((n_q, 2 * m, 2 * m), dtype=complex)
    a[:, :m, m:] = s * np.eye(m)
    a[:, m:, :m] = d / s
    a[:, m:, m:] = gmat
    w, vec = np.linalg.eig(a)
    u = vec[:, :m, :]  # (N_q, m, 2m) displacement parts
    tol = rtol * max(float(np.max(np.abs(w))), 1e-300)
    is_real = np.abs(w.imag) <= tol
    wr = np.where(is_real, w.real, w)
    norm = np.real(np.einsum("qis,qis->qs", u.conj(), 2.0 * wr[:, None, :] * u - gmat @ u))
    unorm2 = np.sum(np.abs(u) ** 2, axis=1)
    signature = norm / np.maximum(np.abs(norm), 1e-300 * unorm2 + 1e-300)
    key = np.where(is_real, 1.0 + signature, np.where(w.imag > 0, 1.0, -1.0))
    pick = np.argsort(-key, axis=1, kind="stable")[:, :m]
    w_p = np.take_along_axis(w, pick, axis=1)
    u_p = np.take_along_axis(u, pick[:, None, :], axis=2)
    real_p = np.take_along_axis(is_real, pick, axis=1)
    norm_p = np.take_along_axis(norm, pick, axis=1)
    freq = np.where(real_p, w_p.real, -np.abs(w_p))
    growth = np.where(real_p, 0.0, np.abs(w_p.imag))
    ok = real_p & (np.abs(freq) > tol) & (norm_p > 0)
    scale = np.where(ok, np.sqrt(np.where(ok, norm_p, 1.0)), np.linalg.norm(u_p, axis=1))
    u_p = u_p / scale[:, None, :]
    order = np.argsort(freq, axis=1, kind="stable")
    return GyroscopicModes(
        np.take_along_axis(freq, order, axis=1),
        _fix_phase(np.take_along_axis(u_p, order[:, None, :], axis=2)),
        np.take_along_axis(ok, order, axis=1),
        np.take_along_axis(growth, order, axis=1),
        float(omega_c),
        tol,
    )


def _fix_phase(u: np.ndarray) -> np.ndarray:
    """Make each column's largest component real and positive (a reproducible gauge)."""
    idx = np.argmax(np.abs(u), axis=-2)[..., None, :]
    big = np.take_along_axis(u, idx, axis=-2)
    return u * (np.abs(big) / np.where(big == 0, 1.0, big))


def gyroscopic_stability(modes: GyroscopicModes) -> dict:
    """Stability under B judged from the quadratic problem itself (spec §6): stable iff every ω is real.

    D ≥ 0 is sufficient, not necessary: a field can stabilise a repulsive trap (Penning-like), whose
    magnetron mode then has a real negative frequency (negative energy), counted separately.

    Returns:
        dict(stable, min_frequency_meV, index (q, mode) of the minimum, unstable_modes (count of
        complex ω), negative_energy_modes, max_growth_rate_meV).
    """
    f = modes.frequencies
    bad = ~modes.real
    flat = int(np.argmin(f))
    return {
        "stable": bool(not bad.any()),
        "min_frequency_meV": float(f.flat[flat]),
        "index": [int(i) for i in np.unravel_index(flat, f.shape)],
        "unstable_modes": int(bad.sum()),
        "negative_energy_modes": int((modes.real & (f < -modes.real_tol)).sum()),
        "max_growth_rate_meV": float(np.max(modes.growth_rates, initial=0.0)),
    }


def degenerate_groups(frequencies: np.ndarray, tol: float) -> np.ndarray:
    """Label contiguous runs of (nearly) degenerate modes: (..., 2n) frequencies → (..., 2n) int labels.

    Bands s and s+1 share a label where ω_{s+1} − ω_s ≤ tol (meV); labels start at 0 for each point.
    """
    f = np.asarray(frequencies)
    cuts = np.diff(f, axis=-1) > tol
    zero = np.zeros(f.shape[:-1] + (1,), dtype=int)
    return np.concatenate([zero, np.cumsum(cuts, axis=-1)], axis=-1)


def krein_overlap(u_a, w_a, u_b, w_b, gmat) -> np.ndarray:
    """Symplectic overlaps M_st = x_s(a)†K x_t(b) = u_s(a)†[(ω_s(a) + ω_t(b)) − G] u_t(b).

    u_a, u_b: (..., 2n, 2n) displacement columns; w_a, w_b: (..., 2n) ħω in meV; gmat: (2n, 2n)
    :func:`gyroscopic_term`. Returns (..., 2n, 2n) complex (the Krein Gram matrix for a = b).
    """
    ua_h = np.conj(np.swapaxes(u_a, -1, -2))
    return (w_a[..., :, None] + w_b[..., None, :]) * (ua_h @ u_b) - ua_h @ (gmat @ u_b)
