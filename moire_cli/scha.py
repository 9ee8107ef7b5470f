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

Self-consistency: fixed-point iteration on C_κ and C_b with Anderson mixing, from the harmonic
phonons or a warm start (relative change < ``tol``). More fluctuation softens the potential, which
gives more fluctuation: above a temperature T* there is no self-consistent solution, the crystal is
unstable in this approximation (the pinned crystal depins). A solve counts as having none when the
lowest self-consistent ħω² falls below 1e-8 of the harmonic one (runaway), when it stalls (10
iterations without halving its smallest residual: above T* the mixing wanders at residuals of
1e-4–1e-2), or without convergence in ``max_iter``. T* is reported beside the Lindemann T_m as a
second melting criterion: the lowest temperature found without a solution, with a solution found
within ``t_rtol`` (relative) below it. The branch ends in a fold, T* − T ∝ (y* − y)² for a smooth
function y of the state, which `_instability` uses to place its tests (bisection as the fallback).
Close to T* a solve converges more slowly; one that stalls there counts as none, which could put
T* a little low: in the benchmark sweep (bench/bench_scha.py) T* to t_rtol = 1e-6 agrees with plain
bisection without the stall test to 6e-7, and T* to the default 1e-3 lies 0–8e-4 above it.

Layout: the stacked sweep points, the Gaussian-averaged force constants and one step of the map are
in `moire_cli.scha_map` (its single-site path on the rotation orbits of the q mesh,
`moire_cli.scha_symmetry`); here the Anderson-accelerated solve, the sweep, T* and T_m.

Units: ħω meV, ħ²D meV², m in m₀, lengths nm, T K. Constants from `moire_cli.units`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moire_cli import lindemann
from moire_cli.scha_map import Stack, bonds_within_shells, stacks, step  # noqa: F401 (bonds_within_shells re-exported)

METHOD = "self-consistent"
#: Most complex elements of one (batch chunk, q, 2n, 2n) work array.
_MAX_ELEMENTS = 3_000_000
#: ħω² below this fraction of the harmonic minimum counts as a collapse (no solution).
_COLLAPSE = 1e-8
#: Iterations without halving the smallest residual so far that count as no solution.
_STALL = 10


