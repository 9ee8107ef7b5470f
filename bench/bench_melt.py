"""Benchmark: Lindemann melting sweep of the WSe₂/WS₂ hole crystal, 40 moiré periods × 60 temperatures,
48×48 Monkhorst–Pack mesh, Coulomb Ewald sums (`melt_sweep.melt_sweep`: all q at once per point,
everything after the phonons vectorized over the sweep, T_m by vectorized bisection).

Baseline measured in the same run: a straightforward per-sweep-point, per-q loop (the engine's
dynamical matrix at one q at a time, `eigh` per q, ⟨u²⟩(T) accumulated q by q, and T_m by
`scipy.optimize.brentq` on an L(T) that loops over q), on a subset of points and q, scaled to the
full sweep. The two agree on the subset (T_m difference printed). Not a test: no assertions.
Run: python bench/bench_melt.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import optimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moire_cli import crystals, dynamics, lindemann, melt_sweep  # noqa: E402
from moire_cli.potentials import Coulomb, MoirePotential  # noqa: E402
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2, K_B_MEV_PER_K  # noqa: E402

N_PERIODS, N_T, MESH = 40, 60, 48
SUBSET_POINTS, SUBSET_Q = 2, 96
MASS, V, PSI, KAPPA, L_C = 0.45, 3.0, np.deg2rad(45.0), 5.1, 0.3  # WSe₂/WS₂ holes (configs/moire/melt)


def models(a_values):
    out = []
    for a in a_values:
        cr = crystals.build_crystal("triangular", a)
        out.append(dynamics.LatticeModel(cr, MoirePotential(a, V, PSI, -1), Coulomb(KAPPA), MASS))
    return out


def loop_reference(model, q, temps, lc):
    """Per-q loop: D(q) one q at a time, eigh, ⟨u²⟩ accumulated per q; T_m by brentq."""
    a = model.crystal.nearest_neighbour_distance
    modes = []
    for qv in q:  # the baseline's loop over q-points
        d = dynamics.dynamical_matrix(model, qv[None, :])[0]
        w2, e = np.linalg.eigh(d)
        modes.append((np.sqrt(np.abs(w2)), (np.abs(e[0]) ** 2 + np.abs(e[1]) ** 2)))

    def l2(t):
        total = 0.0
        for w, amp in modes:
            coth = 1.0 if t == 0 else 1.0 / np.tanh(w / (2 * K_B_MEV_PER_K * t))
            total += np.sum(amp * coth / w)
        return HBAR2_OVER_M0_MEV_NM2 / (2 * model.mass * len(q) * a * a) * total

    curve = np.sqrt([l2(t) for t in temps])
    l0 = np.sqrt(l2(0.0))
    tm = np.nan
    if l0 < lc:
        hi = 1.0
        while np.sqrt(l2(hi)) < lc:
            hi *= 2
        tm = optimize.brentq(lambda t: np.sqrt(l2(t)) - lc, hi / 2 if hi > 1 else 0.0, hi, xtol=1e-12, rtol=1e-14)
    return curve, tm


def main() -> None:
    a_values = np.linspace(6.0, 20.0, N_PERIODS)
    temps = np.linspace(0.0, 300.0, N_T)
    sweep = models(a_values)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        res = melt_sweep.melt_sweep(sweep, L_C, temps, meshes=(MESH,), relax=True)
        best = min(best, time.perf_counter() - t0)

    # baseline on a subset (points spread over the sweep, q spread over the mesh), scaled
    pick = np.linspace(0, N_PERIODS - 1, SUBSET_POINTS).astype(int)
    t_loop = 0.0
    diffs = []
    for i in pick:
        m = sweep[i]
        q_full = crystals.monkhorst_pack(m.crystal, (MESH, MESH))
        q = q_full[np.linspace(1, len(q_full) - 1, SUBSET_Q).astype(int)]
        t0 = time.perf_counter()
        curve, tm_loop = loop_reference(m, q, temps, L_C)
        t_loop += time.perf_counter() - t0
        w, e = dynamics.phonons(m, q)  # batched result on the same subset, for agreement
        spec = lindemann.single_site_spectrum(w, e, m.mass, m.crystal.nearest_neighbour_distance)
        tm_batched = float(spec.melting_temperature(L_C).melting_temperature)
        same_nan = np.isnan(tm_batched) and np.isnan(tm_loop)  # both quantum melted
        diffs.append(0.0 if same_nan else abs(tm_batched - tm_loop))
        diffs.append(np.abs(spec.lindemann_ratio(temps) - curve).max())
    scale = (N_PERIODS / SUBSET_POINTS) * (MESH * MESH / SUBSET_Q)
    t_loop_full = t_loop * scale
    tm = res.melting_temperature
    print(f"hole crystal (WSe₂/WS₂, V = {V} meV), Coulomb Ewald, {N_PERIODS} periods × {N_T} T, "
          f"{MESH}x{MESH} mesh ({MESH * MESH} q)")
    print(f"batched melt sweep (best of 3):      {best:8.3f} s  ({best / N_PERIODS * 1e3:.1f} ms per point)")
    print(f"per-point per-q loop (scaled from {SUBSET_POINTS}×{SUBSET_Q} q): {t_loop_full:8.1f} s")
    print(f"speed-up batched vs loop:            {t_loop_full / best:8.1f} x")
    print(f"agreement on the subset: max |ΔT_m| = {max(diffs[0::2]):.2e} K, max |ΔL| = {max(diffs[1::2]):.2e}")
    print(f"T_m {np.nanmin(tm):.1f}–{np.nanmax(tm):.1f} K; quantum melted at {int(res.quantum_melted.sum())} of "
          f"{N_PERIODS} periods (crystal from a_M = {a_values[~res.quantum_melted].min():.2f} nm)")


if __name__ == "__main__":
    main()
