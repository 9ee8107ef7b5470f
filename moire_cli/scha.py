"""Self-consistent harmonic approximation (SCHA) of pinned and free 2D crystals (spec §12, `melt.method:
self-consistent`).

The harmonic force constants are replaced by their average over the Gaussian fluctuations of the
current phonons, and the phonons recomputed, until the two agree (the self-consistent phonon theory
of Born, Hooton, Werthamer; N. R. Werthamer, Phys. Rev. B 1, 572 (1970); the variational form of
the Gaussian trial density matrix). Iterated at every temperature of a sweep, all points at once.

Moiré potential (exact Gaussian average). With C_κ = ⟨u_κ u_κᵀ⟩ (nm², thermal, coth included) the
on-site Hessian becomes s_κ ∂²⟨Δ⟩ = −2V s_κ Σ_j b_j b_jᵀ cos(b_j·τ_κ + ψ) exp(−½ b_jᵀ C_κ b_j).

Pair interactions (the average taken). Bonds of the first ``pair_shells`` distance shells
(default 1, the nearest neighbours) get Φ_eff(δ) = ⟨Φ(δ + w)⟩ over the Gaussian relative displacement
w = u_κ − u_κ′(R), covariance C_b = ⟨w wᵀ⟩, by a 3×3-point Gauss–Hermite rule in the principal
axes of C_b. The rule is exact for the Taylor terms of Φ up to fifth order, so it gives the
leading fluctuation correction ½ C_b : ∇∇Φ exactly; it does not resolve the contact singularity
(the exact Gaussian average of a 1/r³ force constant diverges in 2D, a known limit of SCHA for
Coulomb crystals), and a node closer than a tenth of the bond to contact is reported as no
solution. All farther bonds, and the Ewald long-range part, keep their harmonic force constants.
The acoustic sum rule is kept (each bond correction enters the on-site block too). Sites stay at
their classical equilibrium (exact by symmetry for sites on moiré lattice points, i.e. every
built-in crystal except the relaxed zigzag stripe, where it is an approximation).

Self-consistency: plain fixed-point iteration from the harmonic phonons on C_κ and C_b (relative
change < ``tol``). More fluctuation softens the potential, which gives more fluctuation: above a
temperature T* the iteration runs away (the lowest self-consistent ħω² falls below 1e-8 of the
harmonic one, or no convergence in ``max_iter``): no self-consistent solution, the crystal is
unstable in this approximation (the pinned crystal depins). T* is reported beside the Lindemann T_m
as a second melting criterion; it is located by bisection to ``t_rtol`` (relative), a little low
close to T* where the iteration slows down (critical slowing down of the fixed point).

Units: ħω meV, ħ²D meV², m in m₀, lengths nm, T K. Constants from `moire_cli.units`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moire_cli import lindemann
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2, K_B_MEV_PER_K

METHOD = "self-consistent"
#: Gauss–Hermite (probabilists') 3-point rule: nodes in units of σ, weights.
_GH_NODES = np.array([-np.sqrt(3.0), 0.0, np.sqrt(3.0)])
_GH_WEIGHTS = np.array([1 / 6, 2 / 3, 1 / 6])
#: Most complex elements of one (batch chunk, q, 2n, 2n) work array.
_MAX_ELEMENTS = 3_000_000
#: ħω² below this fraction of the harmonic minimum counts as a collapse (no solution).
_COLLAPSE = 1e-8


def bonds_within_shells(cell: np.ndarray, basis: np.ndarray, shells: int, rtol: float = 1e-6):
    """Directed bonds (κ, κ′, δ = R + τ_κ′ − τ_κ) of the first ``shells`` distinct distances.

    Returns:
        (kappa (P,), kappa_prime (P,), delta (P, 2) nm). P = 0 for shells = 0.
    """
    cell = np.asarray(cell, dtype=float)
    basis = np.asarray(basis, dtype=float)
    rng = np.arange(-4, 5)
    n1, n2 = np.meshgrid(rng, rng, indexing="ij")
    lat = n1.ravel()[:, None] * cell[0] + n2.ravel()[:, None] * cell[1]
    delta = lat[None, None] + basis[None, :, None] - basis[:, None, None]  # (κ, κ′, L, 2)
    dist = np.linalg.norm(delta, axis=-1)
    dist = np.where(dist > 1e-9 * np.abs(cell).max(), dist, np.inf)
    radii: list[float] = []
    for r in np.sort(dist[np.isfinite(dist)]):
        if len(radii) == shells:
            break
        if not radii or r > radii[-1] * (1 + rtol):
            radii.append(float(r))
    if not radii:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 2))
    k, kp, ll = np.nonzero(dist <= radii[-1] * (1 + rtol))
    return k, kp, delta[k, kp, ll]


@dataclass(frozen=True, eq=False)
class _Stack:
    """Sweep points with the same structure (sites, mesh size, bonds), stacked on a leading axis P."""

    models: tuple
    d_harm: np.ndarray  # (P, N_q, 2n, 2n) ħ²D meV² on the time-reversal representatives
    phase: np.ndarray  # (P, N_q, P_b) e^{iq·δ_b}
    q_weight: np.ndarray  # (N_q,) multiplicity / total
    cos_moire: np.ndarray  # (P, n, 3) s_κ cos(b_j·τ_κ + ψ); 0 without a full moiré potential
    b: np.ndarray  # (P, 3, 2) moiré reciprocal vectors 1/nm
    V: np.ndarray  # (P,) meV
    mass: np.ndarray  # (P,) m₀
    kappa: np.ndarray  # (P_b,)
    kappa_prime: np.ndarray  # (P_b,)
    delta: np.ndarray  # (P, P_b, 2) nm
    smeared: np.ndarray  # (P_b,) bool: bond in the first pair_shells shells
    nearest: np.ndarray  # (P_b,) bool: nearest-neighbour bond
    zero_tol: np.ndarray  # (P,) meV
    w2_min: np.ndarray  # (P,) lowest positive harmonic ħ²ω² (meV²)
    groups: tuple  # ((interaction, point indices), ...)


def _prepare(model, n_mesh: int, pair_shells: int) -> dict:
    from moire_cli import crystals, dynamics

    cr = model.crystal
    q_full = crystals.monkhorst_pack(cr, (n_mesh, n_mesh))
    rep = dynamics.time_reversal_representatives(cr, q_full)[0]
    todo, counts = np.unique(rep, return_counts=True)  # q and −q (mod G): one D, weight 2
    q = q_full[todo]
    d = dynamics.dynamical_matrix(model, q)
    w2 = np.linalg.eigvalsh(d)
    tol = 1e-5 * float(np.sqrt(np.abs(w2).max()))
    pot = model.potential
    if pot is None or pot.harmonic_only:  # no potential, or a constant Hessian (the average is exact)
        cosm, b, v = np.zeros((cr.n_sites, 3)), np.zeros((3, 2)), 0.0
    else:
        cosm = model.scales[:, None] * np.cos((cr.basis + pot.r_min) @ pot.b.T + pot.psi_eff)
        b, v = pot.b, pot.V
    kap, kap_p, delta = bonds_within_shells(cr.cell, cr.basis, max(1, pair_shells))
    r = np.linalg.norm(delta, axis=-1)
    shell = np.searchsorted(np.unique(np.round(r / r.min(), 6)), np.round(r / r.min(), 6))
    pos = w2[w2 > tol**2]
    return dict(
        model=model, d=d, phase=np.exp(1j * q @ delta.T), qw=counts / counts.sum(), cosm=cosm, b=b, V=v,
        kap=kap, kap_p=kap_p, delta=delta, smeared=shell < pair_shells, nearest=shell == 0,
        tol=tol, w2min=float(pos.min()) if pos.size else 1.0,
        key=(cr.n_sites, len(q), tuple(kap), tuple(kap_p), tuple(shell < pair_shells)),
    )


def _stacks(models: Sequence, n_mesh: int, pair_shells: int) -> list[tuple[np.ndarray, _Stack]]:
    """Group the sweep points by structure and stack each group: [(point indices, _Stack)]."""
    prepared = [_prepare(m, n_mesh, pair_shells) for m in models]  # one batched phonon call per point
    keys: dict = {}
    for i, p in enumerate(prepared):
        keys.setdefault(p["key"], []).append(i)
    out = []
    for idx in keys.values():
        ps = [prepared[i] for i in idx]
        groups: dict = {}
        for j, p in enumerate(ps):
            groups.setdefault(p["model"].interaction, []).append(j)
        out.append((np.array(idx), _Stack(
            models=tuple(p["model"] for p in ps), d_harm=np.stack([p["d"] for p in ps]),
            phase=np.stack([p["phase"] for p in ps]), q_weight=ps[0]["qw"], cos_moire=np.stack([p["cosm"] for p in ps]),
            b=np.stack([p["b"] for p in ps]), V=np.array([p["V"] for p in ps]),
            mass=np.array([p["model"].mass for p in ps]), kappa=ps[0]["kap"], kappa_prime=ps[0]["kap_p"],
            delta=np.stack([p["delta"] for p in ps]), smeared=ps[0]["smeared"], nearest=ps[0]["nearest"],
            zero_tol=np.array([p["tol"] for p in ps]),
            w2_min=np.array([p["w2min"] for p in ps]),
            groups=tuple((_table(k, [ps[j]["delta"] for j in v]), np.array(v)) for k, v in groups.items()),
        )))
    return out


def _table(interaction, deltas: list) -> _TabulatedForceConstants:
    r = np.linalg.norm(np.concatenate(deltas), axis=-1)
    return _TabulatedForceConstants(interaction, 0.05 * float(r.min()), 4.0 * float(r.max()))


def _thermal_factor(w2: np.ndarray, temps: np.ndarray, zero_tol: np.ndarray) -> np.ndarray:
    """coth(ħω/2k_BT)/ħω (1/meV) from ħ²ω² (b, ...) and T, zero_tol (b,); 0 for zero and imaginary modes."""
    w = np.sqrt(np.abs(w2))
    shape = (-1,) + (1,) * (w2.ndim - 1)
    t = np.asarray(temps, dtype=float).reshape(shape)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        f = (1.0 + 2.0 / np.expm1(w / (K_B_MEV_PER_K * t))) / w
    return np.where((w2 > 0) & (w >= zero_tol.reshape(shape)), f, 0.0)


def _fluctuation_matrix(d: np.ndarray, temps: np.ndarray, zero_tol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G(q) = Σ_s f_s e_s e_s† with f = coth(ħω/2k_BT)/ħω (1/meV), and the lowest ħ²ω² per batch entry.

    d: (b, N_q, 2n, 2n) Hermitian ħ²D; temps, zero_tol (b,). Closed form for 2×2 (one site per
    cell): G = f(λ₋) I + [f(λ₊) − f(λ₋)]/(λ₊ − λ₋) (M − λ₋ I); batched `eigh` otherwise.
    """
    if d.shape[-1] == 2:
        a, c, dd = d[..., 0, 0].real, d[..., 0, 1], d[..., 1, 1].real
        half = np.sqrt(0.25 * (a - dd) ** 2 + np.abs(c) ** 2)
        mid = 0.5 * (a + dd)
        lo = mid - half
        f = _thermal_factor(np.stack([lo, mid + half], axis=-1), temps, zero_tol)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(half > 0, (f[..., 1] - f[..., 0]) / (2 * half), 0.0)
        g = np.empty(d.shape, dtype=complex)
        g[..., 0, 0] = f[..., 0] + slope * (a - lo)
        g[..., 1, 1] = f[..., 0] + slope * (dd - lo)
        g[..., 0, 1] = slope * c
        g[..., 1, 0] = slope * np.conj(c)
        return g, lo.min(axis=-1)
    w2, e = np.linalg.eigh(d)
    f = _thermal_factor(w2, temps, zero_tol)
    return (e * f[..., None, :]) @ np.conj(np.swapaxes(e, -1, -2)), w2.min(axis=(-2, -1))


