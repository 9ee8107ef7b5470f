"""Equilibrium, dynamical matrix, phonons and stability of a pinned 2D crystal (spec §5).

Units: nm, meV, m₀. The dynamical matrix is stored as ħ²D (meV²), so its eigenvalues are (ħω)²;
frequencies are ħω in meV, negative for imaginary ones (phonopy convention). Mode index 2κ + α.

D_{κα,κ'β}(q) = (1/m)[δ_κκ' Σ_κ'' S_κκ''(0) − S_κκ'(q)]_αβ + δ_κκ' (1/m) s_κ ∂_α∂_βΔ(τ_κ),
S_κκ'(q) = Σ'_l Φ(R_l + τ_κ' − τ_κ) e^{iq·(R_l + τ_κ' − τ_κ)} (phonopy convention; Maradudin,
Montroll, Weiss, *Theory of Lattice Dynamics in the Harmonic Approximation* (1963)), s_κ the
per-site trap scale. The C/r part of U is summed by 2D Ewald (:mod:`moire_cli.ewald`), the rest
in real space up to a cut-off from the interaction's ``short_range_cutoff(tol)`` (or
``LatticeModel.short_range_cutoff``; default 30 nearest-neighbour distances if neither exists).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize

from moire_cli import ewald
from moire_cli.crystals import Crystal
from moire_cli.potentials import MoirePotential, PairInteraction
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2


@dataclass(frozen=True, eq=False)
class LatticeModel:
    """A crystal of particles of mass ``mass`` (m₀) in a moiré potential with pair interaction.

    Attributes:
        crystal: cell and basis (nm).
        potential: moiré potential, or None (unpinned).
        interaction: a :class:`moire_cli.potentials.PairInteraction`.
        mass: particle mass (m₀) > 0.
        trap_scale: per-site multiplier of the moiré potential (len n), None = all 1.
        ewald_eta: Ewald splitting η (1/nm), None = √(π/A).
        ewald_tol: relative accuracy of the Ewald sums.
        short_range_tol: accuracy passed to ``interaction.short_range_cutoff``.
        short_range_cutoff: explicit real-space cut-off (nm) for the short-ranged part (overrides).
    """

    crystal: Crystal
    potential: MoirePotential | None
    interaction: PairInteraction
    mass: float
    trap_scale: tuple[float, ...] | None = None
    ewald_eta: float | None = None
    ewald_tol: float = 1e-16
    short_range_tol: float = 1e-6
    short_range_cutoff: float | None = None

    def __post_init__(self) -> None:
        if not self.mass > 0:
            raise ValueError(f"mass must be positive, got {self.mass}")
        if self.trap_scale is not None and len(self.trap_scale) != self.crystal.n_sites:
            raise ValueError(
                f"trap_scale has {len(self.trap_scale)} entries but the crystal has {self.crystal.n_sites} sites"
            )

    def with_basis(self, basis: np.ndarray) -> LatticeModel:
        return replace(self, crystal=self.crystal.with_basis(basis))

    @property
    def scales(self) -> np.ndarray:
        n = self.crystal.n_sites
        return np.ones(n) if self.trap_scale is None else np.asarray(self.trap_scale, dtype=float)


# ------------------------------------------------------------------ interaction pieces
def _tail(model: LatticeModel) -> float:
    return float(getattr(model.interaction, "coulomb_tail", 0.0))


def _short_cutoff(model: LatticeModel) -> float:
    if model.short_range_cutoff is not None:
        return float(model.short_range_cutoff)
    f = getattr(model.interaction, "short_range_cutoff", None)
    if f is None:
        return 30.0 * model.crystal.nearest_neighbour_distance
    return float(f(model.short_range_tol))


def _short_radial(model: LatticeModel):
    """Radial functions of U − C/r (None when nothing remains, i.e. pure Coulomb)."""
    C = _tail(model)
    if _short_cutoff(model) <= 0:
        return None
    radial = model.interaction.radial

    def short(r):
        u, u1, u2 = radial(r)
        if C:
            u, u1, u2 = u - C / r, u1 + C / r**2, u2 - 2 * C / r**3
        return u, u1, u2

    return short


def _short_lattice(model: LatticeModel) -> np.ndarray:
    tau = model.crystal.basis[None] - model.crystal.basis[:, None]
    rc = _short_cutoff(model) + float(np.linalg.norm(tau, axis=-1).max())
    return ewald.lattice_points(model.crystal.cell, rc)


# ------------------------------------------------------------------ energy and forces
def energy(model: LatticeModel) -> float:
    """Energy per cell (meV): Σ_κ s_κΔ(τ_κ) + ½Σ′U (Ewald for the C/r part, with background)."""
    cr = model.crystal
    e = 0.0
    if model.potential is not None:
        e += float((model.scales * model.potential.value(cr.basis)).sum())
    C = _tail(model)
    if C:
        e += ewald.coulomb_energy(cr, C, model.ewald_eta, model.ewald_tol)
    short = _short_radial(model)
    if short is not None:
        e += ewald.realspace_energy(cr, short, _short_lattice(model), _short_cutoff(model))
    return e


def forces(model: LatticeModel) -> np.ndarray:
    """Forces −∂E/∂τ_κ (meV/nm), (n, 2)."""
    cr = model.crystal
    f = np.zeros_like(cr.basis)
    if model.potential is not None:
        f -= model.scales[:, None] * model.potential.gradient(cr.basis)
    C = _tail(model)
    if C:
        f += ewald.coulomb_forces(cr, C, model.ewald_eta, model.ewald_tol)
    short = _short_radial(model)
    if short is not None:
        f += ewald.realspace_forces(cr, short, _short_lattice(model), _short_cutoff(model))
    return f


# ------------------------------------------------------------------ dynamical matrix
def force_constant_sums(model: LatticeModel, q: np.ndarray) -> np.ndarray:
    """S_κκ'(q) of the full pair interaction (meV/nm²), (N_q, n, n, 2, 2) complex."""
    q = np.atleast_2d(np.asarray(q, dtype=float))
    n = model.crystal.n_sites
    s = np.zeros((len(q), n, n, 2, 2), dtype=complex)
    C = _tail(model)
    if C:
        s += ewald.coulomb_force_constants(model.crystal, C, q, model.ewald_eta, model.ewald_tol)
    short = _short_radial(model)
    if short is not None:
        s += ewald.realspace_force_constants(model.crystal, short, _short_lattice(model), q, _short_cutoff(model))
    return s


