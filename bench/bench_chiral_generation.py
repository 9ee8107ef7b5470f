"""Benchmark: the phonon thermal Hall conductivity and the three-phonon decay of the Γ modes (issue 13 §5).

1. κ_xy(T) at 60 temperatures on a 96×96 mesh (honeycomb crystal, B = 30 T): the vectorised weight sum
   (all plaquettes × bands × temperatures at once) against a per-q-point loop of the same sum, plus
   the wall time of the whole chain (dynamical matrices, modes under B, FHS Berry curvature, κ_xy).
   Aim: κ_xy(T) under 1 s.
2. Decay rates of the four Γ modes on a 48×48 mesh (honeycomb, weak moiré so that energy conservation
   can be met): the vectorised golden-rule sum against a per-q loop of the same V₃ and δ, in the same run,
   on the same modes and couplings. Aim: under 2 s on 2 cores (everything included).

Wall times depend on what else runs; each aim is also checked on the process's CPU time (all threads
together), which other jobs do not inflate much and which bounds the wall time on idle cores from above.

Run: python bench/bench_chiral_generation.py   (from the repository root)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moire_cli import anharmonic as an  # noqa: E402
from moire_cli import crystals, dynamics, optics, potentials  # noqa: E402
from moire_cli import gyroscopic as gy  # noqa: E402
from moire_cli import thermal_hall as th  # noqa: E402
from moire_cli import topology as tp  # noqa: E402
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2  # noqa: E402

MASS = 0.45
A_M = 8.0


def honeycomb(V: float) -> dynamics.LatticeModel:
    """ν = 2/3 honeycomb, a_M = 8 nm, holes, ψ = 45°, Keldysh (κ = 5.1, r₀ = 4.511 nm), traps 1 : 0.8."""
    cr = crystals.build_crystal("honeycomb_gwc", A_M)
    pot = potentials.MoirePotential(A_M, V, np.pi / 4, -1)
    return dynamics.LatticeModel(cr, pot, potentials.Coulomb(5.1), MASS, trap_scale=(1.0, 0.8))


def kappa_loop(pf: np.ndarray, om: np.ndarray, b: np.ndarray, temps: np.ndarray) -> np.ndarray:
    """Per-q-point loop of the same weight sum (baseline)."""
    n1, n2, m = pf.shape
    area = abs(np.linalg.det(b)) / (n1 * n2)
    out = np.zeros(len(temps))
    for i in range(n1):
        for j in range(n2):
            x = th.bose_occupation(pf[i, j], temps)
            out -= th.c2_weight(x) @ (om[i, j] * area) / (2 * np.pi) ** 2
    return out


def bench_kappa() -> bool:
    model = honeycomb(15.0)
    mesh = (96, 96)
    temps = np.linspace(1.0, 120.0, 60)
    w_c = gy.cyclotron_energy(30.0, MASS, 1)
    q = crystals.monkhorst_pack(model.crystal, mesh)
    t0 = time.perf_counter()
    d = dynamics.dynamical_matrix(model, q)
    modes = gy.gyroscopic_modes(d, w_c)
    berry = tp.berry_curvature_mesh(modes, q, mesh, model.crystal.basis, model.crystal.reciprocal)
    t1, c1 = time.perf_counter(), time.process_time()
    pf = th.plaquette_frequencies(modes.frequencies, berry.order, berry.mesh)
    res = th.thermal_hall_conductivity(pf, berry.berry_curvature, model.crystal.reciprocal, temps, omega_c=w_c)
    t2, c2 = time.perf_counter(), time.process_time()
    ref = kappa_loop(pf, berry.berry_curvature, model.crystal.reciprocal, temps)
    t3 = time.perf_counter()
    diff = float(np.max(np.abs(ref - res.kappa_xy_kB2T_per_hbar)))
    scale = float(np.max(np.abs(ref)))
    print(f"κ_xy(T): honeycomb_gwc, B = 30 T, mesh {mesh[0]}×{mesh[1]}, {len(temps)} temperatures")
    print(f"  modes + Berry curvature:   {t1 - t0:.3f} s")
    print(f"  κ_xy(T), vectorised:       {t2 - t1:.3f} s wall, {c2 - c1:.3f} s CPU   aim < 1 s: "
          f"{'met' if min(t2 - t1, c2 - c1) < 1 else 'NOT met'}")
    print(f"  κ_xy(T), per-q loop:       {t3 - t2:.3f} s   ratio loop/vectorised = {(t3 - t2) / (t2 - t1):.1f}x")
    print(f"  whole chain (D → κ_xy):    {t2 - t0:.3f} s")
    print(f"  max |Δκ| / max |κ| = {diff / scale:.1e}; max |κ_xy| = {np.max(np.abs(res.kappa_xy_W_per_K)):.3e} W/K")
    return diff <= 1e-10 * scale


def decay_loop(model, q, fp, up, w_c, sigma):
    """Per-q loop of the same golden-rule sum at T = 0 (baseline; same modes and couplings)."""
    d = dynamics.dynamical_matrix(model, q)
    m1, m2 = gy.gyroscopic_modes(d, w_c), gy.gyroscopic_modes(np.conj(d), w_c)
    w_all = an.gamma_coupling(model, q)
    n_dof = d.shape[1]
    c3 = (HBAR2_OVER_M0_MEV_NM2 / model.mass) ** 1.5
    t0 = time.perf_counter()
    rates = np.zeros(len(fp))
    for iq in range(len(q)):
        u1, u2 = m1.displacements[iq], m2.displacements[iq]
        f1, f2 = m1.frequencies[iq], m2.frequencies[iq]
        for p in range(len(fp)):
            wp = np.tensordot(up[:, p], w_all[:, :, iq].reshape(n_dof, n_dof, n_dof), axes=1)
            v3 = c3 * np.conj(u1).T @ wp @ np.conj(u2)
            x = (fp[p] - f1[:, None] - f2[None, :]) / sigma
            delta = np.where(np.abs(x) <= an.SIGMA_CUTOFF, np.exp(-0.5 * x**2) / (np.sqrt(2 * np.pi) * sigma), 0.0)
            rates[p] += 0.5 * np.pi / len(q) * np.sum(np.abs(v3) ** 2 * delta)
    return rates, time.perf_counter() - t0


def bench_decay() -> bool:
    model = honeycomb(0.5)
    mesh = (48, 48)
    q = crystals.monkhorst_pack(model.crystal, mesh)
    t0, c0 = time.perf_counter(), time.process_time()
    o = optics.gamma_optics(dynamics.dynamical_matrix(model, np.zeros((1, 2))), omega_c=0.0, mass=MASS, charge_sign=1)
    res = an.three_phonon_decay(
        model, q, o.frequencies, o.displacements, omega_c=0.0, temperatures_K=np.array([0.0]), sigma_meV=0.5
    )
    t1, c1 = time.perf_counter(), time.process_time()
    ref, t_loop = decay_loop(model, q, o.frequencies, o.displacements, 0.0, 0.5)
    t2 = time.perf_counter()
    rel = float(np.max(np.abs(ref - res.rates[0])) / np.max(np.abs(ref)))
    t_d = time.perf_counter()
    dynamics.dynamical_matrix(model, q)
    an.gamma_coupling(model, q)
    t_setup = time.perf_counter() - t_d
    t_vec_sum = max((t1 - t0) - t_setup, 1e-9)
    print(f"Γ-mode decay: honeycomb_gwc V = 0.5 meV, mesh {mesh[0]}×{mesh[1]}, σ = 0.5 meV, rates {np.round(res.rates[0], 4)} meV")
    print(f"  whole decay (D, W, modes, sums): {t1 - t0:.3f} s wall, {c1 - c0:.3f} s CPU   aim < 2 s: "
          f"{'met' if min(t1 - t0, c1 - c0) < 2 else 'NOT met'}")
    print(f"  of which D(q) + W(q) lattice sums: {t_setup:.3f} s")
    print(f"  golden-rule sum, per-q loop:     {t_loop:.3f} s   ratio loop/vectorised (sums only) ≈ {t_loop / t_vec_sum:.1f}x")
    print(f"  max relative difference loop vs vectorised: {rel:.1e}  (loop total incl. setup {t2 - t1:.2f} s)")
    return rel < 1e-10


def main() -> None:
    ok = bench_kappa()
    ok = bench_decay() and ok
    if not ok:
        print("parity check FAILED")
        sys.exit(1)


if __name__ == "__main__":
    main()
