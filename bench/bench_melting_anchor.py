"""Benchmark: where the classical Monte Carlo melts the unpinned 2D Coulomb crystal (V = 0), against
Γ_m = e²(πn)^{1/2}/(κk_BT) = 137 ± 15 (Grimes & Adams, PRL 42, 795 (1979); simulations 125–135).

Three estimators from one set of runs on an L×L periodic supercell (N = L², default 12×12):
1. Free-energy crossing (the thermodynamic one, as Gann, Chakravarty & Chester, PRB 20, 326 (1979)):
   the fluid's free energy by thermodynamic integration of its Monte Carlo energy from the ideal gas
   (Γ = 0, closed form) up, the crystal's by the exact harmonic free energy of the same supercell plus
   the Monte Carlo anharmonic energy integrated down from Γ = ∞ (`moire_cli.free_energy`); Γ_m where
   they cross, its error by a bootstrap over the independent replicas.
2. Hysteresis bracket: the crystal started from the ideal sites (heating) stays crystalline down to
   some Γ, the fluid started from random positions (cooling) stays disordered up to some Γ (Ψ₆ per
   replica); the true Γ_m lies between what superheats and what supercools.
3. The relative-displacement Lindemann ratio of the crystal branch, γ = ⟨|u_i − u_j|²⟩/a² over
   nearest-neighbour bonds (Bedanov, Gadiyak & Lozovik 1985 use γ_m ≈ 0.1), printed per Γ.

Runs (saved as .npz under runs/melting_anchor/, so a batch can be continued from its last
configurations with --continue):
    python bench/bench_melting_anchor.py run --part fluid --out runs/melting_anchor/fluid.npz
    python bench/bench_melting_anchor.py run --part crystal --out runs/melting_anchor/crystal.npz
    python bench/bench_melting_anchor.py analyse runs/melting_anchor/fluid.npz runs/melting_anchor/crystal.npz
Not a test: no assertions (the closed-form pieces are tested in tests/moire/test_free_energy.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moire_cli import crystals, dynamics  # noqa: E402
from moire_cli import free_energy as fe  # noqa: E402
from moire_cli import montecarlo as mc  # noqa: E402
from moire_cli.potentials import Coulomb  # noqa: E402

A_M, KAPPA, MASS = 8.0, 5.1, 0.45  # any values: in the reduced units Γ, e²/(κa) the problem is universal
# dense below Γ = 1: ũ(Γ) falls steeply there (Debye–Hückel: ũ ~ Γ ln Γ, cut off by the box at Γ ~ a/L)
FLUID_GAMMA = [0.01, 0.03, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 2.0, 4.0, 8.0, 15.0, 25.0, 40.0, 60.0, 80.0, 100.0, 115.0, 130.0, 145.0, 160.0]
CRYSTAL_GAMMA = [100.0, 110.0, 120.0, 130.0, 140.0, 160.0, 200.0, 300.0, 500.0]


def model() -> dynamics.LatticeModel:
    return dynamics.LatticeModel(crystals.build_crystal("triangular", A_M), None, Coulomb(KAPPA), MASS)


def run(args) -> None:
    m = model()
    nodes = args.gammas or (FLUID_GAMMA if args.part == "fluid" else CRYSTAL_GAMMA)
    gam = np.repeat(nodes, args.replicas)
    initial = "random" if args.part == "fluid" else "crystal"
    previous = None
    if args.cont:
        previous = dict(np.load(args.out))
        gam, initial = previous["gamma"], previous["positions"]
    temps = fe.temperature(m, gam)
    t0 = time.perf_counter()
    r = mc.run_monte_carlo(m, temps, supercell=(args.size, args.size), sweeps=args.sweeps,
                           equilibration=args.equilibration, blocks=args.blocks, psi6_every=args.psi6_every,
                           seed=args.seed, initial=initial)
    wall = time.perf_counter() - t0
    blocks = {"energy": r.traces["energy"], "psi6": r.traces["psi6"],
              "rel": np.repeat((r.relative_lindemann_ratio**2)[:, None], args.blocks, axis=1)}
    if previous is not None:  # append the new blocks to the old ones (same replicas, continued)
        blocks = {k: np.concatenate([previous[f"{k}_blocks"], v], axis=1) for k, v in blocks.items()}
        wall += float(previous["wall_s"])
        sweeps = int(previous["sweeps"]) + args.sweeps
    else:
        sweeps = args.sweeps
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, gamma=gam, part=args.part, size=args.size, positions=r.positions, sweeps=sweeps,
             equilibration=args.equilibration, energy_blocks=blocks["energy"], psi6_blocks=blocks["psi6"],
             rel_blocks=blocks["rel"], wall_s=wall, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"{args.part}: N = {r.n_particles}, {len(gam)} replicas, {args.equilibration} + {args.sweeps} sweeps, "
          f"{wall:.0f} s -> {args.out}")


def merge(runs: list[dict]) -> dict:
    """One run of several files of the same part and supercell (replicas concatenated)."""
    if not runs or len({int(r["size"]) for r in runs}) != 1:
        raise SystemExit("analyse needs fluid and crystal runs of one supercell size")
    out = dict(runs[0])
    for key in ("gamma", "energy_blocks", "psi6_blocks", "rel_blocks"):
        out[key] = np.concatenate([r[key] for r in runs])
    out["sweeps"] = min(int(r["sweeps"]) for r in runs)
    out["wall_s"] = sum(float(r["wall_s"]) for r in runs)
    return out


def analyse(args) -> None:
    m = model()
    data = [dict(np.load(f)) for f in args.files]
    fluid, crystal = (merge([d for d in data if str(d["part"]) == part]) for part in ("fluid", "crystal"))
    size = int(fluid["size"])
    res = fe.melting_from_runs(m, (size, size), fluid, crystal, bootstrap=args.bootstrap, seed=args.seed)
    print(fe.format_report(res))
    for order in (1, 3):  # the form of the anharmonic fit: a systematic error
        try:
            other = fe.melting_from_runs(m, (size, size), fluid, crystal, bootstrap=0, order=order)
            print(f"anharmonic fit with {order} term(s): Γ_m = {other.gamma_m:.1f} (χ²/dof = {other.chi2:.2f})")
        except ValueError as err:
            print(f"anharmonic fit with {order} term(s): {err}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--part", choices=["fluid", "crystal"], required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--size", type=int, default=12)
    r.add_argument("--replicas", type=int, default=6)
    r.add_argument("--sweeps", type=int, default=900)
    r.add_argument("--equilibration", type=int, default=300)
    r.add_argument("--blocks", type=int, default=10)
    r.add_argument("--psi6-every", type=int, default=20)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--gammas", type=float, nargs="+", help="Γ values (default: the module's lists)")
    r.add_argument("--continue", dest="cont", action="store_true", help="continue the runs saved in --out")
    a = sub.add_parser("analyse")
    a.add_argument("files", nargs="+", help="the .npz files of one supercell (fluid and crystal parts)")
    a.add_argument("--bootstrap", type=int, default=200)
    a.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    run(args) if args.cmd == "run" else analyse(args)


if __name__ == "__main__":
    main()