def hessian_matrix(model: LatticeModel, q: np.ndarray) -> np.ndarray:
    """m·D(q): the Fourier-transformed Hessian of the energy (meV/nm²), (N_q, 2n, 2n) complex."""
    q = np.atleast_2d(np.asarray(q, dtype=float))
    n = model.crystal.n_sites
    s_all = force_constant_sums(model, np.concatenate([np.zeros((1, 2)), q]))
    s_0, s_q = s_all[0].real, s_all[1:]
    onsite = s_0.sum(axis=1)  # (n, 2, 2): Σ_κ'' S_κκ''(0)
    if model.potential is not None:
        onsite = onsite + model.scales[:, None, None] * model.potential.hessian(model.crystal.basis)
    h = -s_q
    idx = np.arange(n)
    h[:, idx, idx] += onsite
    h = h.transpose(0, 1, 3, 2, 4).reshape(len(q), 2 * n, 2 * n)
    return 0.5 * (h + np.conj(h.transpose(0, 2, 1)))


def dynamical_matrix(model: LatticeModel, q: np.ndarray) -> np.ndarray:
    """ħ²D(q) (meV²), (N_q, 2n, 2n) complex Hermitian, index 2κ + α, phonopy phase convention.

    Args:
        q: (N_q, 2) Cartesian 1/nm (with 2π). At exactly q = 0 the non-analytic Coulomb term
            is dropped (its limit in 2D is zero; only the direction of approach matters for slopes).
    """
    return HBAR2_OVER_M0_MEV_NM2 / model.mass * hessian_matrix(model, q)


def frequencies_from_eigenvalues(w2: np.ndarray) -> np.ndarray:
    """(ħω)² (meV²) -> signed ħω (meV): negative for imaginary modes."""
    return np.sign(w2) * np.sqrt(np.abs(w2))


