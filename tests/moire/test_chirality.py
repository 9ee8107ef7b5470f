"""gyroscopic.py, chirality.py and topology.py on a test-only spring model (closed forms, symmetries, invariants)."""

from __future__ import annotations

import numpy as np
import pytest

from moire_cli import chirality as ch
from moire_cli import gyroscopic as gy
from moire_cli import topology as tp
from moire_cli.units import HBAR_OMEGA_C_MEV_PER_T

from .spring_model import gamma_grid, honeycomb, k_point, triangular

GAMMA = np.zeros((1, 2))


def _circular(eps: np.ndarray) -> np.ndarray:
    """Per-site |2 Im(ε*_x ε_y)| / |ε_κ|² (1 = circular) for polarization columns (2n, 2n) → (n, 2n)."""
    spin = 2 * np.imag(np.conj(eps[0::2]) * eps[1::2])
    weight = np.abs(eps[0::2]) ** 2 + np.abs(eps[1::2]) ** 2
    return np.abs(spin) / np.where(weight > 1e-12, weight, 1.0), weight


# --- gyroscopic modes ------------------------------------------------------------------------------


@pytest.mark.parametrize("k_l, k_t", [(1.0, 0.2), (3.0, -0.5), (0.0, 0.0)])
@pytest.mark.parametrize("omega_c", [0.7, -1.3, 5.0])
def test_fock_darwin_at_gamma_whatever_the_springs(k_l, k_t, omega_c):
    omega_m2 = 4.0
    model = triangular(trap=omega_m2, k_l=k_l, k_t=k_t)
    modes = gy.gyroscopic_modes(model.dynamical_matrix(GAMMA), omega_c)
    big = np.sqrt(omega_m2 + omega_c**2 / 4)
    expected = np.sort([big - abs(omega_c) / 2, big + abs(omega_c) / 2])
    np.testing.assert_allclose(modes.frequencies[0], expected, rtol=1e-12)
    assert modes.normalized.all()
    # The upper mode turns with the cyclotron motion: counterclockwise (l > 0) for ω_c > 0.
    l_z, degenerate = ch.angular_momentum(modes)
    assert not degenerate.any()
    w_minus, w_plus = expected
    sign = np.sign(omega_c)
    np.testing.assert_allclose(
        l_z[0], sign * np.array([-w_minus, w_plus]) * 2 / (w_plus + w_minus), rtol=1e-10
    )
    circ, _ = _circular(modes.polarizations[0])
    np.testing.assert_allclose(circ, 1.0, atol=1e-12)


def test_cyclotron_energy_and_magnetic_moment():
    assert gy.cyclotron_energy(1.0, 1.0, -1) == pytest.approx(0.115768, rel=1e-5)
    assert gy.cyclotron_energy(10.0, 0.5, -1) == pytest.approx(20 * HBAR_OMEGA_C_MEV_PER_T)
    assert gy.cyclotron_energy(10.0, 0.5, +1) == -gy.cyclotron_energy(10.0, 0.5, -1)
    # |μ_z| ≈ 2 μ_B per ħ of angular momentum at m = 0.5 m₀, antiparallel for electrons (spec §6).
    assert ch.magnetic_moment(np.array(1.0), 0.5, -1) == pytest.approx(-2.0)
    assert ch.magnetic_moment(np.array(1.0), 0.5, +1) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        gy.cyclotron_energy(1.0, 0.0)
    with pytest.raises(ValueError):
        ch.magnetic_moment(np.array(1.0), 1.0, 0)


