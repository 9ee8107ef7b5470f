"""2D Ewald sums (Bonsall & Maradudin, PRB 15, 1959 (1977)) and the batched real-space kernel."""

import numpy as np
import pytest

from moire_cli import ewald
from moire_cli.crystals import Crystal, build_crystal
from moire_cli.potentials import Coulomb, force_constants

C = 1.0


def test_madelung_triangular_and_square():
    tri = build_crystal("triangular", 1.0)
    assert ewald.coulomb_energy(tri, C) / np.sqrt(tri.density) == pytest.approx(-1.960516, abs=1e-6)
    a_ws = 1 / np.sqrt(np.pi * tri.density)
    assert ewald.coulomb_energy(tri, C) * a_ws == pytest.approx(-1.106103, abs=1e-6)
    sq = Crystal("square", np.eye(2) * 3.0, [[0.0, 0.0]])
    assert ewald.coulomb_energy(sq, C) / np.sqrt(sq.density) == pytest.approx(-1.950132, abs=1e-6)
    # same lattice described with a 2-site rectangular cell: same energy per particle
    rect = Crystal("rect", [[1, 0], [0, np.sqrt(3)]], [[0, 0], [0.5, np.sqrt(3) / 2]])
    assert ewald.coulomb_energy(rect, C) / 2 == pytest.approx(ewald.coulomb_energy(tri, C), rel=1e-13)


def _zigzag_distorted():
    cr = build_crystal("zigzag_stripe", 8.0)
    return cr.with_basis(cr.basis + np.array([[0.3, -0.2], [-0.45, 0.1]]))


@pytest.mark.parametrize("factor", [0.5, 2.0, 3.5])
def test_results_independent_of_eta(factor):
    cr = _zigzag_distorted()
    eta0 = np.sqrt(np.pi / cr.area)
    q = np.array([[0.0, 0.0], [0.013, -0.02], [0.3, 0.17], [-0.41, 0.9]])
    e0, f0, s0 = (ewald.coulomb_energy(cr, 280.0), ewald.coulomb_forces(cr, 280.0),
                  ewald.coulomb_force_constants(cr, 280.0, q))
    eta = factor * eta0
    assert ewald.coulomb_energy(cr, 280.0, eta) == pytest.approx(e0, rel=1e-12)
    assert ewald.coulomb_forces(cr, 280.0, eta) == pytest.approx(f0, rel=1e-11, abs=1e-12 * np.abs(f0).max())
    s = ewald.coulomb_force_constants(cr, 280.0, q, eta)
    assert np.abs(s - s0).max() <= 1e-12 * np.abs(s0).max()


def test_forces_are_minus_energy_gradient():
    cr = _zigzag_distorted()
    h = 1e-5
    f = ewald.coulomb_forces(cr, 280.0)
    fd = np.zeros_like(f)
    for k in range(2):
        for a in range(2):
            d = np.zeros_like(cr.basis)
            d[k, a] = h
            fd[k, a] = -(ewald.coulomb_energy(cr.with_basis(cr.basis + d), 280.0)
                         - ewald.coulomb_energy(cr.with_basis(cr.basis - d), 280.0)) / (2 * h)
    assert f == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_batched_realspace_kernel_matches_per_q_loop():
    """Batched (all q, all R at once) vs a slow reference: explicit loops over q and R."""
    cr = _zigzag_distorted()
    inter = Coulomb(5.0)
    lat = ewald.lattice_points(cr.cell, 60.0)
    q = np.array([[0.01, 0.02], [0.2, -0.3], [0.5, 0.5]])
    batched = ewald.realspace_force_constants(cr, inter.radial, lat, q, r_cut=50.0)
    for iq, qq in enumerate(q):
        for i in range(2):
            for j in range(2):
                ref = np.zeros((2, 2), complex)
                for R in lat:
                    d = R + cr.basis[j] - cr.basis[i]
                    if 0 < np.linalg.norm(d) <= 50.0:
                        ref += force_constants(inter, d) * np.exp(1j * qq @ d)
                assert batched[iq, i, j] == pytest.approx(ref, rel=1e-12, abs=1e-14)