def phonons(model: LatticeModel, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (N_q, 2n) meV (ascending, negative = imaginary) and eigenvectors
    (N_q, 2n, 2n) (columns, unit norm) via batched ``numpy.linalg.eigh``."""
    w2, vec = np.linalg.eigh(dynamical_matrix(model, q))
    return frequencies_from_eigenvalues(w2), vec


def time_reversal_representatives(crystal: Crystal, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce a q set by D(q + G) = P_G† D(q) P_G and D(−q) = D(q)* (real force constants).

    Returns (rep (N_q,) index of the q whose D is diagonalized, conj (N_q,) bool: q ≡ −q_rep,
    shift (N_q, 2) Cartesian G with q = ±q_rep + G). Matching uses fractional coordinates mod 1
    rounded to 1e-9 (vectorized: sort + searchsorted).
    """
    q = np.atleast_2d(np.asarray(q, dtype=float))
    frac = crystal.to_fractional(q)
    scale = 10**9

    def keys(f):
        m = np.round(np.mod(f, 1.0) * scale).astype(np.int64) % scale
        return m[:, 0] * scale + m[:, 1]

    k, kn = keys(frac), keys(-frac)
    uniq, first = np.unique(k, return_index=True)  # first occurrence of each key
    a = first[np.searchsorted(uniq, k)]
    pos = np.clip(np.searchsorted(uniq, kn), 0, len(uniq) - 1)
    b = np.where(uniq[pos] == kn, first[pos], len(q))
    conj = b < a
    rep = np.where(conj, b, a)
    shift = np.where(conj[:, None], q + q[rep], q - q[rep])
    return rep, conj, shift


def phonons_reduced(model: LatticeModel, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same result as :func:`phonons`, diagonalizing D only at the representatives of
    :func:`time_reversal_representatives` (about half of a full Monkhorst–Pack mesh).
    Eigenvectors are mapped back exactly: v(q_rep + G) = P_G† v, v(−q_rep + G) = P_G† v*,
    P_G = diag(e^{iG·τ_κ})."""
    q = np.atleast_2d(np.asarray(q, dtype=float))
    rep, conj, shift = time_reversal_representatives(model.crystal, q)
    todo, inverse = np.unique(rep, return_inverse=True)
    f, v = phonons(model, q[todo])
    f, v = f[inverse], v[inverse]
    v = np.where(conj[:, None, None], np.conj(v), v)
    phase = np.repeat(np.exp(-1j * shift @ model.crystal.basis.T), 2, axis=1)  # P_G†, (N_q, 2n)
    return f, phase[:, :, None] * v


def stability(frequencies: np.ndarray, tolerance_meV: float | None = None) -> dict:
    """Stability verdict from frequencies (N_q, n_modes) meV.

    A mode is unstable if ħω < −tolerance (default 1e-5 × max|ħω|, above round-off of acoustic
    modes at Γ). Returns dict(stable: bool, min_frequency_meV: float, index: (q index, mode),
    unstable_modes: int).
    """
    f = np.atleast_2d(np.asarray(frequencies, dtype=float))
    tol = 1e-5 * float(np.abs(f).max()) if tolerance_meV is None else float(tolerance_meV)
    i = np.unravel_index(int(np.argmin(f)), f.shape)
    n_bad = int((f < -tol).sum())
    return {
        "stable": n_bad == 0,
        "min_frequency_meV": float(f[i]),
        "index": (int(i[0]), int(i[1])),
        "unstable_modes": n_bad,
    }


def density_of_states(frequencies: np.ndarray, energies: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smeared DOS g(E) (states per meV per cell), normalized to 2n modes per cell.

    frequencies (N_q, 2n) meV on a full mesh; energies (N_E,) meV; sigma > 0 meV.
    On a uniform energy grid the frequencies are deposited linearly on a 16× finer grid and
    convolved with the sampled Gaussian (error ~ (ΔE/16σ)²/8 relative); otherwise the Gaussians
    are summed directly.
    """
    f = np.asarray(frequencies, dtype=float)
    e = np.asarray(energies, dtype=float)
    norm = 1 / (np.sqrt(2 * np.pi) * sigma * f.shape[0])
    de = np.diff(e)
    if len(e) < 3 or not np.allclose(de, de[0], rtol=1e-9, atol=0) or de[0] <= 0:
        x = (e[:, None] - f.ravel()[None]) / sigma
        return np.exp(-0.5 * x**2).sum(1) * norm
    sub = 16
    h = de[0] / sub
    n_fine = (len(e) - 1) * sub + 1
    pos = (f.ravel() - e[0]) / h
    inside = (pos >= 0) & (pos <= n_fine - 1)
    i0 = np.minimum(np.floor(pos[inside]).astype(int), n_fine - 2)
    t = pos[inside] - i0
    hist = np.bincount(i0, 1 - t, n_fine) + np.bincount(i0 + 1, t, n_fine)
    half = int(np.ceil(8 * sigma / h))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * h / sigma) ** 2)
    fine = np.convolve(hist, kernel)[half : half + n_fine]
    out = fine[::sub] * norm
    if not inside.all():  # modes outside the grid: add their tails directly
        x = (e[:, None] - f.ravel()[~inside][None]) / sigma
        out += np.exp(-0.5 * x**2).sum(1) * norm
    return out


# ------------------------------------------------------------------ relaxation
@dataclass(frozen=True, eq=False)
class RelaxResult:
    """Relaxed model, displacement (n, 2) nm from the start, energy per cell (meV), max |F|
    (meV/nm), whether the q = 0 Hessian is positive semidefinite, its lowest eigenvalue (meV/nm²)."""

    model: LatticeModel
    displacement: np.ndarray
    energy: float
    max_force: float
    hessian_psd: bool
    min_hessian_eigenvalue: float