def _solve(st: Stack, p: np.ndarray, temps: np.ndarray, start: tuple | None, tol: float, max_iter: int,
           depth: int = 5, stall: int = _STALL, chain: np.ndarray | None = None):
    """Self-consistency for batch entries (p (b,), T (b,)): the fixed-point map accelerated by Anderson
    mixing of depth ``depth`` (Walker & Ni, SIAM J. Numer. Anal. 49, 1715 (2011)), all entries at
    once (chunked for memory only); an extrapolated state that is not a covariance (not positive
    semidefinite) falls back to the plain step. No solution: a collapse (see the module doc), no
    convergence in ``max_iter``, or a stall: ``stall`` iterations in which the smallest relative
    residual so far did not halve (above T* Anderson mixing wanders at a residual of 1e-4–1e-2 instead
    of running away; a converging solve halves it every one to three iterations).

    Args:
        start: (C_site, C_bond) to start from, or None (the harmonic fluctuations).
        chain: (b,) labels, or None: once an entry has no solution, the entries with the same label
            at higher temperatures are given up too (no solution above a failure, see `_solve_grid`).

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
        parts = [step(st, p[idx[s : s + chunk]], temps[idx[s : s + chunk]], cs[s : s + chunk], cb[s : s + chunk])
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
    best = np.full(nb, np.inf)  # smallest relative residual so far, and iterations since it last halved
    since = np.zeros(nb, dtype=int)
    label = np.unique(chain, return_inverse=True)[1].ravel() if chain is not None else None
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
        err = np.abs(f).max(axis=1)
        done = (err <= tol * scale) & ~bad & ~retry
        with np.errstate(divide="ignore", invalid="ignore"):
            res = np.where(scale > 0, err / scale, 0.0)
        halved = res <= 0.5 * best[active]
        best[active] = np.where(halved, res, best[active])
        since[active] = np.where(halved, 0, since[active] + 1)
        bad |= (since[active] >= stall) & ~done
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
        if label is not None and bad.any():  # no solution above a failure of the same label
            t_fail = np.full(label.max() + 1, np.inf)
            np.minimum.at(t_fail, label[active[bad]], temps[active[bad]])
            bad |= (temps[active] > t_fail[label[active]]) & ~done
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


def _ratios(st: Stack, p: np.ndarray, c_site: np.ndarray, c_bond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
            as converged.  max_iter: fixed-point iterations per solve.
        t_rtol: relative width of the final bracket of T* (no solution at T*, one found at or
            above T*(1 − t_rtol)).

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
    for idx, st in stacks(models, mesh, pair_shells):
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


def _solve_grid(st: Stack, k: int, t_all: np.ndarray, tol: float, max_iter: int, block: int = 2):
    """All (point, T) of the grid, in ascending blocks of ``block`` temperatures, each started from
    the point's solution at the previous block's highest T (blocks of 2: a third fewer iterations
    than blocks of 8 in the benchmark sweep, at the same cost per call): once a point has
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
        start = None
        if s0 > 0:  # warm start from the point's last solution (the previous block's highest T)
            start = (cs[p, s0 - 1], cb[p, s0 - 1])
        a, b, good, it = _solve(st, p, t_all[c], start, tol, max_iter, chain=p)
        cs[p, c], cb[p, c], ok[p, c], its[p, c] = a, b, good, it
        first_bad = np.where(ok[:, cols].all(axis=1), nt1, cols[np.argmax(~ok[:, cols], axis=1)])
        ok &= np.arange(nt1)[None, :] < first_bad[:, None]  # nothing above a failure counts
        alive &= first_bad == nt1
    cs[~ok], cb[~ok] = np.nan, np.nan
    return cs.reshape(k * nt1, n, 2, 2), cb.reshape(k * nt1, n_b, 2, 2), ok.ravel(), its.ravel()