def test_zero_field_is_eigh_and_small_field_is_continuous():
    model = honeycomb(4.0, 5.0)
    q = gamma_grid(model.reciprocal, (7, 7)) + np.array([0.11, 0.07])
    d = model.dynamical_matrix(q)
    m0 = gy.gyroscopic_modes(d, 0.0)
    np.testing.assert_allclose(m0.frequencies, np.sqrt(np.linalg.eigvalsh(d)), rtol=1e-12)
    # Keep points whose modes are well split (a field mixes near-degenerate modes at any B).
    split = np.min(np.diff(m0.frequencies, axis=1), axis=1) > 0.05
    assert split.sum() >= 10
    d, m0 = d[split], gy.gyroscopic_modes(d[split], 0.0)
    l0, deg0 = ch.angular_momentum(m0)
    np.testing.assert_allclose(l0, ch.zhang_niu_angular_momentum(m0.polarizations), atol=1e-12)
    assert not deg0.any() and np.max(np.abs(l0)) > 0.1
    # l_z → Zhang–Niu as B → 0 (kinetic form, companion eig branch), linearly in ω_c.
    errors = []
    for omega_c in (1e-3, 1e-4):
        mb = gy.gyroscopic_modes(d, omega_c)
        np.testing.assert_allclose(mb.frequencies, m0.frequencies, atol=10 * omega_c)
        errors.append(np.max(np.abs(ch.angular_momentum(mb)[0] - l0)))
    assert errors[1] < 2e-3 and errors[1] < errors[0] / 5


def test_field_stabilises_a_repulsive_trap_but_not_a_weak_field():
    a = 1.0  # D = −a·1: a repulsive isotropic trap (Penning-like)
    d = -a * np.eye(2)[None]
    strong = gy.gyroscopic_modes(d, 3.0)
    s = np.sqrt(3.0**2 - 4 * a)
    np.testing.assert_allclose(strong.frequencies[0], [-(3.0 - s) / 2, (3.0 + s) / 2], rtol=1e-10)
    stab = gy.gyroscopic_stability(strong)
    assert stab["stable"] and stab["negative_energy_modes"] == 1 and stab["unstable_modes"] == 0
    weak = gy.gyroscopic_modes(d, 1.0)
    stab = gy.gyroscopic_stability(weak)
    assert not stab["stable"] and stab["unstable_modes"] == 2
    assert stab["max_growth_rate_meV"] == pytest.approx(np.sqrt(4 * a - 1.0) / 2, rel=1e-8)
    np.testing.assert_allclose(gy.gyroscopic_stability(gy.gyroscopic_modes(-d, 0.0))["stable"], True)
    assert not gy.gyroscopic_stability(gy.gyroscopic_modes(d, 0.0))["stable"]


# --- symmetries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [triangular(), honeycomb(4.0, 4.0)], ids=["triangular", "honeycomb"])
def test_both_symmetries_intact_no_chirality(model):
    for mesh in [(12, 12), (13, 13)]:  # K on the mesh, K between mesh points
        q = gamma_grid(model.reciprocal, mesh)
        modes = gy.gyroscopic_modes(model.dynamical_matrix(q), 0.0)
        l_z, degenerate = ch.angular_momentum(modes)
        np.testing.assert_allclose(l_z[~degenerate], 0.0, atol=1e-10)
        assert degenerate.any()  # Γ and K are degenerate and flagged
        np.testing.assert_allclose(l_z[degenerate], 0.0, atol=1e-10)  # subspace-invariant mean
        bm = tp.berry_curvature_mesh(modes, q, mesh, model.basis, model.reciprocal)
        omega = bm.berry_curvature
        assert np.nanmax(np.abs(omega)) < 1e-9
        # Undefined (NaN) only in the plaquettes that enclose K or K′ (degenerate between mesh points).
        bad = np.isnan(omega).any(axis=-1).ravel()
        k = k_point(model.reciprocal)
        frac = (bm.q_centres.reshape(-1, 2)[:, None, :] - np.array([k, -k])) @ np.linalg.inv(model.reciprocal)
        encloses = np.all(np.abs((frac - np.rint(frac)) * mesh[0]) < 0.5, axis=-1).any(axis=-1)
        np.testing.assert_array_equal(bad, encloses if mesh[0] % 3 else False)
        for g in bm.groups:  # never a random integer: 0, or undefined with the reason
            assert g.chern == 0 or (g.chern is None and "coarse" in g.note)


