"""Converged lattice sums for a 2D crystal with a basis: energy, forces and force-constant sums
S_κκ'(q) for all q at once.

- The C/r part (Coulomb and the Coulomb tail of Keldysh) by the 2D Ewald method of Bonsall and
  Maradudin, PRB 15, 1959 (1977): 1/r = erfc(ηr)/r (real space) + erf(ηr)/r (reciprocal space,
  2D transform (2π/k)·erfc(k/2η)), with the uniform neutralizing background in the energy.
- Short-ranged remainders by a plain real-space sum over a fixed set of lattice vectors.

Conventions (contract moire.md): S_κκ'(q) = Σ'_l Φ(d) e^{iq·d}, d = R_l + τ_κ' − τ_κ, Φ_αβ = ∂_α∂_βU,
q Cartesian in 1/nm with 2π. The G + q = 0 reciprocal term (non-analytic, ∝ q_αq_β/|q|) vanishes
as q → 0 in 2D and is dropped at exactly q = 0.

Cut-offs (documented, overridable through ``eta``/``tol``): with x = √ln(1/tol) the real-space sum
keeps |R| ≤ x/η + max|τ_κ' − τ_κ| and the reciprocal sum |G + q| ≤ 2xη; the default η = √(π/A)
balances the two (each ≈ x² terms per site pair). Terms dropped are ≲ e^{−x²} = tol relative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from moire_cli.crystals import Crystal

Radial = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]

#: Max elements of a (chunk of q) × (lattice vectors) phase array.
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class EwaldParameters:
    """Splitting parameter η (1/nm) and the cut-offs it implies (nm, 1/nm)."""

    eta: float
    r_cut: float
    g_cut: float


def ewald_parameters(crystal: Crystal, eta: float | None = None, tol: float = 1e-16) -> EwaldParameters:
    """Choose η (default √(π/A)) and the real/reciprocal cut-offs for relative accuracy ``tol``.

    Raises:
        ValueError: eta ≤ 0 or tol outside (0, 1).
    """
    if not 0 < tol < 1:
        raise ValueError(f"Ewald tolerance must be in (0, 1), got {tol}")
    if eta is None:
        eta = float(np.sqrt(np.pi / crystal.area))
    if not eta > 0:
        raise ValueError(f"Ewald eta must be positive, got {eta}")
    x = float(np.sqrt(np.log(1 / tol))) + 0.5
    tau = crystal.basis[None] - crystal.basis[:, None]
    r_cut = x / eta + float(np.linalg.norm(tau, axis=-1).max())
    return EwaldParameters(eta=float(eta), r_cut=r_cut, g_cut=2 * x * eta)


def lattice_points(cell: np.ndarray, r_cut: float) -> np.ndarray:
    """All lattice vectors n1 a1 + n2 a2 with |R| ≤ r_cut, (N_R, 2), including R = 0."""
    cell = np.asarray(cell, dtype=float)
    # |n_i| ≤ r_cut·|b_i|/2π bounds every point inside the disc
    recip = np.linalg.inv(cell).T
    nmax = np.ceil(r_cut * np.linalg.norm(recip, axis=1)).astype(int) + 1
    n1, n2 = np.meshgrid(np.arange(-nmax[0], nmax[0] + 1), np.arange(-nmax[1], nmax[1] + 1), indexing="ij")
    pts = np.stack([n1.ravel(), n2.ravel()], axis=1) @ cell
    return pts[np.einsum("ij,ij->i", pts, pts) <= r_cut**2]


def _pair_vectors(
    crystal: Crystal, lattice: np.ndarray, r_cut: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """d = R_l + τ_κ' − τ_κ (n, n, N_R, 2) and a mask of 0 < |d| ≤ r_cut.

    The cut-off is on the pair distance |d| (a disc centred on each site, so the truncated sum
    keeps the site symmetry); ``lattice`` must cover r_cut + max|τ_κ' − τ_κ|.
    """
    tau = crystal.basis[None, :, :] - crystal.basis[:, None, :]  # [κ, κ'] = τ_κ' − τ_κ
    d = lattice[None, None] + tau[:, :, None]
    r2 = np.einsum("...i,...i->...", d, d)
    mask = r2 > 1e-20 * crystal.area
    if r_cut is not None:
        mask &= r2 <= r_cut**2
    return d, mask


# ------------------------------------------------------------------ generic real-space sums
def realspace_energy(crystal: Crystal, radial: Radial, lattice: np.ndarray, r_cut: float | None = None) -> float:
    """½ Σ_κκ' Σ'_l U(|R_l + τ_κ' − τ_κ|) (meV per cell) over the given lattice vectors, |d| ≤ r_cut."""
    d, mask = _pair_vectors(crystal, lattice, r_cut)
    r = np.linalg.norm(d[mask], axis=-1)
    return 0.5 * float(radial(r)[0].sum())


def realspace_forces(crystal: Crystal, radial: Radial, lattice: np.ndarray, r_cut: float | None = None) -> np.ndarray:
    """F_κ = Σ_κ' Σ'_l U′(r) d̂ (meV/nm), (n, 2), |d| ≤ r_cut."""
    d, mask = _pair_vectors(crystal, lattice, r_cut)
    r = np.linalg.norm(np.where(mask[..., None], d, 1.0), axis=-1)
    u1 = np.where(mask, radial(r)[1], 0.0)
    return np.einsum("ijr,ijra->ia", u1 / r, d)


def realspace_force_constants(
    crystal: Crystal, radial: Radial, lattice: np.ndarray, q: np.ndarray, r_cut: float | None = None
) -> np.ndarray:
    """S_κκ'(q) = Σ'_l Φ(d) e^{iq·d} (meV/nm²), (N_q, n, n, 2, 2) complex, |d| ≤ r_cut.

    Done as e^{iq·τ} × [e^{iq·R} (N_q, N_R) @ Φ (N_R, n·n·4)], chunked over q for memory.
    """
    q = np.atleast_2d(np.asarray(q, dtype=float))
    n = crystal.n_sites
    d, mask = _pair_vectors(crystal, lattice, r_cut)
    r = np.linalg.norm(np.where(mask[..., None], d, 1.0), axis=-1)
    _, u1, u2 = radial(r)
    u1 = np.where(mask, u1, 0.0)
    u2 = np.where(mask, u2, 0.0)
    rr = d[..., :, None] * d[..., None, :] / (r**2)[..., None, None]
    phi = u2[..., None, None] * rr + (u1 / r)[..., None, None] * (np.eye(2) - rr)  # (n,n,N_R,2,2)
    phi_mat = np.moveaxis(phi, 2, 0).reshape(len(lattice), n * n * 4)
    tau = crystal.basis[None, :, :] - crystal.basis[:, None, :]
    out = np.empty((len(q), n, n, 2, 2), dtype=complex)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(lattice)))
    for s in range(0, len(q), step):  # chunks of q (memory), not a per-q loop
        qc = q[s : s + step]
        ph = qc @ lattice.T
        blk = ((np.cos(ph) @ phi_mat) + 1j * (np.sin(ph) @ phi_mat)).reshape(len(qc), n, n, 2, 2)
        out[s : s + step] = blk * np.exp(1j * np.einsum("qa,ija->qij", qc, tau))[..., None, None]
    return out