class _TabulatedForceConstants:
    """Φ(d) of an interaction from cubic splines of U′(r)/r and U″(r) on a geometric grid over
    [r_lo, r_hi] (the bond lengths the Gauss–Hermite nodes reach), the interaction's own `radial`
    outside. Built once per sweep group; the grid is doubled until the midpoints agree to 1e-10
    relative (special functions such as Struve H₀ cost ~µs per value, the spline ~ns)."""

    def __init__(self, interaction, r_lo: float, r_hi: float):
        from scipy.interpolate import CubicSpline

        self.interaction, self.r_lo, self.r_hi = interaction, r_lo, r_hi
        for n in (1024, 4096, 16384, 65536):
            r = np.geomspace(r_lo, r_hi, n)
            _, u1, u2 = interaction.radial(r)
            spl = CubicSpline(np.log(r), np.stack([u1 / r, u2], axis=-1))
            rm = np.sqrt(r[1:] * r[:-1])
            _, m1, m2 = interaction.radial(rm)
            got = spl(np.log(rm))
            ref = np.stack([m1 / rm, m2], axis=-1)
            if np.abs(got - ref).max() <= 1e-10 * np.abs(ref).max():
                break
        self.spline = spl

    def __call__(self, d: np.ndarray) -> np.ndarray:
        r = np.linalg.norm(d, axis=-1)
        inside = (r >= self.r_lo) & (r <= self.r_hi)
        v = self.spline(np.log(np.clip(r, self.r_lo, self.r_hi)))
        u1r, u2 = v[..., 0], v[..., 1]
        if not inside.all():
            _, o1, o2 = self.interaction.radial(r[~inside])
            u1r[~inside], u2[~inside] = o1 / r[~inside], o2
        rr = d[..., :, None] * d[..., None, :] / (r**2)[..., None, None]
        return u2[..., None, None] * rr + u1r[..., None, None] * (np.eye(2) - rr)


