"""Benchmark: classical Monte Carlo sweeps per second for N = 144 and N = 576 sites and how the cost
grows with N (`montecarlo.run_monte_carlo`: sequential single-particle Metropolis moves, each one numpy
operation over all replicas and all N partners, so a sweep costs O(R·N²)); the baseline measured in
the same run is N = 144. With --melting, also the unpinned (V = 0) classical 2D electron crystal
over Γ = e²(πn)^{1/2}/(κk_BT) = 100…180 on a 12×12 supercell (N = 144): Ψ₆, χ₆ and the relative
Lindemann ratio, to compare with Γ_m = 137 ± 15 (Grimes & Adams, PRL 42, 795 (1979)).
Not a test: no assertions. Run: python bench/bench_montecarlo.py [--melting]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moire_cli import crystals, dynamics  # noqa: E402
from moire_cli import montecarlo as mc  # noqa: E402
from moire_cli.potentials import Coulomb, MoirePotential  # noqa: E402
from moire_cli.units import K_B_MEV_PER_K  # noqa: E402

A_M, V, PSI, KAPPA, MASS = 8.0, 15.0, np.deg2rad(45.0), 5.1, 0.45  # the shipped WSe₂/WS₂ hole crystal
TEMPS = np.array([10.0, 50.0, 100.0, 200.0])  # four replicas


def sweeps_per_second(size: int, sweeps: int) -> float:
    pot = MoirePotential(A_M, V, PSI, -1)
    m = dynamics.LatticeModel(crystals.build_crystal("triangular", A_M), pot, Coulomb(KAPPA), MASS)
    t0 = time.perf_counter()
    mc.run_monte_carlo(m, TEMPS, supercell=(size, size), sweeps=sweeps, equilibration=0, blocks=4,
                       psi6_every=sweeps // 4, seed=1)
    return sweeps / (time.perf_counter() - t0)


def melting_scan(size: int = 12, sweeps: int = 3000, equilibration: int = 1000) -> None:
    cr = crystals.build_crystal("triangular", A_M)
    m = dynamics.LatticeModel(cr, None, Coulomb(KAPPA), MASS)
    gamma = np.array([100.0, 115.0, 125.0, 135.0, 145.0, 155.0, 170.0, 185.0])
    c = m.interaction.coulomb_tail
    temps = c * np.sqrt(np.pi * cr.density) / (K_B_MEV_PER_K * gamma)
    t0 = time.perf_counter()
    r = mc.run_monte_carlo(m, temps, supercell=(size, size), sweeps=sweeps, equilibration=equilibration,
                           blocks=20, psi6_every=10, seed=2)
    print(f"unpinned 2D Coulomb crystal, N = {r.n_particles} ({size}×{size}), {equilibration} + {sweeps} sweeps "
          f"({time.perf_counter() - t0:.0f} s)")
    print("   Γ      T (K)   Ψ₆             χ₆      L_rel            acceptance equilibrated")
    for i in np.argsort(r.gamma):
        print(f"{r.gamma[i]:6.1f} {r.temperatures[i]:8.2f}   {r.psi6[i]:.3f} ± {r.psi6_err[i]:.3f}  "
              f"{r.psi6_susceptibility[i]:7.3f}  {r.relative_lindemann_ratio[i]:.3f} ± "
              f"{r.relative_lindemann_ratio_err[i]:.3f}  {r.acceptance[i]:.2f}       {bool(r.equilibrated[i])}")
    print(f"χ₆ peak at Γ = {r.gamma[np.argmax(r.psi6_susceptibility)]:.0f}")


def main() -> None:
    base = sweeps_per_second(12, 20)
    big = sweeps_per_second(24, 6)
    print(f"WSe₂/WS₂ hole crystal (V = {V} meV), Coulomb Ewald, {len(TEMPS)} temperatures as replicas")
    print(f"N = 144 (12×12): {base:8.2f} sweeps/s  ({base * len(TEMPS) * 144:.0f} particle moves/s)")
    print(f"N = 576 (24×24): {big:8.2f} sweeps/s  ({big * len(TEMPS) * 576:.0f} particle moves/s)")
    print(f"cost per sweep N=576 / N=144: {base / big:.1f} x (O(N²) would be 16 x, O(N) 4 x)")
    if "--melting" in sys.argv:
        melting_scan()


if __name__ == "__main__":
    main()