# ------------------------------------------------------------------ Ewald: C/r
def _erfc_over_r(C: float, eta: float) -> Radial:
    def radial(r):
        r = np.asarray(r, dtype=float)
        g = special.erfc(eta * r)
        ex = (2 * eta / np.sqrt(np.pi)) * np.exp(-((eta * r) ** 2))
        u = C * g / r
        u1 = -C * (g / r**2 + ex / r)
        u2 = C * (2 * g / r**3 + ex * (2 / r**2 + 2 * eta**2))
        return u, u1, u2

    return radial


def _reciprocal_vectors(crystal: Crystal, g_cut: float, include_zero: bool = False) -> np.ndarray:
    g = lattice_points(crystal.reciprocal, g_cut)
    return g if include_zero else g[np.einsum("ij,ij->i", g, g) > 0]


def coulomb_energy(crystal: Crystal, C: float, eta: float | None = None, tol: float = 1e-16) -> float:
    """Ewald energy per cell of C/r with a neutralizing background (meV):
    ½ΣΣ' C erfc(ηr)/r + (πC/A) Σ_{G≠0} erfc(G/2η)/G |Σ_κ e^{iG·τ_κ}|² − N C η/√π − N² √π C/(A η)
    (Bonsall & Maradudin 1977, Eqs. 2.x in 2D form)."""
    p = ewald_parameters(crystal, eta, tol)
    lat = lattice_points(crystal.cell, p.r_cut)
    e_real = realspace_energy(crystal, _erfc_over_r(C, p.eta), lat)
    g = _reciprocal_vectors(crystal, p.g_cut)
    gn = np.linalg.norm(g, axis=1)
    s = np.exp(1j * crystal.basis @ g.T).sum(0)
    e_rec = np.pi * C / crystal.area * float((special.erfc(gn / (2 * p.eta)) / gn * np.abs(s) ** 2).sum())
    n = crystal.n_sites
    e_self = -n * C * p.eta / np.sqrt(np.pi)
    e_bg = -(n**2) * np.sqrt(np.pi) * C / (crystal.area * p.eta)
    return e_real + e_rec + e_self + e_bg


