"""Chiral phonons: gyroscopic modes in a magnetic field, angular momentum, magnetic moment,
Berry curvature and Chern numbers (spec §6).

Pure functions on arrays, vectorized over q (no Python loop over q-points; the only loops run
over the 2n bands). Conventions (see the moire contract):

* ``D`` is ħ²D in meV², shape (N_q, 2n, 2n), phonopy's phase convention e^{iq·(R_l + τ_κ′ − τ_κ)};
  degrees of freedom ordered 2κ + α (site κ, α ∈ {x, y}); q Cartesian in 1/nm including 2π.
* Equation of motion for carriers of charge q_c = s·e (s = −1 electrons, +1 holes) in B = B ẑ:
  ü = −D u + ω_c J u̇, ω_c = −s·eB/m (ω_c > 0 for electrons), J = [[0, −1], [1, 0]] per site.
  With u ∝ e^{−iωt}: (D − ω² + ω G) u = 0, G = iω_c J (Hermitian). Energies ħω, ħω_c in meV.
* Phase space x = (u, p), p = u̇ − (ω_c/2) J u, Hamiltonian form H x = ω K x with the symplectic
  metric K = iΣ. For two solutions, x_a†K x_b = u_a†[(ω_a + ω_b) − G] u_b. Physical modes have
  x†Kx > 0 (Krein signature); they are normalised to x†Kx = 1, i.e. u†(2ω − G)u = 1 (u in meV^-½).
  At B = 0 this is u = ε/√(2ω) with the usual unit polarization vector ε.
* Berry connection A = i x†K∇_q x, curvature Ω = ∂_x A_y − ∂_y A_x in nm² (symplectic definition:
  Zhang, Ren, Wang, Li, PRL 105, 225901 (2010); Qin, Zhou, Shi, PRB 86, 104305 (2012)); the Chern
  number of a band group is C = (1/2π)∫_BZ Ω d²q.

Sources: Zhang & Niu, PRL 112, 085503 (2014) (phonon angular momentum); Fukui, Hatsugai &
Suzuki, J. Phys. Soc. Jpn. 74, 1674 (2005) (lattice Chern numbers); Vanderbilt, *Berry Phases in
Electronic Structure Theory* (2018), §3.6 and §4.2 (periodic gauge with intracell positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moire_cli.units import HBAR_OMEGA_C_MEV_PER_T, K_B_MEV_PER_K

#: Default relative tolerance (fraction of the largest |ħω|) below which an imaginary part is noise
#: and two frequencies count as degenerate.
DEGENERACY_RTOL = 1e-6
#: Default relative gap (fraction of the largest ħω) that a band group needs on the mesh before a
#: Chern number is reported for it.
GAP_RTOL = 1e-4
#: A plaquette Berry phase above this (radians) means the mesh does not resolve the curvature.
PHASE_LIMIT = 0.5 * np.pi

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


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    """z component of the 2D cross product a × b."""
    return float(a[0] * b[1] - a[1] * b[0])


def _spin_operator(n_dof: int) -> np.ndarray:
    """iJ ⊗ 1_sites: ε†(iJ)ε = Σ_κ 2 Im(ε*_κx ε_κy) (Zhang–Niu), the per-site rotation generator."""
    return 1j * np.kron(np.eye(n_dof // 2), _J)


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


def _krein_overlap(u_a, w_a, u_b, w_b, gmat) -> np.ndarray:
    """M_st = x_s(a)†K x_t(b) = u_s(a)†[(ω_s(a) + ω_t(b)) − G] u_t(b); shapes (..., 2n, 2n)."""
    ua_h = np.conj(np.swapaxes(u_a, -1, -2))
    return (w_a[..., :, None] + w_b[..., None, :]) * (ua_h @ u_b) - ua_h @ (gmat @ u_b)


def angular_momentum(
    modes: GyroscopicModes, *, rtol: float = DEGENERACY_RTOL
) -> tuple[np.ndarray, np.ndarray]:
    """Phonon angular momentum l_z per mode, in units of ħ (spec §6).

    B = 0: Zhang–Niu l_z = Σ_κ 2 Im(ε*_κx ε_κy) (PRL 112, 085503, eq. 4) for unit ε.
    B ≠ 0: the kinetic form, ⟨Σ_κ m (u_κ × u̇_κ)_z⟩ per phonon = ħω L/E for a classical mode:
    l_z = 2ω u†(iJ)u with u†(2ω − G)u = 1 (it reduces to Zhang–Niu at B = 0 and gives the exact
    zero-point ⟨L_kin⟩ = ħω_c/2√(ω_M² + ω_c²/4) of the Fock–Darwin oscillator).
    Inside a degenerate subspace (|Δω| ≤ rtol·max|ω|) the per-mode value is gauge dependent: every
    member gets the subspace-invariant mean tr(N⁻¹L)/k (N, L the Krein Gram and l matrices of the
    subspace) and is flagged. Unstable or zero modes get the Zhang–Niu value of their ε.

    Returns:
        l_z (N_q, 2n) in ħ; degenerate (N_q, 2n) bool.
    """
    f, u, ok = modes.frequencies, modes.displacements, modes.normalized
    m = f.shape[1]
    spin = _spin_operator(m)
    gmat = gyroscopic_term(m, modes.omega_c)
    tol = rtol * max(float(np.max(np.abs(f))), 1e-300)
    labels = degenerate_groups(f, tol)
    uh = np.conj(np.swapaxes(u, -1, -2))
    wsum = f[:, :, None] + f[:, None, :]
    gram = _krein_overlap(u, f, u, f, gmat)
    lmat = wsum * (uh @ (spin @ u))
    eps = modes.polarizations
    l_zn = np.real(np.einsum("qis,ij,qjs->qs", eps.conj(), spin, eps))
    eye = np.eye(m)
    l_z = np.empty_like(f)
    degenerate = np.zeros(f.shape, dtype=bool)
    for s in range(m):
        member = labels == labels[:, s : s + 1]  # (N_q, 2n)
        size = member.sum(axis=1)
        pair = member[:, :, None] & member[:, None, :]
        group_ok = np.all(ok | ~member, axis=1)  # every member symplectically normalised
        nm = np.where(pair & group_ok[:, None, None], gram, eye)
        lm = np.where(pair, lmat, 0.0)
        val = np.real(np.trace(np.linalg.solve(nm, lm), axis1=1, axis2=2)) / size
        l_z[:, s] = np.where(group_ok, val, l_zn[:, s])
        degenerate[:, s] = size > 1
    return l_z, degenerate


def zhang_niu_angular_momentum(polarizations: np.ndarray) -> np.ndarray:
    """Zhang–Niu l_z = Σ_κ 2 Im(ε*_κx ε_κy) in ħ for unit polarization columns (..., 2n, 2n) → (..., 2n)."""
    e = np.asarray(polarizations)
    return 2.0 * np.sum(np.imag(np.conj(e[..., 0::2, :]) * e[..., 1::2, :]), axis=-2)


def magnetic_moment(l_z: np.ndarray, mass: float, charge_sign: int = -1) -> np.ndarray:
    """Phonon magnetic moment μ_z = (q_c/2m) l_z in Bohr magnetons: μ_z/μ_B = s (m₀/m) l_z/ħ.

    Args:
        l_z: angular momentum in ħ (any shape).
        mass: carrier mass in m₀.
        charge_sign: −1 electrons (μ antiparallel to l), +1 holes.
    """
    if charge_sign not in (-1, 1):
        raise ValueError(f"charge_sign must be -1 (electrons) or +1 (holes), got {charge_sign}")
    return float(charge_sign) * np.asarray(l_z) / float(mass)


def bose_weight(frequencies: np.ndarray, temperature_K: float) -> np.ndarray:
    """n_B(ω) + ½ for ħω in meV at T in K (½ at T = 0); NaN-free for ω > 0 only."""
    w = np.asarray(frequencies, dtype=float)
    if temperature_K < 0:
        raise ValueError(f"temperature must be ≥ 0 K, got {temperature_K}")
    if temperature_K == 0:
        return np.full_like(w, 0.5)
    x = w / (K_B_MEV_PER_K * temperature_K)
    with np.errstate(over="ignore", divide="ignore"):
        return 0.5 / np.tanh(0.5 * x)


def thermal_totals(
    frequencies: np.ndarray,
    l_z: np.ndarray,
    mu_z: np.ndarray,
    temperature_K: float,
    n_sites: int,
    *,
    valid: np.ndarray | None = None,
) -> dict:
    """Thermal angular momentum and magnetization per particle, each mode weighted by n_B(ω) + ½.

    L/N = (1/(N_q n)) Σ_{q,s} l_z (n_B + ½), likewise μ_z, over a uniform full mesh (spec §6).

    Args:
        frequencies, l_z, mu_z: (N_q, 2n) ħω in meV, l_z in ħ, μ_z in μ_B on the mesh.
        temperature_K: T ≥ 0.
        n_sites: particles per cell.
        valid: (N_q, 2n) bool, modes to include (default ω > 0); excluded modes are counted.

    Returns:
        dict(temperature_K, angular_momentum_per_particle_hbar, magnetization_per_particle_muB,
        excluded_modes).
    """
    f = np.asarray(frequencies, dtype=float)
    ok = f > 0 if valid is None else np.asarray(valid, dtype=bool)
    weight = np.where(ok, bose_weight(np.where(ok, f, 1.0), temperature_K), 0.0)
    norm = f.shape[0] * n_sites
    return {
        "temperature_K": float(temperature_K),
        "angular_momentum_per_particle_hbar": float(np.sum(weight * l_z) / norm),
        "magnetization_per_particle_muB": float(np.sum(weight * mu_z) / norm),
        "excluded_modes": int((~ok).sum()),
    }


# ---------------------------------------------------------------------------------------------
# Berry curvature (Fukui–Hatsugai–Suzuki plaquettes with determinant links)


def _plaquette_phases(links: list[np.ndarray], labels: np.ndarray, band: int) -> np.ndarray:
    """Berry phase −arg Π_l det(M_l restricted to the group of ``band``) around each plaquette.

    links: four (P, 2n, 2n) overlap matrices in loop order; labels: (P, 2n) group labels per plaquette.
    """
    m = labels.shape[1]
    member = labels == labels[:, band : band + 1]
    pair = member[:, :, None] & member[:, None, :]
    eye = np.eye(m)
    prod = np.ones(labels.shape[0], dtype=complex)
    for link in links:
        det = np.linalg.det(np.where(pair, link, eye))
        prod *= det / np.maximum(np.abs(det), 1e-300)
    return -np.angle(prod)


def _band_curvatures(links, labels, invalid, area):
    """Per-band plaquette curvature (P, 2n) (group value / group size), degenerate flags, raw phases."""
    p, m = labels.shape
    phase = np.empty((p, m))
    for s in range(m):
        phase[:, s] = _plaquette_phases(links, labels, s)
    size = np.sum(labels[:, :, None] == labels[:, None, :], axis=1)
    omega = phase / (area * size)
    bad = invalid | (np.abs(phase) > PHASE_LIMIT)
    return np.where(bad, np.nan, omega), size > 1, phase


def _group_invalid(labels: np.ndarray, invalid_mode: np.ndarray) -> np.ndarray:
    """(P, 2n): True where any member of the mode's group is invalid."""
    same = labels[:, :, None] == labels[:, None, :]
    return np.any(same & invalid_mode[:, None, :], axis=2)