def test_honeycomb_inversion_breaking_valley_chirality():
    model = honeycomb(trap_a=4.0, trap_b=5.0)
    k = k_point(model.reciprocal)
    pts = np.array([k, -k])
    modes = gy.gyroscopic_modes(model.dynamical_matrix(pts), 0.0)
    l_z, degenerate = ch.angular_momentum(modes)
    assert not degenerate.any()
    # Circular: each site moves on a circle (C3 at K), possibly at rest.
    circ, weight = _circular(modes.polarizations[0])
    assert np.all((np.abs(circ - 1) < 1e-10) | (weight < 1e-12))
    np.testing.assert_allclose(l_z[1], -l_z[0], atol=1e-12)
    assert np.max(np.abs(l_z[0])) == pytest.approx(1.0, abs=1e-10)
    omega, deg = tp.berry_curvature_path(model.dynamical_matrix, pts, model.reciprocal, 0.0)
    assert not deg.any()
    np.testing.assert_allclose(omega[1], -omega[0], rtol=1e-6, atol=1e-9)
    assert np.min(np.abs(omega[0])) > 0.1
    for mesh in [(12, 12), (13, 13)]:
        q = gamma_grid(model.reciprocal, mesh)
        bm = tp.berry_curvature_mesh(
            gy.gyroscopic_modes(model.dynamical_matrix(q), 0.0), q, mesh, model.basis, model.reciprocal
        )
        assert bm.chern_numbers == [0, 0]  # Γ-degenerate pairs merged, each with C = 0


def test_berry_curvature_sign_matches_kubo_formula():
    """At B = 0: Ω_n = −2 Im Σ_{m≠n} ⟨n|∂xD|m⟩⟨m|∂yD|n⟩/(λ_n − λ_m)², with A = i⟨n|∇n⟩."""
    model = honeycomb(4.0, 5.0)
    k = k_point(model.reciprocal)
    q = np.array([0.8 * k + [0.05, -0.02], 0.5 * k + [0.0, 0.3]])
    h = 1e-5
    lam, vec = np.linalg.eigh(model.dynamical_matrix(q))
    dx = (model.dynamical_matrix(q + [h, 0]) - model.dynamical_matrix(q - [h, 0])) / (2 * h)
    dy = (model.dynamical_matrix(q + [0, h]) - model.dynamical_matrix(q - [0, h])) / (2 * h)
    vh = np.conj(np.swapaxes(vec, -1, -2))
    px, py = vh @ dx @ vec, vh @ dy @ vec
    diff = lam[:, :, None] - lam[:, None, :]
    np.fill_diagonal(diff[0], np.inf)
    np.fill_diagonal(diff[1], np.inf)
    kubo = -2 * np.imag(np.sum(px * np.swapaxes(py, -1, -2) / diff**2, axis=2))
    omega, _ = tp.berry_curvature_path(model.dynamical_matrix, q, model.reciprocal, 0.0, step=1e-4)
    np.testing.assert_allclose(omega, kubo, rtol=1e-4, atol=1e-6)
    assert np.max(np.abs(kubo)) > 0.05


# --- under B ---------------------------------------------------------------------------------------


def _chern(model, mesh, omega_c, grid=None):
    q = gamma_grid(model.reciprocal, mesh) if grid is None else grid
    modes = gy.gyroscopic_modes(model.dynamical_matrix(q), omega_c)
    return tp.berry_curvature_mesh(modes, q, mesh, model.basis, model.reciprocal)


def test_chern_numbers_under_field():
    model = honeycomb(4.0, 5.0)
    coarse, fine = _chern(model, (12, 12), 0.5), _chern(model, (24, 24), 0.5)
    assert [(g.first, g.last) for g in coarse.groups] == [(s, s) for s in range(4)]
    c = coarse.chern_numbers
    assert all(isinstance(x, int) for x in c) and sum(c) == 0 and any(c)
    assert fine.chern_numbers == c
    assert all(g.gapped and g.max_plaquette_phase < np.pi / 2 for g in coarse.groups)
    # Reversing the field is time reversal: C → −C.
    assert _chern(model, (12, 12), -0.5).chern_numbers == [-x for x in c]
    # Σ_plaquettes Ω·area = 2π C for each isolated band.
    area = abs(np.linalg.det(model.reciprocal)) / 144
    np.testing.assert_allclose(np.sum(coarse.berry_curvature, axis=(0, 1)) * area / (2 * np.pi), c, atol=1e-9)