def coulomb_forces(crystal: Crystal, C: float, eta: float | None = None, tol: float = 1e-16) -> np.ndarray:
    """Ewald forces −∂E/∂τ_κ of C/r (meV/nm), (n, 2)."""
    p = ewald_parameters(crystal, eta, tol)
    lat = lattice_points(crystal.cell, p.r_cut)
    f = realspace_forces(crystal, _erfc_over_r(C, p.eta), lat)
    g = _reciprocal_vectors(crystal, p.g_cut)
    gn = np.linalg.norm(g, axis=1)
    e = np.exp(1j * crystal.basis @ g.T)  # (n, N_G)
    s = e.sum(0)
    w = special.erfc(gn / (2 * p.eta)) / gn * np.imag(np.conj(s)[None] * e)  # (n, N_G)
    return f + 2 * np.pi * C / crystal.area * (w @ g)


def coulomb_force_constants(
    crystal: Crystal, C: float, q: np.ndarray, eta: float | None = None, tol: float = 1e-16
) -> np.ndarray:
    """S_κκ'(q) of C/r for all q (meV/nm²), (N_q, n, n, 2, 2) complex.

    Real space: Σ'_l Φ[C erfc(ηr)/r](d) e^{iq·d}. Reciprocal (Poisson summation):
    −(2πC/A) Σ_G (k_αk_β/|k|) erfc(|k|/2η) e^{−iG·(τ_κ'−τ_κ)}, k = q + G ≠ 0, plus the self term
    +(4Cη³/3√π) δ_αβ on κ = κ'.
    """
    q = np.atleast_2d(np.asarray(q, dtype=float))
    p = ewald_parameters(crystal, eta, tol)
    lat = lattice_points(crystal.cell, p.r_cut)
    out = realspace_force_constants(crystal, _erfc_over_r(C, p.eta), lat, q)
    # fold q = q_red + G0 with fractional q_red in [-½, ½): Σ_G f(q+G) e^{−iG·τ} = e^{iG0·τ} Σ_G f(q_red+G) e^{−iG·τ}
    frac = crystal.to_fractional(q)
    g0 = crystal.to_cartesian(np.floor(frac + 0.5))
    q_red = q - g0
    qmax = float(np.linalg.norm(q_red, axis=1).max()) if len(q) else 0.0
    g = _reciprocal_vectors(crystal, p.g_cut + qmax, include_zero=True)
    n = crystal.n_sites
    tau = crystal.basis[None, :, :] - crystal.basis[:, None, :]
    eg = np.exp(-1j * np.einsum("ga,ija->gij", g, tau)).reshape(len(g), n * n)  # (N_G, n²)
    fold = np.exp(1j * np.einsum("qa,ija->qij", g0, tau))[..., None, None]  # (N_q, n, n, 1, 1)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(g)))
    eg_ri = np.concatenate([eg.real, eg.imag], axis=1)  # (N_G, 2n²) real
    pref = -(2 * np.pi * C / crystal.area)
    for s in range(0, len(q), step):  # chunks of q (memory)
        kx = q_red[s : s + step, 0, None] + g[None, :, 0]  # (Nq, NG)
        ky = q_red[s : s + step, 1, None] + g[None, :, 1]
        kn = np.sqrt(kx * kx + ky * ky)
        ok = kn > 1e-12 * p.eta
        kn_safe = np.where(ok, kn, 1.0)
        w = np.where(ok, special.erfc(kn_safe / (2 * p.eta)) / kn_safe, 0.0)
        kxw, kyw = kx * w, ky * w
        comp = np.stack([kxw * kx, kxw * ky, kyw * ky])  # xx, xy, yy: (3, Nq, NG)
        prod = (comp.reshape(-1, len(g)) @ eg_ri).reshape(3, len(kx), 2, n * n)
        prod = (prod[:, :, 0] + 1j * prod[:, :, 1]).reshape(3, len(kx), n, n)
        rec = np.stack([np.stack([prod[0], prod[1]], -1), np.stack([prod[1], prod[2]], -1)], -2)
        out[s : s + step] += pref * rec * fold[s : s + step]
    self_term = 4 * C * p.eta**3 / (3 * np.sqrt(np.pi))
    idx = np.arange(n)
    out[:, idx, idx] += self_term * np.eye(2)
    return out
