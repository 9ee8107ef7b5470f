"""Lindemann melting on the real lattice dynamics: sum rule, Wigner crystal, the seeds' claims."""

import numpy as np
from scipy.special import zeta

from moire_cli import crystals, dynamics, ewald, lindemann, melt_sweep
from moire_cli.excitons import exciton_interaction
from moire_cli.potentials import Coulomb, Keldysh, MoirePotential
from moire_cli.units import E2_MEV_NM, HBAR2_OVER_M0_MEV_NM2

T = np.linspace(0.0, 600.0, 13)


def _triangular_model(a, V, interaction, mass, psi=0.0, sign=1, **kw):
    cr = crystals.build_crystal("triangular", a)
    pot = MoirePotential(a, V, psi, sign) if V > 0 else None
    return dynamics.LatticeModel(cr, pot, interaction, mass, **kw)


def _triangular_inverse_cube_sum(a):
    """Σ′_R |R|⁻³ over the triangular lattice = 6 ζ(3/2) L(3/2, χ₋₃) / a³ (Eisenstein integers;
    L(s, χ₋₃) = 3⁻ˢ[ζ(s, 1/3) − ζ(s, 2/3)])."""
    s = 1.5
    return 6 * zeta(s) * 3**-s * (zeta(s, 1 / 3) - zeta(s, 2 / 3)) / a**3


def test_sum_rule_trace_of_dynamical_matrix_coulomb_ewald():
    """⟨tr ħ²D(q)⟩ over a full N×N mesh = (ħ²/m)[2k_M + Σ′_{R∉NΛ} ∇²U(R)] (spec §7), ∇²(C/r) = C/r³;
    the lattice sum in closed form, the aliased superlattice NΛ (also triangular) subtracted."""
    a, V, mass, kappa, n = 9.0, 8.0, 0.45, 4.5, 24
    model = _triangular_model(a, V, Coulomb(kappa), mass, psi=np.deg2rad(45), sign=-1)
    q = crystals.monkhorst_pack(model.crystal, (n, n))
    trace = np.trace(dynamics.dynamical_matrix(model, q), axis1=1, axis2=2).real.mean()
    c = E2_MEV_NM / kappa
    lattice_sum = c * (_triangular_inverse_cube_sum(a) - _triangular_inverse_cube_sum(n * a))
    expected = HBAR2_OVER_M0_MEV_NM2 / mass * (2 * model.potential.k_M + lattice_sum)
    np.testing.assert_allclose(trace, expected, rtol=1e-10)


def test_sum_rule_trace_of_dynamical_matrix_exciton_dipoles():
    """Same identity for the two-sheet dipole (real-space sum, cut-off < N·a so nothing aliases)."""
    a, V, kappa, n = 7.0, 10.0, 4.5, 24
    inter = exciton_interaction("dipole-twosheet", kappa, 0.65, 5.171, 4.511)
    model = _triangular_model(a, V, inter, 0.86, short_range_cutoff=8 * a)
    q = crystals.monkhorst_pack(model.crystal, (n, n))
    trace = np.trace(dynamics.dynamical_matrix(model, q), axis1=1, axis2=2).real.mean()
    lat = ewald.lattice_points(model.crystal.cell, 8 * a)
    r = np.linalg.norm(lat, axis=1)
    r = r[r > 0]
    _, u1, u2 = inter.radial(r)
    expected = HBAR2_OVER_M0_MEV_NM2 / 0.86 * (2 * model.potential.k_M + np.sum(u2 + u1 / r))
    np.testing.assert_allclose(trace, expected, rtol=1e-11)


def test_unpinned_wigner_crystal_quantum_lindemann_ratio():
    """Harmonic 2D Wigner crystal (no moiré potential) at T = 0: L ≈ 0.3 at r_s = 31–37, the
    quantum-melting densities of Tanatar & Ceperley (1989) and Drummond & Needs (2009).
    We get L = 0.301 (r_s = 31) and 0.288 (r_s = 37), L ∝ r_s^(−1/4)."""
    a_b = HBAR2_OVER_M0_MEV_NM2 / E2_MEV_NM  # Bohr radius for m = m₀, κ = 1 (nm)
    rs = np.array([31.0, 37.0])
    a = rs * a_b * np.sqrt(2 * np.pi / np.sqrt(3))  # triangular lattice constant from r_s
    models = [_triangular_model(ai, 0.0, Coulomb(1.0), 1.0) for ai in a]
    res = melt_sweep.melt_sweep(models, 0.3, T[:3], meshes=(24, 48), tolerance=1e-3, relax=False)
    l0 = res.lindemann_ratio_zero
    assert not res.pinned.any() and list(res.criterion) == ["relative", "relative"]
    np.testing.assert_allclose(l0, [0.3012, 0.2882], atol=1.5e-3)
    np.testing.assert_allclose(l0[1] / l0[0], (rs[1] / rs[0]) ** -0.25, rtol=1e-3)
    assert np.all(np.abs(l0 - 0.3) < 0.02)
    assert np.isnan(res.lindemann_ratio[:, 1:]).all()  # single-site L(T > 0) diverges: not reported
    assert np.all(np.isfinite(res.relative_lindemann_ratio))
    assert res.quantum_melted[0] and not res.quantum_melted[1]  # L_c = 0.3 falls between them