def relax(model: LatticeModel, force_tol: float = 1e-9) -> RelaxResult:
    """Relax the basis without symmetry constraints: BFGS with analytic forces, then Newton steps
    with the analytic q = 0 Hessian (pseudo-inverse, so free translations are harmless).

    force_tol: target max |F| relative to the force scale C/a_nn² + k_M·a_nn.
    Then checks that the q = 0 Hessian is positive semidefinite (relative tolerance 1e-8).
    """
    cr = model.crystal
    start = cr.basis.copy()
    a = cr.nearest_neighbour_distance
    scale = abs(_tail(model)) / a**2 + (model.potential.k_M * a if model.potential is not None else 0.0)
    scale = max(scale, float(np.abs(forces(model)).max()), 1e-12)

    def fun(x):
        m = model.with_basis(x.reshape(-1, 2))
        return energy(m), -forces(m).ravel()

    res = optimize.minimize(fun, start.ravel(), jac=True, method="BFGS", options={"gtol": force_tol * scale * 1e-2})
    x = res.x
    for _ in range(6):
        m = model.with_basis(x.reshape(-1, 2))
        f = forces(m).ravel()
        if np.abs(f).max() <= force_tol * scale * 1e-3:
            break
        h = hessian_matrix(m, np.zeros((1, 2)))[0].real
        x = x + np.linalg.pinv(h, rcond=1e-10) @ f
    relaxed = model.with_basis(x.reshape(-1, 2))
    h = hessian_matrix(relaxed, np.zeros((1, 2)))[0].real
    ev = np.linalg.eigvalsh(h)
    return RelaxResult(
        model=relaxed,
        displacement=relaxed.crystal.basis - start,
        energy=energy(relaxed),
        max_force=float(np.abs(forces(relaxed)).max()),
        hessian_psd=bool(ev.min() >= -1e-8 * max(np.abs(ev).max(), 1e-300)),
        min_hessian_eigenvalue=float(ev.min()),
    )


# ------------------------------------------------------------------ bands + DOS workflow
@dataclass(frozen=True, eq=False)
class PhononResult:
    """Everything `moire phonons` reports. Frequencies in meV (negative = imaginary).

    q_path (N_p, 2), path_frequencies (N_p, 2n), path_eigenvectors (N_p, 2n, 2n);
    q_mesh (N_m, 2), mesh_frequencies (N_m, 2n); energies (N_E,), dos (N_E,) per meV per cell;
    stability: :func:`stability` over path and mesh together, plus ``where`` ("path"/"mesh")
    and ``q`` (Cartesian 1/nm) of the lowest mode.
    """

    model: LatticeModel
    relax: RelaxResult | None
    q_path: np.ndarray
    path_frequencies: np.ndarray
    path_eigenvectors: np.ndarray
    q_mesh: np.ndarray
    mesh_frequencies: np.ndarray
    mesh_eigenvectors: np.ndarray
    energies: np.ndarray
    dos: np.ndarray
    stability: dict


def compute_phonons(
    model: LatticeModel,
    q_path: np.ndarray,
    q_mesh: np.ndarray,
    relax_first: bool = True,
    smearing_meV: float | None = None,
    n_energies: int = 400,
) -> PhononResult:
    """Relax (optional), then bands on the path and on the mesh in one batched call each, the
    Gaussian DOS on the mesh and the stability verdict. Pure: no I/O."""
    rel = relax(model) if relax_first else None
    m = rel.model if rel is not None else model
    q_all = np.concatenate([q_path, q_mesh])
    f_all, v_all = phonons_reduced(m, q_all)
    n_p = len(q_path)
    fm = f_all[n_p:]
    lo, hi = float(f_all.min()), float(f_all.max())
    span = max(hi - lo, 1e-6 * max(abs(hi), 1.0))
    sigma = smearing_meV if smearing_meV is not None else span / 100
    energies = np.linspace(lo - 4 * sigma, hi + 4 * sigma, n_energies)
    dos = density_of_states(fm, energies, sigma)
    st = stability(f_all)
    iq = st["index"][0]
    st["where"] = "path" if iq < n_p else "mesh"
    st["q"] = q_all[iq]
    return PhononResult(
        model=m,
        relax=rel,
        q_path=q_path,
        path_frequencies=f_all[:n_p],
        path_eigenvectors=v_all[:n_p],
        q_mesh=q_mesh,
        mesh_frequencies=fm,
        mesh_eigenvectors=v_all[n_p:],
        energies=energies,
        dos=dos,
        stability=st,
    )
