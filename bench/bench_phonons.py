"""Benchmark: bands + DOS of the relaxed zigzag stripe on a 96×96 mesh with Coulomb Ewald sums.

Compares the batched implementation (all q at once, matrix products over lattice vectors, each
q/−q pair diagonalized once) with a
straightforward per-q-point loop of the same Ewald sums (measured on a subset of q in the same
run and scaled). Prints wall times and the ratio; not a test (no assertions).
Run: python bench/bench_phonons.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moire_cli import ewald  # noqa: E402
from moire_cli.crystals import build_crystal, high_symmetry_path, monkhorst_pack  # noqa: E402
from moire_cli.dynamics import LatticeModel, compute_phonons, phonons, relax  # noqa: E402
from moire_cli.potentials import Coulomb, MoirePotential  # noqa: E402
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2  # noqa: E402

MESH = (96, 96)
N_SUBSET = 96
REPEATS = 3


def per_q_loop(model: LatticeModel, q: np.ndarray) -> np.ndarray:
    """Reference: the same Ewald force-constant sums, one q-point (and one site pair) at a time."""
    cr = model.crystal
    C = model.interaction.coulomb_tail
    p = ewald.ewald_parameters(cr, model.ewald_eta, model.ewald_tol)
    lat = ewald.lattice_points(cr.cell, p.r_cut)
    g_all = ewald.lattice_points(cr.reciprocal, p.g_cut + np.linalg.norm(q, axis=1).max())
    n, eta = cr.n_sites, p.eta
    out = np.empty((len(q), 2 * n))
    hess_pot = model.potential.hessian(cr.basis)

    def s_of(qv):
        s = np.zeros((n, n, 2, 2), complex)
        for i in range(n):
            for j in range(n):
                d = lat + cr.basis[j] - cr.basis[i]
                r = np.linalg.norm(d, axis=1)
                ok = r > 1e-12
                d, r = d[ok], r[ok]
                gg = special.erfc(eta * r)
                ex = 2 * eta / np.sqrt(np.pi) * np.exp(-((eta * r) ** 2))
                u1 = -C * (gg / r**2 + ex / r)
                u2 = C * (2 * gg / r**3 + ex * (2 / r**2 + 2 * eta**2))
                rr = d[:, :, None] * d[:, None, :] / (r**2)[:, None, None]
                phi = u2[:, None, None] * rr + (u1 / r)[:, None, None] * (np.eye(2) - rr)
                s[i, j] += (phi * np.exp(1j * d @ qv)[:, None, None]).sum(0)
                k = g_all + qv
                kn = np.linalg.norm(k, axis=1)
                okk = kn > 1e-12
                k, kn, gv = k[okk], kn[okk], g_all[okk]
                w = special.erfc(kn / (2 * eta)) / kn * np.exp(-1j * gv @ (cr.basis[j] - cr.basis[i]))
                s[i, j] -= 2 * np.pi * C / cr.area * (k[:, :, None] * k[:, None, :] * w[:, None, None]).sum(0)
            s[i, i] += 4 * C * eta**3 / (3 * np.sqrt(np.pi)) * np.eye(2)
        return s

    s0 = s_of(np.zeros(2)).real
    for iq, qv in enumerate(q):
        s = s_of(qv)
        h = np.zeros((2 * n, 2 * n), complex)
        for i in range(n):
            for j in range(n):
                blk = -s[i, j]
                if i == j:
                    blk = blk + s0[i].sum(0) + hess_pot[i]
                h[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = blk
        w2 = np.linalg.eigvalsh(HBAR2_OVER_M0_MEV_NM2 / model.mass * 0.5 * (h + h.conj().T))
        out[iq] = np.sign(w2) * np.sqrt(np.abs(w2))
    return out


def main() -> None:
    a = 8.0
    cr = build_crystal("zigzag_stripe", a)
    model = LatticeModel(cr, MoirePotential(a, 15.0, np.deg2rad(45.0), -1), Coulomb(5.1), 0.45)
    t0 = time.perf_counter()
    rel = relax(model)
    t_relax = time.perf_counter() - t0
    q_path, _, _ = high_symmetry_path(rel.model.crystal, None, 60)
    q_mesh = monkhorst_pack(rel.model.crystal, MESH)
    t_batched = np.inf
    for _ in range(REPEATS):  # best of REPEATS: the machine is shared
        t0 = time.perf_counter()
        res = compute_phonons(rel.model, q_path, q_mesh, relax_first=False)
        t_batched = min(t_batched, time.perf_counter() - t0)
    n_total = len(q_path) + len(q_mesh)
    t_plain = np.inf
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        phonons(rel.model, np.concatenate([q_path, q_mesh]))
        t_plain = min(t_plain, time.perf_counter() - t0)
    sub = q_mesh[np.linspace(0, len(q_mesh) - 1, N_SUBSET).astype(int)]
    t_loop = np.inf
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        f_loop = per_q_loop(rel.model, sub)
        t_loop = min(t_loop, (time.perf_counter() - t0) * n_total / len(sub))
    f_ref = res.mesh_frequencies[np.linspace(0, len(q_mesh) - 1, N_SUBSET).astype(int)]
    err = np.abs(f_loop - f_ref).max()
    print(f"zigzag stripe, Coulomb Ewald, {MESH[0]}x{MESH[1]} mesh + {len(q_path)} path q-points = {n_total} q")
    print(f"relaxation:                     {t_relax:8.3f} s (max |F| = {rel.max_force:.1e} meV/nm)")
    print(f"batched bands + DOS (all q):    {t_batched:8.3f} s (best of {REPEATS}; D(-q) = D(q)* used)")
    print(f"batched bands, no q -> -q reuse: {t_plain:8.3f} s (best of {REPEATS})")
    print(f"per-q loop (scaled from {N_SUBSET} q): {t_loop:8.3f} s (best of {REPEATS})")
    print(f"speed-up batched vs loop:       {t_loop / t_batched:8.1f} x ({t_loop / t_plain:.1f} x without q -> -q reuse)")
    print(f"max |Δω| batched vs loop:       {err:.2e} meV; stable = {res.stability['stable']}, "
          f"min ħω = {res.stability['min_frequency_meV']:.3f} meV")


if __name__ == "__main__":
    main()