def test_screening_lowers_electron_crystal_melting_temperature():
    """Suspended WSe₂-like sample (κ = 1): Keldysh (r₀ = 4.511 nm) weakens the inter-site Coulomb
    repulsion, so the pinned hole crystal melts at a lower T_m (seed claim)."""
    a, V, mass = 10.0, 3.0, 0.45
    common = {"psi": np.deg2rad(45), "sign": -1}
    bare = _triangular_model(a, V, Coulomb(1.0), mass, **common)
    screened = _triangular_model(a, V, Keldysh(1.0, 4.511), mass, short_range_tol=1e-3, **common)
    res = melt_sweep.melt_sweep([bare, screened], 0.3, T, meshes=(12, 24), relax=False)
    tm = res.melting_temperature
    assert np.all(np.isfinite(tm)) and tm[1] < 0.95 * tm[0]
    assert res.lindemann_ratio_zero[1] > res.lindemann_ratio_zero[0]


def test_screening_raises_exciton_crystal_melting_temperature():
    """Same moiré confinement, interlayer excitons: the two-sheet (screened) dipole repels more than
    the bare dipole, so the exciton crystal melts at a higher T_m (seed claim)."""
    a, V, kappa = 6.0, 12.0, 1.0
    models = [
        _triangular_model(a, V, exciton_interaction(kind, kappa, 0.65, 5.171, 4.511), 0.86)
        for kind in ("dipole-bare", "dipole-twosheet", "dipole-lumped")
    ]
    res = melt_sweep.melt_sweep(models, 0.3, T, meshes=(12, 24), relax=False)
    tm = res.melting_temperature
    assert np.all(np.isfinite(tm))
    assert tm[1] > 1.02 * tm[0] and tm[2] > 1.02 * tm[0]


def test_deeper_moire_potential_raises_melting_temperature():
    """Deeper V: smaller L(0) and higher T_m; too shallow a potential does not hold a crystal at
    a_M = 10 nm at all (quantum melted), the seed's "strong confinement is essential"."""
    models = [_triangular_model(10.0, v, Coulomb(5.1), 0.45) for v in (1.0, 2.0, 4.0, 15.0)]
    res = melt_sweep.melt_sweep(models, 0.3, T, meshes=(12, 24))
    tm = res.melting_temperature
    assert res.quantum_melted.tolist() == [True, False, False, False] and np.isnan(tm[0])
    assert np.all(np.isfinite(tm[1:])) and np.all(np.diff(tm[1:]) > 0)
    assert np.all(np.diff(res.lindemann_ratio_zero) < 0)
    np.testing.assert_allclose(res.hbar_omega_M, [m.potential.hbar_omega_M(0.45) for m in models])


def test_melting_temperature_solves_the_lindemann_criterion():
    """T_m from the sweep is where the reported L(T) crosses L_c, point by point (vectorized sweep)."""
    models = [_triangular_model(a, 6.0, Coulomb(5.1), 0.45) for a in (8.0, 12.0)]
    lc = np.array([0.28, 0.3])
    res = melt_sweep.melt_sweep(models, lc, T, meshes=(12,), relax=False)
    assert np.all(np.isfinite(res.melting_temperature))
    for i, m in enumerate(models):
        q = crystals.monkhorst_pack(m.crystal, (12, 12))
        w, e = dynamics.phonons(m, q)
        tol = 1e-5 * np.abs(w).max()
        spec = lindemann.single_site_spectrum(w, e, m.mass, m.crystal.nearest_neighbour_distance, tol)
        np.testing.assert_allclose(spec.lindemann_ratio(np.array([res.melting_temperature[i]])), lc[i], rtol=1e-9)
        np.testing.assert_allclose(spec.lindemann_ratio(T), res.lindemann_ratio[i], rtol=1e-12)
    assert res.mesh.mesh == 12 and not res.mesh.converged  # one mesh: nothing checked, and said so
