"""The self-consistent harmonic map of `moire_cli.scha` (spec §12): the sweep points stacked by
structure, the Gaussian-averaged force constants (moiré cosines exactly, the near pair shells by a
3×3 Gauss–Hermite rule, see `moire_cli.scha`'s docstring for the averages taken), and one step
(C_site, C_bond) -> the same from the phonons of the averaged force constants (`step`).

Units: ħω meV, ħ²D meV², m in m₀, lengths nm, T K. Constants from `moire_cli.units`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moire_cli.units import HBAR2_OVER_M0_MEV_NM2, K_B_MEV_PER_K

#: Gauss–Hermite (probabilists') 3-point rule: nodes in units of σ, weights.
_GH_NODES = np.array([-np.sqrt(3.0), 0.0, np.sqrt(3.0)])
_GH_WEIGHTS = np.array([1 / 6, 2 / 3, 1 / 6])
#: The 3×3 product rule: nodes (9, 2) in units of the principal standard deviations, weights (9,).
_GH_Z = np.stack(np.meshgrid(_GH_NODES, _GH_NODES, indexing="ij"), axis=-1).reshape(9, 2)
_GH_W = np.outer(_GH_WEIGHTS, _GH_WEIGHTS).ravel()

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
class Stack:
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
    groups: tuple  # ((tabulated force constants of one interaction, point indices), ...)
    phi_bond: np.ndarray  # (P, P_b, 2, 2) meV/nm² the harmonic force constants Φ(δ_b) of the bonds
    # one site per cell (D(q) real symmetric): the real fast path of `step`, else None
    d_real: np.ndarray | None = None  # (P, 3, N_o) ħ²D_xx, ħ²D_xy, ħ²D_yy meV²
    half_bonds: np.ndarray | None = None  # (H,) one bond of each ±δ pair (equal averages by symmetry)
    from_half: np.ndarray | None = None  # (P_b,) the position of each bond's pair in half_bonds
    bond_count: np.ndarray | None = None  # (H,) bonds per pair (2)
    # the real path's q: one per rotation orbit (N_o of them; `moire_cli.scha_symmetry`)
    forward: np.ndarray | None = None  # (P, 1 + H, N_o) rows 1, cos(q·δ_h): force constants -> D(q)
    back: np.ndarray | None = None  # (P, N_o, 1 + H) the same times the orbit weights: G(q) -> C_site, C_b
    sym_maps: np.ndarray | None = None  # (m, 3, 3) the rotations R^k on (xx, xy, yy), divided by m
    sym_bonds: np.ndarray | None = None  # (m, H) the half bond ±R^{−k}δ_h


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
        cell=cr.cell, n_mesh=n_mesh, todo=todo, rep=rep,
    )


def stacks(models: Sequence, n_mesh: int, pair_shells: int) -> list[tuple[np.ndarray, Stack]]:
    """Group the sweep points by structure and stack each group: [(point indices, Stack)]."""
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
        delta = np.stack([p["delta"] for p in ps])
        tables = tuple((_table(k, [ps[j]["delta"] for j in v]), np.array(v)) for k, v in groups.items())
        phi_bond = np.zeros(delta.shape + (2,))
        for table, members in tables:
            phi_bond[members] = table(delta[members])
        out.append((np.array(idx), Stack(
            models=tuple(p["model"] for p in ps), d_harm=np.stack([p["d"] for p in ps]),
            phase=np.stack([p["phase"] for p in ps]), q_weight=ps[0]["qw"], cos_moire=np.stack([p["cosm"] for p in ps]),
            b=np.stack([p["b"] for p in ps]), V=np.array([p["V"] for p in ps]),
            mass=np.array([p["model"].mass for p in ps]), kappa=ps[0]["kap"], kappa_prime=ps[0]["kap_p"],
            delta=delta, smeared=ps[0]["smeared"], nearest=ps[0]["nearest"],
            zero_tol=np.array([p["tol"] for p in ps]),
            w2_min=np.array([p["w2min"] for p in ps]), groups=tables, phi_bond=phi_bond,
            **_real_parts(ps),
        )))
    return out


def _real_parts(ps: list[dict]) -> dict:
    """For one site per cell D(q) = Σ_R Φ(R) e^{iq·R} is real symmetric (Φ(R) = Φ(−R)): its three
    components, the ±δ bond pairs and the matrices of the real path of `step` (cos(q·δ_h) of one
    bond per pair, with and without the q weights), on one q per orbit of the points' common rotation
    group (`moire_cli.scha_symmetry`; all the mesh representatives without one); {} otherwise.
    ``ps``: the `_prepare` records of one stack."""
    from moire_cli.scha_symmetry import rotation_orbits

    d, phase, delta = np.stack([p["d"] for p in ps]), np.stack([p["phase"] for p in ps]), ps[0]["delta"]
    if d.shape[-1] != 2 or np.abs(d.imag).max() > 1e-10 * np.abs(d).max():
        return {}
    partner = np.argmin(np.linalg.norm(delta[:, None] + delta[None], axis=-1), axis=1)
    if not np.allclose(delta[partner], -delta, atol=1e-9 * np.abs(delta).max()):
        return {}
    half = np.flatnonzero(np.arange(len(delta)) <= partner)
    pos = np.full(len(delta), -1)
    pos[half] = np.arange(len(half))
    from_half = np.where(pos >= 0, pos, pos[partner])
    comps = np.stack([d[..., 0, 0].real, d[..., 0, 1].real, d[..., 1, 1].real], axis=1)  # (P, 3, N_q)
    syms = [rotation_orbits(p["cell"], p["n_mesh"], p["todo"], p["rep"], p["qw"], comps[i], p["delta"][half],
                            p["smeared"][half], p["cosm"][0], p["b"]) for i, p in enumerate(ps)]
    same = all(x is not None for x in syms) and all(
        np.array_equal(x["orbit"], syms[0]["orbit"]) and np.array_equal(x["bond_index"], syms[0]["bond_index"])
        and np.allclose(x["maps"], syms[0]["maps"]) for x in syms)
    if same:
        keep, weight, maps, bond_index = syms[0]["orbit"], syms[0]["weight"], syms[0]["maps"], syms[0]["bond_index"]
    else:
        keep, weight = np.arange(d.shape[1]), ps[0]["qw"]
        maps, bond_index = np.eye(3)[None], np.arange(len(half))[None]
    forward = np.concatenate([np.ones((len(ps), len(keep), 1)), phase.real[:, keep][:, :, half]], axis=2)
    return {"d_real": np.ascontiguousarray(comps[:, :, keep]), "half_bonds": half, "from_half": from_half,
            "bond_count": np.bincount(from_half, minlength=len(half)).astype(float),
            "forward": np.ascontiguousarray(np.swapaxes(forward, 1, 2)),
            "back": np.ascontiguousarray(forward * weight[None, :, None]), "sym_maps": maps, "sym_bonds": bond_index}


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


def _pair_average(st: Stack, p: np.ndarray, c_bond: np.ndarray, bonds: np.ndarray | None = None):
    """⟨Φ(δ + w)⟩ − Φ(δ) over w ~ N(0, C_b) by the 3×3 Gauss–Hermite rule for the smeared bonds:
    (b, P_b, 2, 2) meV/nm² (0 for the others), and a (b,) flag: a node within δ/10 of contact.
    ``bonds``: only these bond indices (c_bond (b, len(bonds), 2, 2) then)."""
    sel_b = slice(None) if bonds is None else bonds
    delta = st.delta[p][:, sel_b]  # (b, P_b, 2)
    smeared = st.smeared[sel_b]
    lam, vec = np.linalg.eigh(c_bond)
    vec *= np.sqrt(np.clip(lam, 0.0, None))[:, :, None, :]  # columns scaled by the standard deviations
    pos = np.swapaxes(vec @ _GH_Z.T, -1, -2)  # (b, P_b, 9, 2) node offsets
    pos += delta[:, :, None, :]
    r2_bond = np.einsum("bpx,bpx->bp", delta, delta)
    close = ((np.einsum("bpkx,bpkx->bpk", pos, pos) < 0.01 * r2_bond[:, :, None]) & smeared[None, :, None]).any(axis=(1, 2))
    pos[close] = delta[close][:, :, None, :]
    pos[:, ~smeared] = delta[:, ~smeared, None, :]
    out = np.zeros(c_bond.shape)
    phi_bond = st.phi_bond[p][:, sel_b]
    for table, members in st.groups:  # sweep points sharing one pair interaction
        sel = slice(None) if len(st.groups) == 1 else np.isin(p, members)
        phi = table(pos[sel])  # (b', P_b, 9, 2, 2)
        out[sel] = np.einsum("k,bpkxy->bpxy", _GH_W, phi) - phi_bond[sel]
    return out * smeared[None, :, None, None], close


def step(st: Stack, p: np.ndarray, temps: np.ndarray, c_site: np.ndarray, c_bond: np.ndarray,
         general: bool = False):
    """One SCHA step for batch entries (point p (b,), temperature (b,)): (C_site (b, n, 2, 2),
    C_bond (b, P_b, 2, 2)) nm² -> the same from the phonons of the averaged force constants, the
    (b,) lowest ħ²ω² (meV²) and the (b,) flag of an uncontrolled pair average. One site per cell
    takes a real path (`_step_single_site`, the same numbers to rounding) unless ``general``."""
    if st.d_real is not None and not general:
        return _step_single_site(st, p, temps, c_site, c_bond)
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


def _onsite_moire(st: Stack, p: np.ndarray, c_site: np.ndarray) -> np.ndarray:
    """s_κ ∂²⟨Δ⟩ − s_κ ∂²Δ (b, n, 2, 2) meV/nm²: the exact Gaussian average of the moiré cosines."""
    b = st.b[p]  # (b, 3, 2)
    gauss = np.exp(-0.5 * np.einsum("bjx,bkxy,bjy->bkj", b, c_site, b))  # exp(−½ b_jᵀ C_κ b_j)
    return -2 * np.einsum("b,bkj,bkj,bjx,bjy->bkxy", st.V[p], st.cos_moire[p], gauss - 1.0, b, b)


def _step_single_site(st: Stack, p: np.ndarray, temps: np.ndarray, c_site: np.ndarray, c_bond: np.ndarray):
    """`step` for one site per cell in real arithmetic: ħ²D(q) = ħ²D_harm(q) + (ħ²/m)[ΔΦ_site +
    Σ_b ΔΦ_b (1 − cos q·δ_b)], G(q) by the 2×2 closed form, C_site = Σ_q w G(q) and
    C_b = 2 Σ_q w G(q)(1 − cos q·δ_b) (G real symmetric, bonds in ±δ pairs: one bond per pair, each
    sum over q one batched matrix product with `Stack.forward` / `Stack.back`), over one q per
    rotation orbit and symmetrised after (`moire_cli.scha_symmetry`; the state must be symmetric,
    as the harmonic start and every state made of steps from it are)."""
    nb, n_h = len(p), len(st.half_bonds)
    dphi, close = _pair_average(st, p, c_bond[:, st.half_bonds], st.half_bonds)  # (b, H, 2, 2)
    comp = dphi.reshape(nb, n_h, 4)[:, :, [0, 1, 3]] * st.bond_count[None, :, None]  # (b, H, 3): xx, xy, yy
    x = np.empty((nb, 3, 1 + n_h))
    x[:, :, 0] = _onsite_moire(st, p, c_site)[:, 0].reshape(nb, 4)[:, [0, 1, 3]] + comp.sum(axis=1)  # sum rule
    x[:, :, 1:] = -np.swapaxes(comp, 1, 2)
    x *= (HBAR2_OVER_M0_MEV_NM2 / st.mass[p])[:, None, None]
    d = x @ st.forward[p]  # (b, 3, N_q)
    d += st.d_real[p]
    a, c, e = d[:, 0], d[:, 1], d[:, 2]
    lh = np.empty((nb, 2, d.shape[-1]))  # the two eigenvalues λ∓ = (a + e)/2 ∓ half
    half = np.subtract(a, e)
    half *= 0.5
    np.square(half, out=half)
    half += c * c
    np.sqrt(half, out=half)
    np.add(a, e, out=lh[:, 0])
    lh[:, 0] *= 0.5
    lh[:, 0] -= half
    np.add(lh[:, 0], half, out=lh[:, 1])
    lh[:, 1] += half
    lo = lh[:, 0].copy()
    f = _thermal_factor_real(lh, temps, st.zero_tol[p])
    f_lo = f[:, 0]
    slope = np.subtract(f[:, 1], f_lo, out=f[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        slope /= half
    slope *= 0.5
    np.copyto(slope, 0.0, where=~(half > 0))
    g = d  # G(q) = f(λ₋) I + slope (M − λ₋ I), overwriting D
    a -= lo
    a *= slope
    a += f_lo
    c *= slope
    e -= lo
    e *= slope
    e += f_lo
    s = g @ st.back[p]  # (b, 3, 1 + H): Σ_q W G(q), Σ_q W G(q) cos q·δ_h over the orbits
    s *= (HBAR2_OVER_M0_MEV_NM2 / (2 * st.mass[p]))[:, None, None]
    local = np.einsum("kij,bj->bi", st.sym_maps, s[:, :, 0])  # (b, 3), (1/m) Σ_k R^k (·) R^kᵀ
    cross = np.einsum("kij,bjkh->bih", st.sym_maps, s[:, :, 1:][:, :, st.sym_bonds])  # δ_h -> R^{−k}δ_h
    bond = 2 * (local[:, :, None] - cross)  # (b, 3, H)

    def full(v):  # (..., 3) -> (..., 2, 2)
        return v[..., [0, 1, 1, 2]].reshape(*v.shape[:-1], 2, 2)

    return full(local)[:, None], full(np.swapaxes(bond, 1, 2))[:, st.from_half], lo.min(axis=-1), close


def _thermal_factor_real(w2: np.ndarray, temps: np.ndarray, zero_tol: np.ndarray) -> np.ndarray:
    """`_thermal_factor` in place on a fresh array ``w2`` (b, ...): coth(ħω/2k_BT)/ħω (1/meV), 0 for
    zero and imaginary modes (ħω < zero_tol (b,); the NaN of √ of a negative ħ²ω² fails the test)."""
    shape = (-1,) + (1,) * (w2.ndim - 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = np.sqrt(w2, out=w2)
        keep = (w >= zero_tol.reshape(shape)) & (w > 0)
        x = w / (K_B_MEV_PER_K * np.asarray(temps, dtype=float).reshape(shape))
        np.expm1(x, out=x)
        np.divide(2.0, x, out=x)
        x += 1.0
        x /= w
    np.copyto(x, 0.0, where=~keep)
    return x
