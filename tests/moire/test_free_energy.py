"""Free energies of the unpinned classical crystal and fluid (moire_cli/free_energy.py): the closed-form
pieces. The Monte Carlo runs that locate Γ_m are in bench/bench_melting_anchor.py."""

from __future__ import annotations

import numpy as np
import pytest

from moire_cli import crystals, dynamics
from moire_cli import free_energy as fe
from moire_cli import montecarlo as mc
from moire_cli.potentials import Coulomb, MoirePotential


def _electrons(a_M=8.0):
    return dynamics.LatticeModel(crystals.build_crystal("triangular", a_M), None, Coulomb(5.1), 0.45)


@pytest.mark.parametrize("size", [4, 6, 12])
def test_ideal_gas_energy_is_the_madelung_energy_of_the_box_lattice(size):
    # uniform configurations: ũ(0) = ξ/2, the Madelung energy per particle of a lattice of boxes
    # (triangular with spacing L a_nn, so e_M/L in e²/(κa)); checks the pair table's zero mean and the
    # bookkeeping of the Monte Carlo's dropped constants together
    assert fe.ideal_gas_energy(_electrons(), (size, size)) == pytest.approx(fe.E_MADELUNG / size, abs=1e-6)


def test_ideal_gas_energy_matches_sampled_uniform_configurations():
    m = _electrons()
    sc = mc.build_supercell(m.crystal, (4, 4))
    pair = mc.PeriodicPairEnergy(m.interaction, sc)
    e0, _ = fe.energy_unit(m)
    x = np.random.default_rng(5).random((20000, 2)) @ sc.box
    d = sc.minimum_image(x[:10000] - x[10000:])
    e_ideal = 0.5 * pair(sc.minimum_image(sc.sites[1:] - sc.sites[0])).sum()
    sampled = fe.E_MADELUNG + (0.5 * (sc.n - 1) * pair(d).mean() - e_ideal) / e0
    err = 0.5 * (sc.n - 1) * pair(d).std() / np.sqrt(len(d)) / e0
    assert abs(sampled - fe.ideal_gas_energy(m, (4, 4))) < 4 * err


def test_low_temperature_energy_is_madelung_plus_equipartition():
    # classical harmonic limit: βU/N = Γ e_M + (N − 1)/N (2N − 2 quadratic modes, centre of mass free)
    m = _electrons()
    gamma = np.full(6, 3000.0)
    r = mc.run_monte_carlo(m, fe.temperature(m, gamma), supercell=(3, 3), sweeps=800, equilibration=100,
                           blocks=10, psi6_every=50, seed=4)
    e0, _ = fe.energy_unit(m)
    beta_u = gamma[0] * r.energy / e0  # per replica, relative to the ideal crystal
    mean, err = beta_u.mean(), beta_u.std(ddof=1) / np.sqrt(len(beta_u))
    assert err < 0.05 and abs(mean - 8 / 9) < 3.5 * err


def test_harmonic_spectrum_sum_converges_to_the_thermodynamic_limit():
    # (1/2N)Σ′ ln κ̃ over the supercell's q-mesh: a Riemann sum of a smooth-but-log-singular integrand,
    # changing by O(ln N/N) between supercells; all modes stable
    m = _electrons()
    s = [fe.harmonic_log_spectrum(m, (L, L)) for L in (6, 12, 24)]
    assert abs(s[2] - s[1]) < abs(s[1] - s[0])
    assert abs(s[2] - s[1]) < 0.03


def test_fluid_integral_of_a_smooth_energy():
    def u(g):
        return fe.E_MADELUNG + 0.9 / (1 + g) + 0.2 * np.exp(-g / 30) / (1 + g) ** 0.5

    nodes = np.array([1.0, 2, 4, 8, 15, 25, 40, 60, 80, 100, 115, 130, 145, 160])
    integral = fe.FluidIntegral(nodes, u(nodes), float(u(0.0)))
    from scipy.integrate import quad

    for g in (10.0, 90.0, 137.0, 160.0):
        exact = quad(u, 0, g, limit=200)[0]
        assert integral(g) == pytest.approx(exact, abs=2e-3)
    with pytest.raises(ValueError, match="known on"):
        integral(200.0)


def test_anharmonic_fit_and_crystal_free_energy():
    g = np.array([100.0, 150, 200, 300, 500])
    c, chi2 = fe.fit_anharmonic(g, 3.0 / g - 40.0 / g**2, np.full(5, 1e-3))
    np.testing.assert_allclose(c, [3.0, -40.0], rtol=1e-8)
    # d(βF_cr/N)/dΓ = ũ_cr = e_M + [(N − 1)/N + βu_anh]/Γ (finite difference)
    n, h, x = 144, 1e-4, 130.0
    slope = (fe.crystal_free_energy(x + h, n, -0.6, c) - fe.crystal_free_energy(x - h, n, -0.6, c)) / (2 * h)
    assert slope == pytest.approx(fe.E_MADELUNG + ((n - 1) / n + 3.0 / x - 40.0 / x**2) / x, rel=1e-7)


def test_pinned_or_non_coulomb_models_are_refused():
    pinned = dynamics.LatticeModel(crystals.build_crystal("triangular", 8.0),
                                   MoirePotential(8.0, 15.0, np.deg2rad(45.0), -1), Coulomb(5.1), 0.45)
    with pytest.raises(ValueError, match="unpinned"):
        fe.energy_unit(pinned)
