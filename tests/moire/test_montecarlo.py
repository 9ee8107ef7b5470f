"""Classical Monte Carlo of the full potential (moire_cli/montecarlo.py, spec §12). Tiny supercells and
few sweeps here; the unpinned melting Γ is in bench/bench_montecarlo.py and a slow test."""

from __future__ import annotations

import numpy as np
import pytest

from moire_cli import crystals, dynamics
from moire_cli import montecarlo as mc
from moire_cli.potentials import Coulomb, Keldysh, MoirePotential


def _hole(a_M=8.0, V=15.0, interaction=None):
    pot = MoirePotential(a_M, V, np.deg2rad(45.0), -1) if V else None
    return dynamics.LatticeModel(crystals.build_crystal("triangular", a_M), pot, interaction or Coulomb(5.1), 0.45)


def test_periodic_coulomb_pair_energy_matches_the_ewald_lattice_sum():
    from moire_cli import ewald
    from moire_cli.crystals import Crystal

    m = _hole()
    sc = mc.build_supercell(m.crystal, (4, 3))  # an oblique 32 × 24 nm box
    phi = mc.PeriodicPairEnergy(m.interaction, sc)
    d = sc.minimum_image(np.array([[3.1, 2.0], [5.0, -7.0], [8.0, 0.0], [-13.0, 9.5]]))
    c = m.interaction.coulomb_tail
    # two particles (0 and d) per supercell: the Ewald energy per cell is φ(d) plus a constant
    energy = np.array([ewald.coulomb_energy(Crystal("pair", sc.box, np.array([[0.0, 0.0], x])), c) for x in d])
    np.testing.assert_allclose(phi(d) - phi(d[:1]), energy - energy[0], atol=2e-6 * c / sc.a)


def test_short_ranged_interactions_are_the_minimum_image_pair_energy():
    m = _hole(interaction=Keldysh(5.1, 4.511))
    sc = mc.build_supercell(m.crystal, (6, 6))
    phi = mc.PeriodicPairEnergy(m.interaction, sc)
    far = mc.PeriodicPairEnergy(Coulomb(5.1), sc)  # Keldysh − Coulomb is short-ranged: ~ (r₀/κ)²/r³
    d = np.array([[8.0, 0.0], [4.0, 6.9], [16.0, 1.0]])
    r = np.linalg.norm(d, axis=1)
    expected = m.interaction.radial(r)[0] - Coulomb(5.1).radial(r)[0]
    np.testing.assert_allclose(phi(d) - far(d), expected, rtol=1e-8, atol=1e-9)


def test_bond_orientational_order_and_blocking():
    sc = mc.build_supercell(crystals.build_crystal("triangular", 1.0), (12, 12))
    assert mc.bond_orientational_order(sc.sites[None], sc.box)[0] == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(3)
    gas = rng.random((4, 144, 2)) @ sc.box
    assert np.all(mc.bond_orientational_order(gas, sc.box) < 0.2)  # ~1/√N for an isotropic gas
    series = rng.standard_normal((2, 40000))
    blk, mean, err = mc.blocking(series, 20)
    assert blk.shape == (2, 20)
    np.testing.assert_allclose(err, 1 / np.sqrt(40000), rtol=0.5)


def test_low_temperature_msd_is_the_harmonic_classical_value():
    m = dynamics.relax(_hole()).model
    res = mc.run_monte_carlo(m, [1.0, 2.0], supercell=(4, 4), sweeps=600, equilibration=100, blocks=10,
                             psi6_every=20, seed=7)
    assert res.n_particles == 16 and res.supercell == (4, 4)
    err = res.mean_square_displacement_err
    assert np.all(err < 0.05 * res.mean_square_displacement)  # a meaningful error bar
    assert np.all(np.abs(res.mean_square_displacement - res.harmonic_msd) < 3.5 * err)
    assert np.all(res.psi6 > 0.95) and np.all(res.acceptance > 0.3)
    assert res.traces["mean_square_displacement"].shape == (2, 10)
    # Γ = e²√(πn)/(κ k_BT): n = 2/(√3 a²)
    gamma = m.interaction.coulomb_tail * np.sqrt(np.pi * 2 / (np.sqrt(3) * 64.0)) / (8.617333262e-2 * 1.0)
    assert res.gamma[0] == pytest.approx(gamma, rel=1e-6)