def _instability(st, ok, t_all, state, t_max, tol, max_iter, t_rtol):
    """T* per point of a stack: bracket [lo, hi] from the grid (extended by doubling past its end),
    shrunk until hi − lo ≤ t_rtol·hi with warm starts from the last solution below. Near T* the
    branch ends in a fold (saddle-node): T(y) ≈ T* − a(y − y*)² for a smooth indicator y of the
    state (here the summed traces of C_site and C_bond), so the vertex of the parabola T(y) through
    the three highest solutions predicts T*; each round tests the pair T_v(1 ∓ 0.45 t_rtol) (one round
    ends the search when the prediction is good), or the midpoint (bisection) where there is no
    concave fit, the pair does not lie inside the bracket, or two pair rounds in a row did not halve
    it. Returns (T*, T_lo, state at T_lo)."""
    k, nt1 = ok.shape
    first_fail = np.where(ok.all(axis=1), nt1, np.argmax(~ok, axis=1))
    t_star = np.where(first_fail == 0, 0.0, np.nan)
    j = np.clip(first_fail - 1, 0, nt1 - 1)
    lo = t_all[j].copy()
    lo_state = [state[0][np.arange(k), j].copy(), state[1][np.arange(k), j].copy()]
    hi = np.where(first_fail < nt1, t_all[np.clip(first_fail, 0, nt1 - 1)], np.nan)
    hist_t, hist_y = np.full((k, 3), np.nan), np.full((k, 3), np.nan)  # the three highest solutions (T, y)
    y_grid = _indicator(*state)
    for s in range(3):
        jj = first_fail - 3 + s
        has = (jj >= 0) & (first_fail > 0)
        hist_t[has, s], hist_y[has, s] = t_all[jj[has]], y_grid[np.flatnonzero(has), jj[has]]

    def accept(pts, tt, cs, cb, good):  # fold the results of one round of tests into the brackets
        np.fmin.at(hi, pts[~good], tt[~good])  # hi is NaN before the first failure
        y = _indicator(cs, cb)
        for e in np.lexsort((tt, pts)):
            i = pts[e]
            if good[e] and lo[i] < tt[e] and not tt[e] >= hi[i]:  # (hi NaN: no failure yet)
                lo[i] = tt[e]
                lo_state[0][i], lo_state[1][i] = cs[e], cb[e]
                hist_t[i], hist_y[i] = np.roll(hist_t[i], -1), np.roll(hist_y[i], -1)
                hist_t[i, -1], hist_y[i, -1] = tt[e], y[e]

    grow = np.flatnonzero(first_fail == nt1)
    while grow.size:  # solutions up to the end of the grid: double T until none (or t_max)
        t_try = np.minimum(np.where(lo[grow] > 0, 2 * lo[grow], 1.0), t_max)
        cs, cb, good, _ = _solve(st, grow, t_try, (lo_state[0][grow], lo_state[1][grow]), tol, max_iter)
        accept(grow, t_try, cs, cb, good)
        up = grow[good]
        t_star[up[lo[up] >= t_max]] = np.inf
        grow = up[lo[up] < t_max]
    todo = np.flatnonzero(np.isfinite(hi) & np.isnan(t_star))
    slow = np.zeros(k, dtype=int)  # pair rounds in a row that did not halve the bracket
    while todo.size:
        tv = _fold_vertex(hist_t[todo], hist_y[todo])
        h = 0.45 * t_rtol * tv
        pair = np.isfinite(tv) & (tv - h > lo[todo]) & (tv + h < hi[todo]) & (slow[todo] < 2)
        mid = ~pair
        pts = np.concatenate([todo[pair], todo[pair], todo[mid]])
        tt = np.concatenate([(tv - h)[pair], (tv + h)[pair], 0.5 * (lo[todo[mid]] + hi[todo[mid]])])
        width = hi[todo] - lo[todo]
        cs, cb, good, _ = _solve(st, pts, tt, (lo_state[0][pts], lo_state[1][pts]), tol, max_iter, chain=pts)
        accept(pts, tt, cs, cb, good)
        slow[todo] = np.where(pair & (hi[todo] - lo[todo] > 0.5 * width), slow[todo] + 1, 0)
        todo = todo[hi[todo] - lo[todo] > t_rtol * hi[todo]]
    t_star = np.where(np.isnan(t_star), hi, t_star)
    return t_star, lo, lo_state


def _indicator(c_site: np.ndarray, c_bond: np.ndarray) -> np.ndarray:
    """y = Σ tr C_site + Σ tr C_bond (nm²), over the last three axes: the fold indicator of `_instability`."""
    return np.trace(c_site, axis1=-2, axis2=-1).sum(axis=-1) + np.trace(c_bond, axis1=-2, axis2=-1).sum(axis=-1)


def _fold_vertex(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The maximum of the parabola T(y) through three points (rows of t, y (m, 3)); NaN where it is not
    concave or not defined (Newton divided differences in y scaled to the span of the points)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u = (y - y[:, -1:]) / np.abs(y - y[:, -1:]).max(axis=1, keepdims=True)
        d01 = (t[:, 1] - t[:, 0]) / (u[:, 1] - u[:, 0])
        d12 = (t[:, 2] - t[:, 1]) / (u[:, 2] - u[:, 1])
        c2 = (d12 - d01) / (u[:, 2] - u[:, 0])
        c1 = d01 - c2 * (u[:, 0] + u[:, 1])
        c0 = t[:, 0] - d01 * u[:, 0] + c2 * u[:, 0] * u[:, 1]
        tv = c0 - c1**2 / (4 * c2)
    return np.where(np.isfinite(tv) & (c2 < 0), tv, np.nan)


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