def _pair_average(st: _Stack, p: np.ndarray, c_bond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """⟨Φ(δ + w)⟩ − Φ(δ) over w ~ N(0, C_b) by the 3×3 Gauss–Hermite rule for the smeared bonds:
    (b, P_b, 2, 2) meV/nm² (0 for the others), and a (b,) flag: a node within δ/10 of contact."""
    delta = st.delta[p]  # (b, P_b, 2)
    lam, vec = np.linalg.eigh(c_bond)
    sd = np.sqrt(np.clip(lam, 0.0, None))
    z = np.stack(np.meshgrid(_GH_NODES, _GH_NODES, indexing="ij"), axis=-1).reshape(9, 2)
    wts = np.outer(_GH_WEIGHTS, _GH_WEIGHTS).ravel()
    pos = delta[:, :, None, :] + np.einsum("bpij,bpkj->bpki", vec, z[None, None] * sd[:, :, None, :])
    r_bond = np.linalg.norm(delta, axis=-1)[:, :, None]
    close = ((np.linalg.norm(pos, axis=-1) < 0.1 * r_bond) & st.smeared[None, :, None]).any(axis=(1, 2))
    pos = np.where(close[:, None, None, None] | ~st.smeared[None, :, None, None], delta[:, :, None, :], pos)
    out = np.zeros(c_bond.shape)
    for table, members in st.groups:  # sweep points sharing one pair interaction
        sel = np.isin(p, members)
        if sel.any():
            phi = table(pos[sel])  # (b', P_b, 9, 2, 2)
            out[sel] = np.einsum("k,bpkxy->bpxy", wts, phi) - table(delta[sel])
    return out * st.smeared[None, :, None, None], close


def _map(st: _Stack, p: np.ndarray, temps: np.ndarray, c_site: np.ndarray, c_bond: np.ndarray):
    """One SCHA step for batch entries (point p (b,), temperature (b,)): (C_site (b, n, 2, 2),
    C_bond (b, P_b, 2, 2)) nm² -> the same from the phonons of the averaged force constants, the
    (b,) lowest ħ²ω² (meV²) and the (b,) flag of an uncontrolled pair average."""
    n = st.cos_moire.shape[1]
    nb, nq = len(p), st.d_harm.shape[1]
    corr = np.zeros((nb, n, n, 2, 2), dtype=complex)
    b = st.b[p]  # (b, 3, 2)
    gauss = np.exp(-0.5 * np.einsum("bjx,bkxy,bjy->bkj", b, c_site, b))  # exp(−½ b_jᵀ C_κ b_j)
    onsite = -2 * np.einsum("b,bkj,bkj,bjx,bjy->bkxy", st.V[p], st.cos_moire[p], gauss - 1.0, b, b)
    corr[:, np.arange(n), np.arange(n)] += onsite
    kap, kap_p = st.kappa, st.kappa_prime
    dphi, close = _pair_average(st, p, c_bond)  # (b, P_b, 2, 2)
    np.add.at(corr, (slice(None), kap, kap), dphi)  # acoustic sum rule: Σ S(0) on the diagonal
    onehot = np.zeros((len(kap), n, n))
    onehot[np.arange(len(kap)), kap, kap_p] = 1.0
    phase = st.phase[p]  # (b, N_q, P_b)
    bond_blocks = np.einsum("pkl,bpxy->bpkxly", onehot, dphi).reshape(nb, len(kap), 4 * n * n)
    h = corr.transpose(0, 1, 3, 2, 4).reshape(nb, 1, 4 * n * n) - phase @ bond_blocks  # Σ_b ΔΦ_b e^{iq·δ_b}
    h *= (HBAR2_OVER_M0_MEV_NM2 / st.mass[p])[:, None, None]
    d = np.add(st.d_harm[p], h.reshape(nb, nq, 2 * n, 2 * n))  # Hermitian: bonds come in ±δ pairs
    g, w2min = _fluctuation_matrix(d, temps, st.zero_tol[p])
    g = g.reshape(nb, nq, 4 * n * n) * (st.q_weight[None, :, None] * (HBAR2_OVER_M0_MEV_NM2 / (2 * st.mass[p]))[:, None, None])
    local = g.sum(axis=1).reshape(nb, n, 2, n, 2)  # Σ_q G(q)
    new_site = local[:, np.arange(n), :, np.arange(n), :].real.transpose(1, 0, 2, 3)  # (b, n, 2, 2)
    cross = (np.conj(np.swapaxes(phase, 1, 2)) @ g).reshape(nb, len(kap), n, 2, n, 2)  # Σ_q G(q) e^{−iq·δ_b}
    pb = np.arange(len(kap))
    gkp = cross[:, pb, kap, :, kap_p, :]  # (P_b, b, 2, 2): advanced indices first
    ww = local[:, kap, :, kap, :] + local[:, kap_p, :, kap_p, :] - gkp - np.conj(np.swapaxes(gkp, -1, -2))
    new_bond = np.moveaxis(ww.real, 0, 1)  # ⟨(u_κ − u_κ′(R))(…)ᵀ⟩ (b, P_b, 2, 2)
    return new_site, new_bond, w2min, close


def _solve(st: _Stack, p: np.ndarray, temps: np.ndarray, start: tuple | None, tol: float, max_iter: int,
           depth: int = 5):
    """Self-consistency for batch entries (p (b,), T (b,)): the fixed-point map accelerated by Anderson
    mixing of depth ``depth`` (Walker & Ni, SIAM J. Numer. Anal. 49, 1715 (2011)), all entries at
    once (chunked for memory only); an extrapolated state that is not a covariance (not positive
    semidefinite) falls back to the plain step.

    Args:
        start: (C_site, C_bond) to start from, or None (the harmonic fluctuations).

    Returns:
        (C_site (b, n, 2, 2), C_bond (b, P_b, 2, 2)) nm², NaN where no solution; solution (b,) bool;
        iterations (b,) int.
    """
    p = np.asarray(p, dtype=int)
    temps = np.asarray(temps, dtype=float)
    n, n_b, nb = st.cos_moire.shape[1], len(st.kappa), len(p)
    chunk = max(1, _MAX_ELEMENTS // max(1, st.d_harm.shape[1] * (2 * n) ** 2 * max(1, n_b // 2)))
    split = 4 * n

    def g_map(idx, x):  # idx: batch entries; x (len(idx), 4n + 4P_b) aligned with idx
        cs, cb = x[:, :split].reshape(-1, n, 2, 2), x[:, split:].reshape(-1, n_b, 2, 2)
        parts = [_map(st, p[idx[s : s + chunk]], temps[idx[s : s + chunk]], cs[s : s + chunk], cb[s : s + chunk])
                 for s in range(0, len(idx), chunk)]
        ns, nbd, w2, close = (np.concatenate(v) for v in zip(*parts, strict=True))
        bad = (w2 < _COLLAPSE * st.w2_min[p[idx]]) | close
        return np.concatenate([ns.reshape(len(idx), -1), nbd.reshape(len(idx), -1)], axis=1), bad

    def is_covariance(x):
        m = x.reshape(len(x), -1, 2, 2)
        tr = m[..., 0, 0] + m[..., 1, 1]
        det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
        psd = (m[..., 0, 0] >= 0) & (m[..., 1, 1] >= 0) & (det >= -1e-12 * tr**2)
        return np.all(psd, axis=1) & np.all(np.isfinite(x), axis=1)

    everyone = np.arange(nb)
    if start is None:
        x, _ = g_map(everyone, np.zeros((nb, 4 * n + 4 * n_b)))  # the harmonic fluctuations
    else:
        x = np.concatenate([np.reshape(start[0], (nb, -1)), np.reshape(start[1], (nb, -1))], axis=1).astype(float)
    ok = np.zeros(nb, dtype=bool)
    its = np.full(nb, max_iter)
    active = everyone
    d_f: list[np.ndarray] = []  # Anderson histories, full batch rows (only the active rows are used)
    d_g: list[np.ndarray] = []
    f_prev, g_prev = np.zeros_like(x), np.zeros_like(x)
    extrapolated = np.zeros(nb, dtype=bool)  # x came from an Anderson step (a collapse there is not final)
    for it in range(1, max_iter + 1):
        if not active.size:
            break
        g, bad = g_map(active, x[active])
        f = g - x[active]
        scale = np.abs(g).max(axis=1)
        bad |= ~np.isfinite(scale)
        retry = bad & extrapolated[active]  # go back to the last plain image, take a plain step
        bad &= ~retry
        done = (np.abs(f).max(axis=1) <= tol * scale) & ~bad & ~retry
        g = np.where(retry[:, None], g_prev[active], g)
        f = np.where(retry[:, None], f_prev[active], f)
        if it > 1:
            df, dg = np.zeros_like(x), np.zeros_like(x)
            df[active], dg[active] = f - f_prev[active], g - g_prev[active]
            d_f, d_g = (d_f + [df])[-depth:], (d_g + [dg])[-depth:]
        f_prev[active], g_prev[active] = f, g
        new = g
        extrapolated[active] = False
        if d_f and depth:
            a = np.stack([h[active] for h in d_f], axis=-1)  # (b, k, m)
            ata = np.einsum("bkm,bkl->bml", a, a)
            eye = np.eye(len(d_f))
            reg = (1e-12 * np.trace(ata, axis1=1, axis2=2) + 1e-300)[:, None, None] * eye
            gamma = np.linalg.solve(ata + reg, np.einsum("bkm,bk->bm", a, f)[..., None])[..., 0]
            cand = g - np.einsum("bkm,bm->bk", np.stack([h[active] for h in d_g], axis=-1), gamma)
            use = is_covariance(cand) & ~retry
            new = np.where(use[:, None], cand, g)
            extrapolated[active] = use
        x[active] = np.where(done[:, None], g, new)
        ok[active[done]] = True
        its[active[done | bad]] = it
        active = active[~done & ~bad]
    x[~ok] = np.nan
    return x[:, :split].reshape(nb, n, 2, 2), x[:, split:].reshape(nb, n_b, 2, 2), ok, its


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SCHASweepResult:
    """Self-consistent phonons of a sweep of P lattice models on N_T temperatures.

    Attributes:
        temperatures: (N_T,) K.
        lindemann_ratio: (P, N_T) single-site L(T) from the self-consistent phonons; NaN where there
            is no self-consistent solution, and at T > 0 for unpinned crystals (diverges).
        relative_lindemann_ratio: (P, N_T) L_rel = √(⟨|u_i − u_j|²⟩/2)/a (largest nearest-neighbour bond).
        mean_square_displacement: (P, N_T) ⟨u²⟩ nm² (largest site).
        solution: (P, N_T) bool, a self-consistent solution was found.
        iterations: (P, N_T) fixed-point iterations used.
        lindemann_ratio_zero: (P,) L(0) (single-site; NaN if no solution at T = 0).
        melting_temperature: (P,) K, L(T_m) = L_c on the self-consistent phonons; NaN when quantum
            melted, without a solution at T = 0, or when L stays below L_c up to T*; +inf above t_max.
        instability_temperature: (P,) K, T*: the lowest temperature without a self-consistent
            solution (0: none even at T = 0; +inf: solutions up to t_max). Located to ``t_rtol``.
        quantum_melted: (P,) L(0) ≥ L_c.  criterion: (P,) "single-site" or "relative" (as in
            `melt_sweep.melt_sweep`).  pinned: (P,) bool.  lindemann_critical: (P,).
        mesh: n of the n×n Monkhorst–Pack mesh.  pair_shells: bond shells smeared.  models: (relaxed).
    """

    temperatures: np.ndarray
    lindemann_ratio: np.ndarray
    relative_lindemann_ratio: np.ndarray
    mean_square_displacement: np.ndarray
    solution: np.ndarray
    iterations: np.ndarray
    lindemann_ratio_zero: np.ndarray
    melting_temperature: np.ndarray
    instability_temperature: np.ndarray
    quantum_melted: np.ndarray
    criterion: np.ndarray
    pinned: np.ndarray
    lindemann_critical: np.ndarray
    mesh: int
    pair_shells: int
    models: tuple
    method: str = METHOD


def _ratios(st: _Stack, p: np.ndarray, c_site: np.ndarray, c_bond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(single-site L², relative L²) per batch entry from the covariances."""
    a2 = np.array([st.models[i].crystal.nearest_neighbour_distance for i in range(len(st.models))])[p] ** 2
    site = np.trace(c_site, axis1=-2, axis2=-1).max(axis=-1) / a2
    rel = (np.trace(c_bond, axis1=-2, axis2=-1) * st.nearest).max(axis=-1) / (2 * a2)
    return site, rel


def scha_sweep(
    models: Sequence,
    lindemann_critical: float | np.ndarray,
    temperatures: np.ndarray,
    mesh: int = 24,
    pair_shells: int = 1,
    relax: bool = True,
    t_max: float = 1e4,
    tol: float = 1e-9,
    max_iter: int = 60,
    t_rtol: float = 1e-3,
) -> SCHASweepResult:
    """Self-consistent harmonic phonons, L(T), the Lindemann T_m and the instability T* for a sweep.

    Args:
        models: P `dynamics.LatticeModel`s (same number of sites).
        lindemann_critical: L_c, scalar or (P,).
        temperatures: (N_T,) K ≥ 0.
        mesh: n of the Γ-centred n×n mesh (all q at once; time-reversal pairs counted once).
        pair_shells: nearest-distance shells whose force constants are averaged (0: pair harmonic).
        relax: relax each basis first (`dynamics.relax`).
        t_max: K, upper end of the searches.  tol: relative change of the covariances that counts
            as converged.  max_iter: fixed-point iterations per solve.  t_rtol: relative accuracy of T*.

    Raises:
        ValueError: empty sweep, negative temperatures, models with different numbers of sites,
            pair_shells < 0.
    """
    from moire_cli import dynamics

    if not len(models):
        raise ValueError("empty sweep")
    temps = np.asarray(temperatures, dtype=float)
    if temps.ndim != 1 or temps.size == 0 or np.any(temps < 0):
        raise ValueError("temperatures must be a non-empty list of values ≥ 0 K")
    if len({m.crystal.n_sites for m in models}) != 1:
        raise ValueError("all sweep points must have the same number of sites per cell")
    if pair_shells < 0:
        raise ValueError(f"pair_shells must be ≥ 0, got {pair_shells}")
    if relax:
        models = [dynamics.relax(m).model for m in models]
    n_p = len(models)
    lc = np.broadcast_to(np.asarray(lindemann_critical, dtype=float), (n_p,)).copy()
    pinned = np.array([m.potential is not None for m in models])
    t_all = np.concatenate([[0.0], temps])
    nt1 = t_all.size
    l2s, l2r, msd = (np.full((n_p, nt1), np.nan) for _ in range(3))
    ok_all = np.zeros((n_p, nt1), dtype=bool)
    its_all = np.zeros((n_p, nt1), dtype=int)
    t_star = np.full(n_p, np.nan)
    tm = np.full(n_p, np.nan)
    for idx, st in _stacks(models, mesh, pair_shells):
        k = len(idx)
        p = np.repeat(np.arange(k), nt1)
        cs, cb, ok, its = _solve_grid(st, k, t_all, tol, max_iter)
        s, r = _ratios(st, p, cs, cb)
        l2s[idx], l2r[idx] = s.reshape(k, nt1), r.reshape(k, nt1)
        msd[idx] = np.trace(cs, axis1=-2, axis2=-1).max(axis=-1).reshape(k, nt1)
        ok_all[idx], its_all[idx] = ok.reshape(k, nt1), its.reshape(k, nt1)
        state = (cs.reshape(k, nt1, *cs.shape[1:]), cb.reshape(k, nt1, *cb.shape[1:]))
        ts, lo_t, lo_state = _instability(st, ok.reshape(k, nt1), t_all, state, t_max, tol, max_iter, t_rtol)
        t_star[idx] = ts
        pin = pinned[idx]
        crit = np.where(pin[:, None], l2s[idx], l2r[idx])
        crit[:, 0] = l2s[idx][:, 0]
        tm[idx] = _lindemann_root(st, pin, lc[idx], crit, ok.reshape(k, nt1), t_all, state, ts, lo_t, lo_state,
                                  tol, max_iter)
    l0 = np.sqrt(l2s[:, 0])
    quantum = ok_all[:, 0] & (l0 >= lc)
    tm = np.where(quantum, np.nan, tm)
    lt = np.sqrt(l2s[:, 1:])
    lt = np.where(pinned[:, None] | (temps[None, :] == 0), lt, np.nan)
    return SCHASweepResult(
        temperatures=temps, lindemann_ratio=lt, relative_lindemann_ratio=np.sqrt(l2r[:, 1:]),
        mean_square_displacement=msd[:, 1:], solution=ok_all[:, 1:], iterations=its_all[:, 1:],
        lindemann_ratio_zero=l0, melting_temperature=tm, instability_temperature=t_star, quantum_melted=quantum,
        criterion=np.where(pinned, lindemann.SINGLE_SITE, lindemann.RELATIVE), pinned=pinned,
        lindemann_critical=lc, mesh=int(mesh), pair_shells=int(pair_shells), models=tuple(models),
    )


def _solve_grid(st: _Stack, k: int, t_all: np.ndarray, tol: float, max_iter: int, block: int = 8):
    """All (point, T) of the grid, in ascending blocks of ``block`` temperatures: once a point has
    no solution at some T, its higher temperatures are not tried (no solution; T* is above the
    last solution, see `_instability`). Returns as `_solve`, point-major (k·N_T entries)."""
    nt1 = t_all.size
    n, n_b = st.cos_moire.shape[1], len(st.kappa)
    cs = np.full((k, nt1, n, 2, 2), np.nan)
    cb = np.full((k, nt1, n_b, 2, 2), np.nan)
    ok = np.zeros((k, nt1), dtype=bool)
    its = np.zeros((k, nt1), dtype=int)
    alive = np.ones(k, dtype=bool)
    for s0 in range(0, nt1, block):
        pts = np.flatnonzero(alive)
        if not pts.size:
            break
        cols = np.arange(s0, min(s0 + block, nt1))
        p = np.repeat(pts, cols.size)
        c = np.tile(cols, pts.size)
        a, b, good, it = _solve(st, p, t_all[c], None, tol, max_iter)
        cs[p, c], cb[p, c], ok[p, c], its[p, c] = a, b, good, it
        first_bad = np.where(ok[:, cols].all(axis=1), nt1, cols[np.argmax(~ok[:, cols], axis=1)])
        ok &= np.arange(nt1)[None, :] < first_bad[:, None]  # nothing above a failure counts
        alive &= first_bad == nt1
    cs[~ok], cb[~ok] = np.nan, np.nan
    return cs.reshape(k * nt1, n, 2, 2), cb.reshape(k * nt1, n_b, 2, 2), ok.ravel(), its.ravel()


def _instability(st, ok, t_all, state, t_max, tol, max_iter, t_rtol):
    """T* per point of a stack: bracket from the grid (extended by doubling past its end), then
    bisection with warm starts from the last solution below. Returns (T*, T_lo, state at T_lo)."""
    k, nt1 = ok.shape
    first_fail = np.where(ok.all(axis=1), nt1, np.argmax(~ok, axis=1))
    t_star = np.where(first_fail == 0, 0.0, np.nan)
    j = np.clip(first_fail - 1, 0, nt1 - 1)
    lo = t_all[j].copy()
    lo_state = [state[0][np.arange(k), j].copy(), state[1][np.arange(k), j].copy()]
    hi = np.where(first_fail < nt1, t_all[np.clip(first_fail, 0, nt1 - 1)], np.nan)
    grow = np.flatnonzero(first_fail == nt1)
    while grow.size:  # solutions up to the end of the grid: double T until none (or t_max)
        t_try = np.minimum(np.where(lo[grow] > 0, 2 * lo[grow], 1.0), t_max)
        cs, cb, good, _ = _solve(st, grow, t_try, (lo_state[0][grow], lo_state[1][grow]), tol, max_iter)
        hi[grow[~good]] = t_try[~good]
        up = grow[good]
        lo[up] = t_try[good]
        lo_state[0][up], lo_state[1][up] = cs[good], cb[good]
        capped = up[lo[up] >= t_max]
        t_star[capped] = np.inf
        grow = up[lo[up] < t_max]
    todo = np.flatnonzero(np.isfinite(hi) & np.isnan(t_star))
    while todo.size:
        mid = 0.5 * (lo[todo] + hi[todo])
        cs, cb, good, _ = _solve(st, todo, mid, (lo_state[0][todo], lo_state[1][todo]), tol, max_iter)
        hi[todo[~good]] = mid[~good]
        up = todo[good]
        lo[up] = mid[good]
        lo_state[0][up], lo_state[1][up] = cs[good], cb[good]
        todo = todo[hi[todo] - lo[todo] > t_rtol * hi[todo]]
    t_star = np.where(np.isnan(t_star), hi, t_star)
    return t_star, lo, lo_state


def _lindemann_root(st, pin, lc, crit, ok, t_all, state, t_star, lo_t, lo_state, tol, max_iter):
    """T_m with L(T_m) = L_c on the self-consistent branch [0, T*): Illinois regula falsi between
    the last grid point below L_c and the first one above (or the last solution below T*)."""
    k, nt1 = ok.shape
    lc2 = lc**2
    tm = np.full(k, np.nan)
    above = ok & (crit >= lc2[:, None])
    below_end = ok.all(axis=1) | (np.argmax(~ok, axis=1) > 0)
    first_above = np.where(above.any(axis=1), np.argmax(above, axis=1), nt1)
    first_fail = np.where(ok.all(axis=1), nt1, np.argmax(~ok, axis=1))
    on_grid = (first_above < first_fail) & (first_above > 0)
    lo = np.where(on_grid, t_all[np.clip(first_above - 1, 0, nt1 - 1)], 0.0)
    hi = np.where(on_grid, t_all[np.clip(first_above, 0, nt1 - 1)], lo_t)
    st_lo = [state[0][np.arange(k), np.clip(first_above - 1, 0, nt1 - 1)].copy(),
             state[1][np.arange(k), np.clip(first_above - 1, 0, nt1 - 1)].copy()]
    f_lo = crit[np.arange(k), np.clip(first_above - 1, 0, nt1 - 1)] - lc2
    f_hi = np.where(on_grid, crit[np.arange(k), np.clip(first_above, 0, nt1 - 1)] - lc2, np.nan)
    off = np.flatnonzero(~on_grid & below_end & (first_fail > 0) & np.isfinite(lo_t) & (first_above >= first_fail))
    if off.size:  # crossing past the grid: between the last grid solution and the last solution below T*
        s, r = _ratios(st, off, lo_state[0][off], lo_state[1][off])
        f_end = np.where(pin[off], s, r) - lc2[off]
        j = first_fail[off] - 1
        lo[off], f_lo[off] = t_all[j], crit[off, j] - lc2[off]
        st_lo[0][off], st_lo[1][off] = state[0][off, j], state[1][off, j]
        hi[off], f_hi[off] = lo_t[off], f_end
    todo = np.flatnonzero(np.isfinite(f_hi) & (f_hi >= 0) & (f_lo < 0))
    tm[np.flatnonzero(np.isinf(t_star) & ~above.any(axis=1) & ok[:, 0])] = np.inf
    last = np.zeros(k, dtype=int)
    for _ in range(100):
        if not todo.size:
            break
        x = (lo[todo] * f_hi[todo] - hi[todo] * f_lo[todo]) / (f_hi[todo] - f_lo[todo])
        x = np.where(np.isfinite(x) & (x > lo[todo]) & (x < hi[todo]), x, 0.5 * (lo[todo] + hi[todo]))
        cs, cb, good, _ = _solve(st, todo, x, (st_lo[0][todo], st_lo[1][todo]), tol, max_iter)
        s, r = _ratios(st, todo, cs, cb)
        fx = np.where(good, np.where(pin[todo], s, r) - lc2[todo], np.inf)
        left = fx < 0
        i_l, i_r = todo[left], todo[~left]
        lo[i_l], f_lo[i_l] = x[left], fx[left]
        st_lo[0][i_l], st_lo[1][i_l] = cs[left], cb[left]
        f_hi[i_l] = np.where(last[i_l] == 1, 0.5 * f_hi[i_l], f_hi[i_l])
        hi[i_r] = x[~left]
        f_hi[i_r] = np.where(np.isfinite(fx[~left]), fx[~left], f_hi[i_r])
        f_lo[i_r] = np.where(last[i_r] == -1, 0.5 * f_lo[i_r], f_lo[i_r])
        last[i_l], last[i_r] = 1, -1
        done = (np.abs(fx) <= 1e-12 * lc2[todo]) | (hi[todo] - lo[todo] <= 1e-12 * hi[todo])
        tm[todo[done]] = x[done]
        todo = todo[~done]
    tm[todo] = 0.5 * (lo[todo] + hi[todo])
    return tm
