"""Cubic force constants and the three-phonon decay of zone-centre phonons (spec §10).

Cubic force constants. The third derivatives of an isotropic U(r) at separation d (r = |d|, r̂ = d/r):

    Φ_αβγ(d) = (U‴ − 3U″/r + 3U′/r²) r̂_α r̂_β r̂_γ + (U″/r − U′/r²)(δ_αβ r̂_γ + δ_αγ r̂_β + δ_βγ r̂_α),

summed like the harmonic ones, T_κκ′(q) = Σ′_l Φ_αβγ(R_l + τ_κ′ − τ_κ) e^{iq·(R_l + τ_κ′ − τ_κ)}: the C/r
part by 2D Ewald (real space erfc(ηr)/r to U‴; reciprocal space +i(2πC/A) Σ_G k_αk_βk_γ erfc(|k|/2η)/|k|
e^{−iG·(τ_κ′−τ_κ)}, k = q + G, no self term since ∂³(erf(ηr)/r) = 0 at r = 0), the rest in real space.
The moiré potential contributes on site, ∂_α∂_β∂_γΔ = 2V Σ_j b_jα b_jβ b_jγ sin(b_j·r + ψ) (× trap scale).
A Γ phonon couples to a pair (q, s₁) + (−q, s₂) only through

    W_μγ(q) = ∂H(q)/∂τ_μγ   (phases held fixed; meV/nm³, H = m·D the Hessian of dynamics.hessian_matrix),
    W_μγ(q)_κκ′ = δ_κκ′ [T_κμ(0) − δ_κμ Σ_κ″ T_κκ″(0) + δ_κμ s_μ Δ‴(τ_μ)] − (δ_κ′μ − δ_κμ) T_κκ′(q),

the change of the harmonic force constants when sublattice μ is displaced uniformly: the exact
identity behind the test against finite differences of the harmonic force constants.

Decay (Fermi's golden rule; Maradudin & Fein, Phys. Rev. 128, 2589 (1962); conventions of phono3py,
Togo, Chaput & Tanaka, PRB 91, 094306 (2015)). With x = √(ħ²/m) Σ (u a + h.c.) N^{-½} and the
symplectically normalised displacements u (gyroscopic.py; u = ε/√(2ω) at B = 0, so B ≠ 0 is covered),

    V₃(p; q s₁; −q s₂) = (ħ²/m)^{3/2} N^{-½} Σ_μγ u_p,μγ · u_s₁(q)† W_μγ(q) u_s₂(−q)*   (meV),
    Γ_p = (π/2) Σ_{q s₁ s₂} |V₃|² (1 + n₁ + n₂) δ_σ(ħω_p − ħω₁ − ħω₂),

Γ_p the imaginary part of the self-energy in meV (phono3py's Γ; line FWHM 2Γ, lifetime ħ/2Γ), the sum over
ordered pairs on a full mesh (hence ½). δ_σ is a Gaussian of width σ cut at 5σ, so the rate is exactly 0
where no pair can conserve energy. The two-phonon sum is vectorised over q; Python loops run only over
the 2n pump modes and the 2n sublattice directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from moire_cli import dynamics, ewald
from moire_cli.excitons import DipoleBare, DipoleInteraction
from moire_cli.potentials import Coulomb, DualGate, Keldysh, struve_minus_y0
from moire_cli.units import E2_MEV_NM, HBAR2_OVER_M0_MEV_NM2

#: Energy conservation: Gaussian cut at this many σ (exact zeros beyond).
SIGMA_CUTOFF = 5.0
_CHUNK = 2_000_000


# ------------------------------------------------------------------ U‴ of the pair interactions
def _keldysh_f3(x: np.ndarray) -> np.ndarray:
    """F‴ for F = H₀ − Y₀: −F′ + F/x − 2(2/π − F′)/x² (Struve/Bessel), asymptotic series for x ≥ 40."""
    f, f1, _ = struve_minus_y0(x)
    out = -f1 + f / x - 2 * (2 / np.pi - f1) / x**2
    big = x >= 40.0
    if np.any(big):
        k = np.arange(16)
        dfact = np.concatenate([[1.0], np.cumprod(2 * k[1:] - 1.0)])
        c = (2 / np.pi) * (-1.0) ** k * dfact**2
        p = 2 * k + 1
        out[big] = (-(p * (p + 1) * (p + 2)) * c * x[big][:, None] ** (-(p + 3.0))).sum(-1)
    return out


def third_derivative(interaction, r: np.ndarray) -> np.ndarray:
    """U‴(r) in meV/nm³ for every pair interaction of moire_cli, at r (any shape, nm, > 0).

    Closed forms: Coulomb −6C/r⁴; Keldysh (πe²/2r₀)(κ/r₀)³ F‴(κr/r₀); dual gate
    −(2e²/κd_g) Σ_k k³[K₁ + K₀/x + 2K₁/x²](x = kr); bare dipole 2C[−6/r⁴ − 9r/ρ⁵ + 15r³/ρ⁷], ρ² = r² + d².
    The screened exciton models (two-sheet, lumped), whose U″ is a numerical Hankel transform, use the
    fourth-order central difference of that U″ (step 10⁻³r; relative error ~1e-7).

    Raises:
        TypeError: an interaction this module does not know.
    """
    r = np.asarray(r, dtype=float)
    if isinstance(interaction, Coulomb):
        return -6 * interaction.coulomb_tail / r**4
    if isinstance(interaction, Keldysh):
        s = interaction.kappa / interaction.r0
        pref = np.pi * E2_MEV_NM / (2 * interaction.r0)
        return pref * s**3 * _keldysh_f3(s * r)
    if isinstance(interaction, DualGate):
        c = np.pi / (2 * interaction.d_g)
        rmin = float(np.min(r)) if r.size else 1.0
        n = int(np.clip(np.ceil(np.log(1 / interaction.tol) / (2 * c * rmin)) + 1, 1, 20000))
        k = c * (2 * np.arange(n) + 1)
        x = r[..., None] * k
        k0, k1 = special.k0(x), special.k1(x)
        pref = 2 * E2_MEV_NM / (interaction.kappa * interaction.d_g)
        return -pref * (k**3 * (k1 + k0 / x + 2 * k1 / x**2)).sum(-1)
    if isinstance(interaction, DipoleBare):
        c = 2 * E2_MEV_NM / interaction.kappa
        rho = np.sqrt(r**2 + interaction.d**2)
        return c * (-6 / r**4 - 9 * r / rho**5 + 15 * r**3 / rho**7)
    if isinstance(interaction, DipoleInteraction):
        h = 1e-3 * r
        u2 = [interaction.radial(r + j * h)[2] for j in (-2, -1, 1, 2)]
        return (8 * (u2[2] - u2[1]) - (u2[3] - u2[0])) / (12 * h)
    raise TypeError(f"no third derivative for interaction {getattr(interaction, 'name', interaction)!r}")


def cubic_tensor(d: np.ndarray, u1: np.ndarray, u2: np.ndarray, u3: np.ndarray) -> np.ndarray:
    """Φ_αβγ(d) (meV/nm³) from U′, U″, U‴ at r = |d|: (..., 2) → (..., 2, 2, 2)."""
    r = np.linalg.norm(d, axis=-1)
    n = d / r[..., None]
    a = u3 - 3 * u2 / r + 3 * u1 / r**2
    b = u2 / r - u1 / r**2
    e = np.eye(2)
    nnn = n[..., :, None, None] * n[..., None, :, None] * n[..., None, None, :]
    sym = (
        e[:, :, None] * n[..., None, None, :]
        + e[:, None, :] * n[..., None, :, None]
        + e[None, :, :] * n[..., :, None, None]
    )
    return a[..., None, None, None] * nnn + b[..., None, None, None] * sym


def _realspace_cubic(crystal, radial3, lattice, q, r_cut=None) -> np.ndarray:
    """Σ′_l Φ_αβγ(d) e^{iq·d} over the given lattice vectors, |d| ≤ r_cut: (N_q, n, n, 2, 2, 2)."""
    n = crystal.n_sites
    tau = crystal.basis[None, :, :] - crystal.basis[:, None, :]
    d = lattice[None, None] + tau[:, :, None]
    r2 = np.einsum("...i,...i->...", d, d)
    mask = r2 > 1e-20 * crystal.area
    if r_cut is not None:
        mask &= r2 <= r_cut**2
    dd = np.where(mask[..., None], d, 1.0)
    r = np.linalg.norm(dd, axis=-1)
    _, u1, u2, u3 = radial3(r)
    phi = np.where(mask[..., None, None, None], cubic_tensor(dd, u1, u2, u3), 0.0)
    phi_mat = np.moveaxis(phi, 2, 0).reshape(len(lattice), n * n * 8)
    out = np.empty((len(q), n, n, 2, 2, 2), dtype=complex)
    step = max(1, _CHUNK // max(1, len(lattice)))
    for s in range(0, len(q), step):  # memory chunks of q, not a per-q loop
        qc = q[s : s + step]
        ph = qc @ lattice.T
        blk = ((np.cos(ph) @ phi_mat) + 1j * (np.sin(ph) @ phi_mat)).reshape(len(qc), n, n, 2, 2, 2)
        out[s : s + step] = blk * np.exp(1j * np.einsum("qa,ija->qij", qc, tau))[..., None, None, None]
    return out


def _erfc_radial3(C: float, eta: float):
    def radial(r):
        g = special.erfc(eta * r)
        ex = (2 * eta / np.sqrt(np.pi)) * np.exp(-((eta * r) ** 2))
        e1, e2, e3 = -ex, 2 * eta**2 * r * ex, 2 * eta**2 * ex * (1 - 2 * eta**2 * r**2)
        u1 = C * (e1 / r - g / r**2)
        u2 = C * (e2 / r - 2 * e1 / r**2 + 2 * g / r**3)
        u3 = C * (e3 / r - 3 * e2 / r**2 + 6 * e1 / r**3 - 6 * g / r**4)
        return C * g / r, u1, u2, u3

    return radial


def _ewald_cubic(model, q) -> np.ndarray:
    cr = model.crystal
    C = dynamics._tail(model)
    p = ewald.ewald_parameters(cr, model.ewald_eta, model.ewald_tol)
    out = _realspace_cubic(cr, _erfc_radial3(C, p.eta), ewald.lattice_points(cr.cell, p.r_cut), q)
    frac = cr.to_fractional(q)
    g0 = cr.to_cartesian(np.floor(frac + 0.5))
    q_red = q - g0
    qmax = float(np.linalg.norm(q_red, axis=1).max()) if len(q) else 0.0
    g = ewald.lattice_points(cr.reciprocal, p.g_cut + qmax)
    n = cr.n_sites
    tau = cr.basis[None, :, :] - cr.basis[:, None, :]
    eg = np.exp(-1j * np.einsum("ga,ija->gij", g, tau)).reshape(len(g), n * n)
    fold = np.exp(1j * np.einsum("qa,ija->qij", g0, tau))
    pref = 1j * 2 * np.pi * C / cr.area
    step = max(1, _CHUNK // max(1, len(g)))
    idx = [(0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1)]
    for s in range(0, len(q), step):  # memory chunks of q
        k = q_red[s : s + step, None, :] + g[None, :, :]  # (Nq, NG, 2)
        kn = np.linalg.norm(k, axis=-1)
        ok = kn > 1e-12 * p.eta
        w = np.where(ok, special.erfc(np.where(ok, kn, 1.0) / (2 * p.eta)) / np.where(ok, kn, 1.0), 0.0)
        comps = np.stack([w * k[..., a] * k[..., b] * k[..., c] for a, b, c in idx])  # (4, Nq, NG)
        prod = (comps.reshape(-1, len(g)) @ eg).reshape(4, -1, n, n) * fold[s : s + step] * pref
        blk = out[s : s + step]
        for j, (a, b, c) in enumerate(idx):  # the four independent components of a symmetric tensor
            for perm in {(a, b, c), (a, c, b), (b, a, c), (b, c, a), (c, a, b), (c, b, a)}:
                blk[:, :, :, perm[0], perm[1], perm[2]] += prod[j]
    return out


def cubic_force_constant_sums(model: dynamics.LatticeModel, q: np.ndarray) -> np.ndarray:
    """T_κκ′(q) = Σ′_l Φ_αβγ(R_l + τ_κ′ − τ_κ) e^{iq·(…)} of the full pair interaction (meV/nm³),
    (N_q, n, n, 2, 2, 2) complex: Ewald for the C/r part, real space for the short-ranged rest."""
    q = np.atleast_2d(np.asarray(q, dtype=float))
    n = model.crystal.n_sites
    out = np.zeros((len(q), n, n, 2, 2, 2), dtype=complex)
    C = dynamics._tail(model)
    if C:
        out += _ewald_cubic(model, q)
    if dynamics._short_cutoff(model) > 0:
        inter = model.interaction

        def short(r):
            u, u1, u2 = inter.radial(r)
            u3 = third_derivative(inter, r)
            if C:
                u1, u2, u3 = u1 + C / r**2, u2 - 2 * C / r**3, u3 + 6 * C / r**4
            return u, u1, u2, u3

        out += _realspace_cubic(
            model.crystal, short, dynamics._short_lattice(model), q, dynamics._short_cutoff(model)
        )
    return out


def moire_third_derivative(model: dynamics.LatticeModel) -> np.ndarray:
    """s_κ ∂_α∂_β∂_γ Δ(τ_κ) (meV/nm³), (n, 2, 2, 2); zero for the harmonic-only potential or none."""
    n = model.crystal.n_sites
    pot = model.potential
    if pot is None or pot.harmonic_only:
        return np.zeros((n, 2, 2, 2))
    ph = (model.crystal.basis + pot.r_min) @ pot.b.T + pot.psi_eff  # (n, 3)
    b = pot.b
    bbb = b[:, :, None, None] * b[:, None, :, None] * b[:, None, None, :]
    return model.scales[:, None, None, None] * 2 * pot.V * np.einsum("kj,jabc->kabc", np.sin(ph), bbb)


def gamma_coupling(model: dynamics.LatticeModel, q: np.ndarray) -> np.ndarray:
    """W_μγ(q) = ∂H(q)/∂τ_μγ at fixed phases (meV/nm³): (n, 2, N_q, 2n, 2n) complex (module docstring)."""
    q = np.atleast_2d(np.asarray(q, dtype=float))
    n = model.crystal.n_sites
    t_all = cubic_force_constant_sums(model, np.concatenate([np.zeros((1, 2)), q]))
    t0, tq = t_all[0], t_all[1:]
    onsite3 = moire_third_derivative(model)
    idx = np.arange(n)
    out = np.zeros((n, 2, len(q), 2 * n, 2 * n), dtype=complex)
    for mu in range(n):  # sublattice directions: 2n matrices, each vectorised over q
        coef = (idx[None, :] == mu).astype(float) - (idx[:, None] == mu).astype(float)  # δ_κ′μ − δ_κμ
        blocks = -coef[None, :, :, None, None, None] * tq  # (Nq, n, n, 2, 2, 2)
        diag = t0[:, mu].copy()  # (n, 2,2,2): T_κμ(0)
        diag[mu] += -t0[mu].sum(axis=0) + onsite3[mu]
        blocks[:, idx, idx] += diag
        for g in range(2):
            out[mu, g] = blocks[..., g].transpose(0, 1, 3, 2, 4).reshape(len(q), 2 * n, 2 * n)
    return out


# ------------------------------------------------------------------ three-phonon decay of Γ modes
#: Valley labels of :func:`valley_labels`.
VALLEYS: tuple[str, ...] = ("Gamma", "K", "K'")


def valley_labels(crystal, q: np.ndarray) -> np.ndarray:
    """(N_q,) int: 0 where q (mod G) is nearest to Γ, 1 nearest to K, 2 nearest to K′ = −K (hexagonal
    cells; K as in :func:`moire_cli.crystals.special_points`). Raises ValueError for other cells."""
    from moire_cli.crystals import special_points

    if not crystal.is_hexagonal:
        raise ValueError("valleys K, K′ are defined for hexagonal cells only")
    pts = special_points(crystal)
    centres = crystal.to_cartesian(np.array([pts["G"], pts["K"], pts["K'"]]))  # (3, 2)
    g = ewald.lattice_points(crystal.reciprocal, 2.5 * float(np.linalg.norm(crystal.reciprocal, axis=1).max()))
    frac = crystal.to_fractional(np.atleast_2d(q))
    qr = crystal.to_cartesian(frac - np.floor(frac + 0.5))
    d = qr[:, None, None, :] - centres[None, :, None, :] - g[None, None, :, :]
    return np.argmin(np.min(np.einsum("qcgi,qcgi->qcg", d, d), axis=2), axis=1)


@dataclass(frozen=True)
class DecayResult:
    """Three-phonon decay of the Γ modes p into (q, s₁) + (−q, s₂) on a full mesh.

    Attributes:
        frequencies: (P,) ħω_p (meV) of the Γ modes (circular basis, as in optics.py).
        temperatures_K: (N_T,).
        rates: (N_T, P) Γ_p in meV (imaginary self-energy; FWHM = 2Γ).
        zone_map: (N_T, P, N_q) the q-resolved Γ_p (Σ over q = rates), product (q, s₁) side.
        product_rates: (N_T, P, 3, 2) product phonons per unit time, by valley (Γ, K, K′) and sign of
            l_z (≥ 0, < 0), in meV (each decay makes two, so the total is 2Γ_p).
        angular_momentum: (N_T, P, 3) Σ (rate × l_z) of the products per valley, in ħ·meV.
        berry_curvature: (N_T, P, 3) Σ (rate × Ω) of the products per valley (nm²·meV), or None.
        two_phonon_min_meV: min over the mesh of ħω₁(q) + ħω₂(−q); energy conservation needs ħω_p above it.
        sigma_meV, mesh_points: broadening and N_q.
    """

    frequencies: np.ndarray
    temperatures_K: np.ndarray
    rates: np.ndarray
    zone_map: np.ndarray
    product_rates: np.ndarray
    angular_momentum: np.ndarray
    berry_curvature: np.ndarray | None
    two_phonon_min_meV: float
    sigma_meV: float
    mesh_points: int

    def valley_fractions(self) -> np.ndarray:
        """(N_T, P, 3) share of the product phonons in Γ, K, K′ (NaN where Γ_p = 0)."""
        tot = self.product_rates.sum(axis=(2, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.product_rates.sum(axis=3) / tot[..., None]

    def summary(self, pumps: dict[str, int] | None = None) -> dict:
        """JSON-ready: rates per mode at each T, the kinematic threshold, per-valley l_z per decay."""
        with np.errstate(invalid="ignore", divide="ignore"):
            lz = self.angular_momentum / self.rates[..., None]
        out = {
            "sigma_meV": self.sigma_meV,
            "mesh_points": self.mesh_points,
            "temperatures_K": self.temperatures_K.tolist(),
            "gamma_frequencies_meV": self.frequencies.tolist(),
            "two_phonon_min_meV": self.two_phonon_min_meV,
            "energy_conservation_possible": bool(np.max(self.frequencies) > self.two_phonon_min_meV),
            "rates_meV": self.rates.tolist(),
            "l_z_per_decay_by_valley_hbar": np.where(np.isfinite(lz), lz, 0.0).tolist(),
            "valleys": list(VALLEYS),
        }
        if pumps:
            out["pumps"] = {k: int(v) for k, v in pumps.items()}
        return out


def three_phonon_decay(
    model: dynamics.LatticeModel,
    q_mesh: np.ndarray,
    gamma_frequencies: np.ndarray,
    gamma_displacements: np.ndarray,
    *,
    omega_c: float,
    temperatures_K: np.ndarray,
    sigma_meV: float,
    berry: bool = False,
) -> DecayResult:
    """Golden-rule decay rates of Γ modes into pairs (q, s₁) + (−q, s₂) (module docstring), all q at once.

    Args:
        model: relaxed :class:`dynamics.LatticeModel`.
        q_mesh: (N_q, 2) a full Γ-centred mesh (closed under q → −q), Cartesian 1/nm.
        gamma_frequencies: (P,) ħω_p (meV) of the decaying Γ modes.
        gamma_displacements: (2n, P) their u_p (meV^-½, symplectic normalisation; optics.GammaOptics).
        omega_c: signed ħω_c (meV).  temperatures_K: (N_T,) ≥ 0.  sigma_meV: Gaussian width > 0.
        berry: also resolve the products' Berry curvature (FHS plaquettes at every q: 5× the modes).

    Raises:
        ValueError: σ ≤ 0; unstable or negative-energy modes on the mesh (no golden rule there).
    """
    from moire_cli.chirality import angular_momentum
    from moire_cli.gyroscopic import gyroscopic_modes
    from moire_cli.thermal_hall import bose_occupation

    if not sigma_meV > 0:
        raise ValueError(f"decay broadening sigma must be positive, got {sigma_meV} meV")
    q = np.atleast_2d(np.asarray(q_mesh, dtype=float))
    d = dynamics.dynamical_matrix(model, q)
    modes = [gyroscopic_modes(d, omega_c), gyroscopic_modes(np.conj(d), omega_c)]  # q and −q (D(−q) = D(q)*)
    for m in modes:
        if not (np.all(m.normalized) and np.all(m.frequencies > 0)):
            raise ValueError(
                "unstable, zero- or negative-energy modes on the mesh: three-phonon rates are undefined"
            )
    (f1, u1), (f2, u2) = [(m.frequencies, m.displacements) for m in modes]
    lz = [angular_momentum(m)[0] for m in modes]
    w_all = gamma_coupling(model, q)  # (n, 2, N_q, 2n, 2n)
    n_dof = 2 * model.crystal.n_sites
    up = np.asarray(gamma_displacements, dtype=complex).reshape(n_dof, -1)
    wp = np.einsum("mp,mqij->pqij", up, w_all.reshape(n_dof, len(q), n_dof, n_dof))  # (P, N_q, 2n, 2n)
    c3 = (HBAR2_OVER_M0_MEV_NM2 / model.mass) ** 1.5
    v3 = c3 * np.conj(u1.swapaxes(1, 2))[None] @ wp @ np.conj(u2)[None]  # (P, N_q, s1, s2) × √N
    x = (np.asarray(gamma_frequencies)[:, None, None, None] - f1[None, :, :, None] - f2[None, :, None, :]) / sigma_meV
    delta = np.where(np.abs(x) <= SIGMA_CUTOFF, np.exp(-0.5 * x**2) / (np.sqrt(2 * np.pi) * sigma_meV), 0.0)
    weight = np.abs(v3) ** 2 * delta  # (P, N_q, s1, s2), meV
    t = np.atleast_1d(np.asarray(temperatures_K, dtype=float))
    occ = 1 + bose_occupation(f1, t)[:, :, :, None] + bose_occupation(f2, t)[:, :, None, :]  # (N_T, N_q, s1, s2)
    weight *= 0.5 * np.pi / len(q)
    side1 = np.einsum("pqab,tqab->tpqa", weight, occ)  # (N_T, P, N_q, 2n): product (q, s₁) side
    side2 = np.einsum("pqab,tqab->tpqb", weight, occ)  # product (−q, s₂) side
    rates = side1.sum(axis=(2, 3))
    valley = valley_labels(model.crystal, q) if model.crystal.is_hexagonal else np.zeros(len(q), dtype=int)
    valley_m = valley_labels(model.crystal, -q) if model.crystal.is_hexagonal else valley
    vq, vm = np.eye(3)[valley], np.eye(3)[valley_m]  # (N_q, 3)
    sq = np.stack([lz[0] >= 0, lz[0] < 0], axis=-1).astype(float)  # (N_q, 2n, 2)
    sm = np.stack([lz[1] >= 0, lz[1] < 0], axis=-1).astype(float)
    products = np.einsum("tpqs,qv,qsl->tpvl", side1, vq, sq) + np.einsum("tpqs,qv,qsl->tpvl", side2, vm, sm)
    ang = np.einsum("tpqs,qv,qs->tpv", side1, vq, lz[0]) + np.einsum("tpqs,qv,qs->tpv", side2, vm, lz[1])
    bc = None
    if berry:
        from moire_cli.topology import berry_curvature_path

        def dfn(k):
            return dynamics.dynamical_matrix(model, k)

        om1, _ = berry_curvature_path(dfn, q, model.crystal.reciprocal, omega_c)
        om2, _ = berry_curvature_path(dfn, -q, model.crystal.reciprocal, omega_c)
        bc = np.einsum("tpqs,qv,qs->tpv", side1, vq, np.nan_to_num(om1)) + np.einsum(
            "tpqs,qv,qs->tpv", side2, vm, np.nan_to_num(om2)
        )
    pair_min = float(np.min(f1[:, :, None] + f2[:, None, :]))
    return DecayResult(
        np.asarray(gamma_frequencies, dtype=float),
        t,
        rates,
        side1.sum(axis=3),
        products,
        ang,
        bc,
        pair_min,
        float(sigma_meV),
        len(q),
    )