def test_periodic_gauge_and_grid_order_do_not_matter():
    """The same mesh laid out as fractions in [−½, ½) (shuffled) or [0, 1): identical Ω per plaquette,
    which requires the e^{−iG·τ} phase on links that wrap around the zone; and the mesh agrees with
    the local small-plaquette Ω at the plaquette centres."""
    model = honeycomb(4.0, 5.0)
    n = 24
    shuffled = _chern(model, (n, n), 0.5, gamma_grid(model.reciprocal, (n, n), shuffle=3))
    i1, i2 = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    q01 = np.stack([i1.ravel() / n, i2.ravel() / n], axis=-1) @ model.reciprocal
    plain = _chern(model, (n, n), 0.5, q01)
    np.testing.assert_allclose(shuffled.berry_curvature, plain.berry_curvature, atol=1e-9)
    centres = shuffled.q_centres.reshape(-1, 2)
    local, _ = tp.berry_curvature_path(model.dynamical_matrix, centres, model.reciprocal, 0.5)
    mesh_values = shuffled.berry_curvature.reshape(-1, 4)
    scale = np.max(np.abs(local), axis=0)
    assert np.median(np.abs(mesh_values - local) / scale) < 1e-3
    assert np.max(np.abs(mesh_values - local) / scale) < 0.2
    with pytest.raises(ValueError, match="Monkhorst"):
        tp.mesh_order(q01 + 0.01, model.reciprocal, (n, n))
    with pytest.raises(ValueError, match="exactly once"):
        tp.mesh_order(np.concatenate([q01[:-1], q01[:1]]), model.reciprocal, (n, n))


# --- degenerate subspaces and thermal totals ---------------------------------------------------------


def test_degenerate_subspace_values_are_gauge_invariant():
    model = triangular()
    k = k_point(model.reciprocal)
    d = model.dynamical_matrix(np.array([k]))
    modes = gy.gyroscopic_modes(d, 0.0)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2))
    rot, _ = np.linalg.qr(z)  # a random unitary inside the degenerate pair at K
    rotated = gy.GyroscopicModes(
        modes.frequencies,
        modes.displacements @ rot,
        modes.normalized,
        modes.growth_rates,
        0.0,
        modes.real_tol,
    )
    assert ch.zhang_niu_angular_momentum(rotated.polarizations).std() > 1e-3  # per-mode: gauge dependent
    l_a, deg_a = ch.angular_momentum(modes)
    l_b, deg_b = ch.angular_momentum(rotated)
    assert deg_a.all() and deg_b.all()
    np.testing.assert_allclose(l_a, l_b, atol=1e-12)


