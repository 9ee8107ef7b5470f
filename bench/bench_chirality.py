"""Benchmark: Berry curvature and Chern numbers of the honeycomb crystal under B on a 48×48 mesh.

Times the vectorized path (batched companion eig + FHS plaquettes with determinant links, all q at
once) against a straightforward per-q-point loop of the same algorithm, measured in the same run
on the same dynamical matrices, and checks that both give the same Chern numbers and Ω map.
Aim: the whole computation (dynamical matrices included) under 2 s on 2 cores.

Run: python bench/bench_chirality.py   (from the repository root)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moire_cli import crystals, dynamics, potentials  # noqa: E402
from moire_cli import gyroscopic as gy  # noqa: E402
from moire_cli import topology as tp  # noqa: E402

MESH = (48, 48)
FIELD_T = 20.0
MASS = 0.5


def build_model() -> dynamics.LatticeModel:
    """ν = 2/3 honeycomb generalized Wigner crystal, a_M = 8 nm, V = 15 meV, ψ = 180°, κ = 4.5."""
    a_m = 8.0
    crystal = crystals.build_crystal("honeycomb_gwc", a_m)
    pot = potentials.MoirePotential(a_m, 15.0, np.pi, +1)
    return dynamics.LatticeModel(crystal, pot, potentials.Coulomb(4.5), MASS)


def loop_reference(d: np.ndarray, q: np.ndarray, crystal, omega_c: float):
    """Per-q-point loop: eigenproblem q by q, then links plaquette by plaquette (the baseline)."""
    n1, n2 = MESH
    m = d.shape[1]
    modes = [gy.gyroscopic_modes(d[i : i + 1], omega_c) for i in range(len(q))]
    order, _ = tp.mesh_order(q, crystal.reciprocal, MESH)
    gmat = gy.gyroscopic_term(m, omega_c)
    b = crystal.reciprocal
    tau = crystal.basis

    def state(i1, i2):
        """(u, ω) at mesh index (i1, i2), continued to the actual q via the periodic gauge."""
        k = order[(i1 % n1) * n2 + i2 % n2]
        target = (i1 / n1) * b[0] + (i2 / n2) * b[1]
        g = target - q[k]
        phase = np.repeat(np.exp(-1j * (tau @ g)), 2)
        return modes[k].displacements[0] * phase[:, None], modes[k].frequencies[0]

    omega = np.empty((n1, n2, m))
    area = float(np.linalg.det(b)) / (n1 * n2)
    for i1 in range(n1):
        for i2 in range(n2):
            corners = [
                state(i1, i2),
                state(i1 + 1, i2),
                state(i1 + 1, i2 + 1),
                state(i1, i2 + 1),
                state(i1, i2),
            ]
            for s in range(m):
                prod = 1.0 + 0j
                for (ua, wa), (ub, wb) in zip(corners[:-1], corners[1:], strict=True):
                    link = np.conj(ua[:, s]) @ ((wa[s] + wb[s]) * ub[:, s] - gmat @ ub[:, s])
                    prod *= link / abs(link)
                omega[i1, i2, s] = -np.angle(prod) / area
    chern = [int(round(x)) for x in omega.sum(axis=(0, 1)) * area / (2 * np.pi)]
    return omega, chern


def main() -> None:
    model = build_model()
    cr = model.crystal
    omega_c = gy.cyclotron_energy(FIELD_T, MASS, -1)
    q = crystals.monkhorst_pack(cr, MESH)

    t0 = time.perf_counter()
    d = dynamics.dynamical_matrix(model, q)
    t1 = time.perf_counter()
    modes = gy.gyroscopic_modes(d, omega_c)
    berry = tp.berry_curvature_mesh(modes, q, MESH, cr.basis, cr.reciprocal)
    t2 = time.perf_counter()
    ref_omega, ref_chern = loop_reference(d, q, cr, omega_c)
    t3 = time.perf_counter()

    isolated = [g.first for g in berry.groups if g.first == g.last]
    diff = np.nanmax(np.abs(berry.berry_curvature[..., isolated] - ref_omega[..., isolated]))
    scale = np.nanmax(np.abs(ref_omega[..., isolated]))
    print(
        f"honeycomb_gwc, B = {FIELD_T} T (ħω_c = {omega_c:.3f} meV), mesh {MESH[0]}×{MESH[1]}, {d.shape[1]} bands"
    )
    print(f"Chern numbers (vectorized): {berry.chern_numbers}; loop reference: {ref_chern}")
    print(f"max |ΔΩ| vectorized vs loop (isolated bands): {diff:.2e} nm² (max |Ω| {scale:.3g} nm²)")
    print(f"dynamical matrices (engine): {t1 - t0:.3f} s")
    print(f"chirality, vectorized:       {t2 - t1:.3f} s")
    print(
        f"chirality, per-q loop:       {t3 - t2:.3f} s   ratio loop/vectorized = {(t3 - t2) / (t2 - t1):.1f}x"
    )
    total = t2 - t0
    print(f"total (D + Berry + Chern):   {total:.3f} s   aim < 2 s: {'met' if total < 2 else 'NOT met'}")
    ok = all(c == r for c, r in zip(berry.chern_numbers, ref_chern, strict=False) if c is not None)
    if not ok or diff > 1e-6 * max(scale, 1.0):
        print("parity check FAILED")
        sys.exit(1)


if __name__ == "__main__":
    main()