def test_seeded_runs_repeat_exactly():
    m = _hole(V=0.0)  # unpinned: the centre of mass is removed
    run = dict(supercell=(3, 3), sweeps=40, equilibration=10, blocks=4, psi6_every=10)
    a = mc.run_monte_carlo(m, [5.0], seed=11, **run)
    b = mc.run_monte_carlo(m, [5.0], seed=11, **run)
    c = mc.run_monte_carlo(m, [5.0], seed=12, **run)
    assert a.mean_square_displacement == b.mean_square_displacement
    assert a.mean_square_displacement != c.mean_square_displacement
    assert not a.pinned


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="> 0 K"):
        mc.run_monte_carlo(_hole(), [0.0], supercell=(2, 2), sweeps=40, blocks=4)
    with pytest.raises(ValueError, match="2×2"):
        mc.build_supercell(_hole().crystal, (1, 4))
    with pytest.raises(ValueError, match="blocks"):
        mc.run_monte_carlo(_hole(), [1.0], supercell=(2, 2), sweeps=30, blocks=4, psi6_every=10)


def test_random_and_continued_starts():
    m = _hole(V=0.0)
    run = dict(supercell=(4, 4), sweeps=40, equilibration=10, blocks=4, psi6_every=10)
    hot = mc.run_monte_carlo(m, [2000.0, 2000.0], seed=3, initial="random", **run)
    assert np.all(hot.psi6 < 0.5) and hot.positions.shape == (2, 16, 2)
    # energies stay relative to the ideal crystal whatever the start: a hot fluid lies above it
    assert np.all(hot.energy > 0)
    cold = mc.run_monte_carlo(m, [1.0, 1.0], seed=3, initial=np.broadcast_to(
        mc.build_supercell(m.crystal, (4, 4)).sites, (2, 16, 2)), **run)
    assert np.all(cold.psi6 > 0.95)
    with pytest.raises(ValueError, match="initial"):
        mc.run_monte_carlo(m, [1.0], seed=3, initial="liquid", **run)
    with pytest.raises(ValueError, match="shape"):
        mc.run_monte_carlo(m, [1.0], seed=3, initial=np.zeros((2, 16, 2)), **run)


def test_periodic_coulomb_pair_energy_near_contact():
    """The free-energy anchor's fluid samples pairs far inside one neighbour distance at small Γ: the
    pair energy there (0.002–0.7 a, any direction) against the independent Ewald sum of the two-site
    cell, to 2e-6 of the Coulomb scale c/a (the short part is erfc in closed form at every distance;
    only the smooth long-range part is a bicubic table)."""
    from moire_cli import ewald
    from moire_cli.crystals import Crystal

    m = _hole()
    sc = mc.build_supercell(m.crystal, (6, 6))
    phi = mc.PeriodicPairEnergy(m.interaction, sc)
    rng = np.random.default_rng(3)
    r = sc.a * np.array([0.002, 0.02, 0.1, 0.3, 0.3, 0.7])
    ang = rng.uniform(0, 2 * np.pi, r.size)
    d = np.stack([r * np.cos(ang), r * np.sin(ang)], axis=-1)
    far = sc.minimum_image(np.array([[7.3, 11.9]]))  # the reference: a generic pair at ~0.9 a_M
    c = m.interaction.coulomb_tail
    cell = lambda x: ewald.coulomb_energy(Crystal("pair", sc.box, np.array([[0.0, 0.0], x])), c)  # noqa: E731
    got = phi(d) - phi(far)[0]
    want = np.array([cell(x) for x in d]) - cell(far[0])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=2e-6 * c / sc.a)
    assert got[0] > 100 * c / sc.a  # the 1/r contact repulsion is there (c/(0.002 a) = 500 c/a)
