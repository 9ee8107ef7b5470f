"""Benchmark: the self-consistent (SCHA) melting sweep against the harmonic one, same run, same sweep.

WSe₂/WS₂ hole crystal as in bench/bench_melt.py (40 moiré periods × 60 temperatures, 48×48 mesh,
Coulomb Ewald): `melt_sweep.melt_sweep` (harmonic) and `scha.scha_sweep` (the same phonons, iterated
to self-consistency at every temperature, plus the instability temperature T* and the Lindemann
T_m on the self-consistent branch). Target (issue 14): SCHA within 3× the harmonic sweep.
Both sweeps are timed in the same run by wall clock and by this process's CPU time
(`time.process_time`, all threads): on a shared, loaded machine the wall times follow the load, the
CPU times much less. Not a test: no assertions. Run: python bench/bench_scha.py [repeats]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moire_cli import crystals, dynamics, melt_sweep, scha  # noqa: E402
from moire_cli.potentials import Coulomb, MoirePotential  # noqa: E402

N_PERIODS, N_T, MESH = 40, 60, 48
MASS, V, PSI, KAPPA, L_C = 0.45, 3.0, np.deg2rad(45.0), 5.1, 0.3  # as bench/bench_melt.py


def _timed(f):
    w0, c0 = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(repeats: int = 1) -> None:
    a_values = np.linspace(6.0, 20.0, N_PERIODS)
    temps = np.linspace(0.0, 300.0, N_T)
    sweep = [dynamics.LatticeModel(crystals.build_crystal("triangular", a), MoirePotential(a, V, PSI, -1),
                                   Coulomb(KAPPA), MASS) for a in a_values]
    print(f"hole crystal (WSe₂/WS₂, V = {V} meV), Coulomb Ewald, {N_PERIODS} periods × {N_T} T, {MESH}x{MESH} mesh")
    for rep in range(repeats):
        harm, w_harm, c_harm = _timed(lambda: melt_sweep.melt_sweep(sweep, L_C, temps, meshes=(MESH,), relax=True))
        res, w_scha, c_scha = _timed(lambda: scha.scha_sweep(sweep, L_C, temps, mesh=MESH, relax=True))
        print(f"[{rep + 1}/{repeats}] harmonic sweep:         {w_harm:8.2f} s wall, {c_harm:7.2f} s CPU")
        print(f"[{rep + 1}/{repeats}] self-consistent sweep:  {w_scha:8.2f} s wall, {c_scha:7.2f} s CPU  "
              f"({w_scha / w_harm:.2f} x harmonic wall, {c_scha / c_harm:.2f} x CPU; target ≤ 3 x)")
    it = res.iterations[res.solution]
    print(f"fixed-point iterations per solved (point, T): median {np.median(it):.0f}, max {it.max()}")
    ok = np.isfinite(harm.melting_temperature)
    print(f"T_m harmonic {np.nanmin(harm.melting_temperature[ok]):.1f}–{np.nanmax(harm.melting_temperature[ok]):.1f} K; "
          f"self-consistent T_m {np.nanmin(res.melting_temperature):.1f}–{np.nanmax(res.melting_temperature):.1f} K; "
          f"T* {np.nanmin(res.instability_temperature):.1f}–{np.nanmax(res.instability_temperature):.1f} K")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