def berry_curvature_path(
    dynamical_matrix_fn,
    q: np.ndarray,
    reciprocal: np.ndarray,
    omega_c: float = 0.0,
    *,
    step: float = 1e-3,
    rtol: float = DEGENERACY_RTOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Berry curvature Ω_s(q) in nm² at arbitrary q (e.g. a band path) from a small FHS plaquette.

    Each q gets a plaquette of side ``step``·b1 × ``step``·b2 centred on it (error O(step²)); the
    Berry phase uses determinant links over the group of modes that are degenerate at the centre or
    any corner; group members share the group's Ω / size and are flagged. A plaquette phase above
    π/2 (an unresolved crossing) or an unstable mode gives NaN.

    Args:
        dynamical_matrix_fn: callable q (M, 2) → ħ²D (M, 2n, 2n) in meV² (called once, with 5·N_q points).
        q: (N_q, 2) Cartesian 1/nm.
        reciprocal: (2, 2) rows b1, b2 (1/nm, with 2π).
        omega_c: signed ħω_c in meV.
        step: plaquette side as a fraction of b1, b2.

    Returns:
        berry_curvature (N_q, 2n) nm²; degenerate (N_q, 2n) bool.
    """
    q = np.atleast_2d(np.asarray(q, dtype=float))
    b = np.asarray(reciprocal, dtype=float)
    n_q = q.shape[0]
    d1, d2 = step * b[0], step * b[1]
    offsets = np.array([0.0 * d1, -0.5 * (d1 + d2), 0.5 * (d1 - d2), 0.5 * (d1 + d2), 0.5 * (d2 - d1)])
    pts = (q[None, :, :] + offsets[:, None, :]).reshape(-1, 2)
    modes = gyroscopic_modes(dynamical_matrix_fn(pts), omega_c, rtol=rtol)
    m = modes.frequencies.shape[1]
    f = modes.frequencies.reshape(5, n_q, m)
    u = modes.displacements.reshape(5, n_q, m, m)
    ok = modes.normalized.reshape(5, n_q, m)
    tol = rtol * max(float(np.max(np.abs(f))), 1e-300)
    cuts = np.all(np.diff(f, axis=-1) > tol, axis=0)
    labels = np.concatenate([np.zeros((n_q, 1), dtype=int), np.cumsum(cuts, axis=-1)], axis=-1)
    gmat = gyroscopic_term(m, omega_c)
    loop = [1, 2, 3, 4, 1]
    links = [_krein_overlap(u[a], f[a], u[c], f[c], gmat) for a, c in zip(loop[:-1], loop[1:], strict=True)]
    invalid = _group_invalid(labels, ~np.all(ok, axis=0))
    area = _cross(d1, d2)
    omega, degenerate, _ = _band_curvatures(links, labels, invalid, area)
    return omega, degenerate


@dataclass(frozen=True)
class BandGroupChern:
    """Chern number of one band group on the mesh (bands ``first``..``last``, 0-based, inclusive).

    ``chern`` is None when it is not defined on this mesh; ``note`` says why.
    """

    first: int
    last: int
    chern: int | None
    min_gap_below_meV: float
    min_gap_above_meV: float | None
    gapped: bool
    max_plaquette_phase: float
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "bands": [self.first, self.last],
            "chern": self.chern,
            "min_gap_below_meV": self.min_gap_below_meV,
            "min_gap_above_meV": self.min_gap_above_meV,
            "gapped": self.gapped,
            "max_plaquette_phase": self.max_plaquette_phase,
            "note": self.note,
        }


@dataclass(frozen=True)
class BerryCurvatureMesh:
    """Berry curvature on an N1 × N2 Monkhorst–Pack mesh (FHS plaquettes, periodic gauge).

    Attributes:
        mesh: (N1, N2).
        q_centres: (N1, N2, 2) plaquette centres, Cartesian 1/nm.
        berry_curvature: (N1, N2, 2n) Ω in nm² per band and plaquette (NaN where undefined);
            inside a locally degenerate group every member carries group Ω / size (flagged).
        degenerate: (N1, N2, 2n) bool.
        groups: Chern numbers per band group, bands merged where they touch on the mesh.
        order: (N1·N2,) indices mapping the input q order to the (N1, N2) layout.
    """

    mesh: tuple[int, int]
    q_centres: np.ndarray
    berry_curvature: np.ndarray
    degenerate: np.ndarray
    groups: list[BandGroupChern] = field(default_factory=list)
    order: np.ndarray | None = None

    @property
    def chern_numbers(self) -> list[int | None]:
        """Chern number per group (None where not defined)."""
        return [g.chern for g in self.groups]


def mesh_order(q: np.ndarray, reciprocal: np.ndarray, mesh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Map a full Γ-centred N1 × N2 grid (any order, any BZ shift) onto integer indices.

    Returns:
        order (N1·N2,) such that q[order] is laid out row-major as (i1, i2), q = (i1/N1) b1 + (i2/N2) b2
        modulo reciprocal vectors; frac (N1·N2, 2) the fractional coordinates of q[order].

    Raises:
        ValueError: q is not such a grid.
    """
    n1, n2 = (int(x) for x in mesh)
    q = np.asarray(q, dtype=float)
    if q.shape != (n1 * n2, 2):
        raise ValueError(f"expected {n1}x{n2} = {n1 * n2} q-points, got shape {q.shape}")
    frac = q @ np.linalg.inv(np.asarray(reciprocal, dtype=float))
    scaled = frac * np.array([n1, n2])
    idx = np.rint(scaled).astype(int)
    if np.max(np.abs(scaled - idx)) > 1e-6:
        raise ValueError("q is not a Γ-centred Monkhorst–Pack grid of the given mesh")
    key = (idx[:, 0] % n1) * n2 + idx[:, 1] % n2
    order = np.argsort(key, kind="stable")
    if not np.array_equal(key[order], np.arange(n1 * n2)):
        raise ValueError("q does not cover every point of the mesh exactly once")
    return order, frac[order]


def berry_curvature_mesh(
    modes: GyroscopicModes,
    q: np.ndarray,
    mesh: tuple[int, int],
    basis: np.ndarray,
    reciprocal: np.ndarray,
    *,
    rtol: float = DEGENERACY_RTOL,
    gap_rtol: float = GAP_RTOL,
) -> BerryCurvatureMesh:
    """Berry curvature per band and Chern numbers per band group on a full mesh (FHS method).

    Fukui–Hatsugai–Suzuki (JPSJ 74, 1674, eqs. 7–8) with the symplectic inner product
    x_a†K x_b: links U = det M over the group's modes, plaquette phase F = −arg(U1 U2 U3 U4),
    Ω = F / (signed plaquette area), C = Σ F / 2π (an integer by construction). Periodic gauge:
    D here is in phonopy's convention (intracell phases e^{iq·τ}), so the state at q + G is
    e^{−iG·τ_κ} u_κ(q) (Vanderbilt 2018, eq. 4.4); links that wrap around the zone carry that phase.

    Band groups for Chern numbers: bands s, s+1 are merged when min_q(ω_{s+1} − ω_s) ≤ gap_rtol·max ω.
    A group's Chern number is reported only when it is gapped from its neighbours (and, for the
    lowest group, from ω = 0), its modes are stable, and no plaquette phase exceeds π/2 (the mesh
    resolves the curvature); otherwise ``chern`` is None and ``note`` says why.

    Args:
        modes: :func:`gyroscopic_modes` at the mesh points ``q`` (any order).
        q: (N1·N2, 2) Cartesian 1/nm, a full Γ-centred grid.
        mesh: (N1, N2).
        basis: (n, 2) site positions τ_κ in nm.
        reciprocal: (2, 2) rows b1, b2.

    Raises:
        ValueError: q is not the stated grid, or shapes disagree.
    """
    n1, n2 = (int(x) for x in mesh)
    b = np.asarray(reciprocal, dtype=float)
    tau = np.asarray(basis, dtype=float)
    m = modes.frequencies.shape[1]
    if tau.shape != (m // 2, 2):
        raise ValueError(f"basis shape {tau.shape} does not match {m} degrees of freedom")
    order, _ = mesh_order(q, b, mesh)
    qg = np.asarray(q, dtype=float)[order].reshape(n1, n2, 2)
    f = modes.frequencies[order].reshape(n1, n2, m)
    u = modes.displacements[order].reshape(n1, n2, m, m)
    ok = modes.normalized[order].reshape(n1, n2, m)
    gmat = gyroscopic_term(m, modes.omega_c)
    fmax = max(float(np.max(np.abs(f))), 1e-300)

    def neighbour(axis: int):
        """States at q + b_axis/N_axis in the periodic gauge: (u, ω) rolled, with wrap phases."""
        step = b[axis] / (n1, n2)[axis]
        qn = np.roll(qg, -1, axis=axis)
        g = qg + step - qn  # reciprocal lattice vector (0 inside the zone)
        phase = np.exp(-1j * (g @ tau.T))  # (N1, N2, n)
        ph = np.repeat(phase, 2, axis=-1)[..., :, None]
        return np.roll(u, -1, axis=axis) * ph, np.roll(f, -1, axis=axis)

    u1, f1 = neighbour(0)
    u2, f2 = neighbour(1)
    m1 = _krein_overlap(u, f, u1, f1, gmat)  # q → q + δ1
    m2 = _krein_overlap(u, f, u2, f2, gmat)  # q → q + δ2

    def herm(x):
        return np.conj(np.swapaxes(x, -1, -2))

    links = [
        m1.reshape(-1, m, m),
        np.roll(m2, -1, axis=0).reshape(-1, m, m),
        herm(np.roll(m1, -1, axis=1)).reshape(-1, m, m),
        herm(m2).reshape(-1, m, m),
    ]
    corners = [f, np.roll(f, -1, 0), np.roll(np.roll(f, -1, 0), -1, 1), np.roll(f, -1, 1)]
    okc = [ok, np.roll(ok, -1, 0), np.roll(np.roll(ok, -1, 0), -1, 1), np.roll(ok, -1, 1)]
    tol = rtol * fmax
    cuts = np.all([np.diff(c, axis=-1) > tol for c in corners], axis=0).reshape(-1, m - 1)
    labels = np.concatenate([np.zeros((n1 * n2, 1), dtype=int), np.cumsum(cuts, axis=-1)], axis=-1)
    bad_mode = ~np.all(okc, axis=0).reshape(-1, m)
    area = _cross(b[0], b[1]) / (n1 * n2)
    omega, degenerate, _ = _band_curvatures(links, labels, _group_invalid(labels, bad_mode), area)

    # Chern numbers per globally gapped group.
    gap_tol = gap_rtol * fmax
    gaps = np.min(np.diff(f, axis=-1).reshape(-1, m - 1), axis=0)  # (2n − 1,)
    glabels = np.concatenate([[0], np.cumsum(gaps > gap_tol)])
    lowest = float(np.min(f[..., 0]))
    groups = []
    for lab in range(int(glabels[-1]) + 1):
        members = np.flatnonzero(glabels == lab)
        first, last = int(members[0]), int(members[-1])
        phase = _plaquette_phases(links, np.broadcast_to(glabels, (n1 * n2, m)), first)
        below = lowest if first == 0 else float(gaps[first - 1])
        above = None if last == m - 1 else float(gaps[last])
        gapped = below > gap_tol and (above is None or above > gap_tol)
        max_phase = float(np.max(np.abs(phase)))
        raw = float(np.sum(phase) / (2 * np.pi))
        stable = bool(np.all(ok[..., first : last + 1]))
        notes = []
        if last > first:
            notes.append(f"bands {first}-{last} touch on the mesh: one Chern number for the merged group")
        if not stable:
            notes.append("unstable or zero-frequency modes in this group on the mesh: Berry curvature undefined")
        elif not gapped:
            notes.append("group not gapped from zero frequency on the mesh")
        elif max_phase > PHASE_LIMIT:
            notes.append(f"mesh too coarse: plaquette Berry phase up to {max_phase:.2f} rad > π/2")
        defined = stable and gapped and max_phase <= PHASE_LIMIT
        groups.append(
            BandGroupChern(
                first,
                last,
                int(round(raw)) if defined else None,
                below,
                above,
                gapped,
                max_phase,
                "; ".join(notes),
            )
        )
    centres = qg + 0.5 * (b[0] / n1 + b[1] / n2)
    return BerryCurvatureMesh(
        (n1, n2),
        centres,
        omega.reshape(n1, n2, m),
        degenerate.reshape(n1, n2, m),
        groups,
        order,
    )


# ---------------------------------------------------------------------------------------------
# Everything `moire phonons` reports, in one call


@dataclass(frozen=True)
class ChiralPhonons:
    """Chiral-phonon quantities along a path and on a mesh (see :func:`chiral_phonons`).

    Attributes:
        omega_c: signed ħω_c (meV); charge_sign: −1 electrons, +1 holes; mass in m₀.
        path_modes / mesh_modes: :class:`GyroscopicModes` on the path and on the mesh.
        l_z, mu_z, berry_curvature, degenerate: (N_path, 2n) on the path, in ħ, μ_B, nm²; flags
            mark modes inside a degenerate subspace (l_z or Ω carry the subspace mean there).
        mesh_l_z: (N_mesh, 2n) l_z on the mesh (input order), in ħ.
        mesh_berry: :class:`BerryCurvatureMesh` (per-band Ω map, Chern numbers).
        stability: :func:`gyroscopic_stability` on path and mesh together.
        thermal: :func:`thermal_totals` at ``temperature_K`` on the mesh.
    """

    omega_c: float
    charge_sign: int
    mass: float
    path_modes: GyroscopicModes
    l_z: np.ndarray
    mu_z: np.ndarray
    berry_curvature: np.ndarray
    degenerate: np.ndarray
    mesh_modes: GyroscopicModes
    mesh_l_z: np.ndarray
    mesh_berry: BerryCurvatureMesh
    stability: dict
    thermal: dict

    def summary(self) -> dict:
        """JSON-ready digest: ħω_c, stability under B, Chern numbers with the gap check, thermal totals."""
        groups = [g.as_dict() for g in self.mesh_berry.groups]
        return {
            "hbar_omega_c_meV": self.omega_c,
            "charge_sign": self.charge_sign,
            "stability_under_field": self.stability,
            "chern_numbers": [g["chern"] for g in groups],
            "band_groups": groups,
            "chern_mesh": list(self.mesh_berry.mesh),
            "thermal": self.thermal,
            "max_abs_l_z_hbar": float(np.max(np.abs(self.l_z))),
            "max_abs_berry_curvature_nm2": float(np.nanmax(np.abs(self.berry_curvature), initial=0.0)),
        }


def chiral_phonons(
    dynamical_matrix_fn,
    q_path: np.ndarray,
    q_mesh: np.ndarray,
    mesh: tuple[int, int],
    basis: np.ndarray,
    reciprocal: np.ndarray,
    *,
    omega_c: float,
    mass: float,
    charge_sign: int = -1,
    temperature_K: float = 0.0,
    rtol: float = DEGENERACY_RTOL,
    gap_rtol: float = GAP_RTOL,
) -> ChiralPhonons:
    """Modes under B, l_z, μ_z and Ω along a path; Ω map, Chern numbers and thermal totals on a mesh.

    Args:
        dynamical_matrix_fn: callable q (M, 2) → ħ²D (M, 2n, 2n) meV² (e.g. ``dynamics.dynamical_matrix``
            bound to a model); called three times (path, path plaquettes, mesh).
        q_path: (N_path, 2) Cartesian 1/nm.  q_mesh: (N1·N2, 2) full Γ-centred grid.  mesh: (N1, N2).
        basis: (n, 2) nm; reciprocal: (2, 2) rows b1, b2.
        omega_c: signed ħω_c in meV (:func:`cyclotron_energy`); mass in m₀; charge_sign ±1.
        temperature_K: T for the thermal totals.

    Raises:
        ValueError: bad shapes, q_mesh not the stated grid, charge_sign not ±1, T < 0.
    """
    path_modes = gyroscopic_modes(dynamical_matrix_fn(q_path), omega_c, rtol=rtol)
    l_z, deg_l = angular_momentum(path_modes, rtol=rtol)
    omega, deg_o = berry_curvature_path(dynamical_matrix_fn, q_path, reciprocal, omega_c, rtol=rtol)
    mesh_modes = gyroscopic_modes(dynamical_matrix_fn(q_mesh), omega_c, rtol=rtol)
    mesh_l, _ = angular_momentum(mesh_modes, rtol=rtol)
    berry = berry_curvature_mesh(mesh_modes, q_mesh, mesh, basis, reciprocal, rtol=rtol, gap_rtol=gap_rtol)
    both = GyroscopicModes(
        np.concatenate([path_modes.frequencies, mesh_modes.frequencies]),
        np.concatenate([path_modes.displacements, mesh_modes.displacements]),
        np.concatenate([path_modes.normalized, mesh_modes.normalized]),
        np.concatenate([path_modes.growth_rates, mesh_modes.growth_rates]),
        float(omega_c),
        max(path_modes.real_tol, mesh_modes.real_tol),
    )
    stability = gyroscopic_stability(both)
    n_path = q_path.shape[0]
    stability["where"] = "path" if stability["index"][0] < n_path else "mesh"
    if stability["where"] == "mesh":
        stability["index"][0] -= n_path
    mesh_mu = magnetic_moment(mesh_l, mass, charge_sign)
    valid = mesh_modes.normalized & (mesh_modes.frequencies > 0)
    thermal = thermal_totals(
        mesh_modes.frequencies, mesh_l, mesh_mu, temperature_K, basis.shape[0], valid=valid
    )
    return ChiralPhonons(
        float(omega_c),
        int(charge_sign),
        float(mass),
        path_modes,
        l_z,
        magnetic_moment(l_z, mass, charge_sign),
        omega,
        deg_l | deg_o,
        mesh_modes,
        mesh_l,
        berry,
        stability,
        thermal,
    )