def test_thermal_totals_fock_darwin_zero_point_and_bohr_van_leeuwen():
    omega_m2, omega_c = 4.0, 1.2
    model = triangular(trap=omega_m2)
    modes = gy.gyroscopic_modes(model.dynamical_matrix(GAMMA), omega_c)
    l_z, _ = ch.angular_momentum(modes)
    mu = ch.magnetic_moment(l_z, 0.5, -1)
    big = np.sqrt(omega_m2 + omega_c**2 / 4)
    t0 = ch.thermal_totals(modes.frequencies, l_z, mu, 0.0, 1)
    # Zero-point kinetic angular momentum ⟨m r×v⟩ = (mω_c/2)⟨r²⟩ = ħω_c / (2√(ω_M² + ω_c²/4)).
    assert t0["angular_momentum_per_particle_hbar"] == pytest.approx(omega_c / (2 * big), rel=1e-10)
    assert t0["magnetization_per_particle_muB"] == pytest.approx(-2 * omega_c / (2 * big), rel=1e-10)
    # Classical limit: no orbital magnetism (Bohr–van Leeuwen), the total falls off as 1/T.
    hot = [
        ch.thermal_totals(modes.frequencies, l_z, mu, t, 1)["angular_momentum_per_particle_hbar"]
        for t in (1e4, 2e4)
    ]
    assert abs(hot[0]) < 1e-3 * t0["angular_momentum_per_particle_hbar"]
    assert hot[1] == pytest.approx(hot[0] / 2, rel=1e-3)
    # B = 0: Σ_s l_z(q, s) = tr(iJ) = 0 at every q (completeness), so the zero-point total vanishes.
    hc = honeycomb(4.0, 5.0)
    q = gamma_grid(hc.reciprocal, (6, 6))
    m0 = gy.gyroscopic_modes(hc.dynamical_matrix(q), 0.0)
    l0, _ = ch.angular_momentum(m0)
    np.testing.assert_allclose(l0.sum(axis=1), 0.0, atol=1e-12)
    with pytest.raises(ValueError):
        ch.bose_weight(np.ones(2), -1.0)


def test_chiral_phonons_bundle_is_consistent():
    model = honeycomb(4.0, 5.0)
    k = k_point(model.reciprocal)
    q_path = np.array([[0.0, 0.0], 0.5 * k, k, -k])
    mesh = (12, 12)
    q_mesh = gamma_grid(model.reciprocal, mesh, shuffle=5)
    res = ch.chiral_phonons(
        model.dynamical_matrix, q_path, q_mesh, mesh, model.basis, model.reciprocal,
        omega_c=0.5, mass=0.5, charge_sign=-1, temperature_K=3.0,
    )  # fmt: skip
    direct = gy.gyroscopic_modes(model.dynamical_matrix(q_path), 0.5)
    np.testing.assert_allclose(res.path_modes.frequencies, direct.frequencies, rtol=1e-12)
    np.testing.assert_allclose(res.mu_z, -2.0 * res.l_z)
    assert res.summary()["chern_numbers"] == _chern(model, mesh, 0.5).chern_numbers
    assert res.stability["stable"] and res.stability["where"] in ("path", "mesh")
    expected = ch.thermal_totals(res.mesh_modes.frequencies, res.mesh_l_z, -2 * res.mesh_l_z, 3.0, 2)
    assert res.thermal == expected
    assert res.summary()["max_abs_l_z_hbar"] == pytest.approx(np.max(np.abs(res.l_z)))


def test_unpinned_crystal_in_field_zero_mode_is_reported_not_guessed():
    """No trap: at Γ the field leaves ω = 0 (translation) and ω = ω_c (Kohn mode)."""
    model = triangular(trap=0.0)
    omega_c = 0.5
    modes = gy.gyroscopic_modes(model.dynamical_matrix(GAMMA), omega_c)
    np.testing.assert_allclose(modes.frequencies[0], [0.0, omega_c], atol=1e-9)
    assert modes.normalized[0].tolist() == [False, True]
    l_z, _ = ch.angular_momentum(modes)
    assert np.all(np.isfinite(l_z)) and l_z[0, 1] == pytest.approx(2.0)  # 2ω/(2ω − ω_c) at ω = ω_c
    mesh = (6, 6)
    q = gamma_grid(model.reciprocal, mesh)
    bm = tp.berry_curvature_mesh(gy.gyroscopic_modes(model.dynamical_matrix(q), omega_c), q, mesh,
                                 model.basis, model.reciprocal)  # fmt: skip
    assert bm.groups[0].chern is None and "zero-frequency" in bm.groups[0].note
    assert isinstance(bm.groups[1].chern, int) and bm.groups[1].note == ""  # the gapped Kohn band is fine
    assert np.isnan(bm.berry_curvature[..., 0]).sum() == 4  # the four plaquettes touching Γ
