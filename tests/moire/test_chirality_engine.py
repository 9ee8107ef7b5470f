"""Chiral phonons with the real engine (Coulomb/Keldysh crystals from dynamics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from moire_cli import chirality as ch
from moire_cli import crystals, dynamics, potentials
from moire_cli import gyroscopic as gy
from moire_cli import topology as tp

A_M = 8.0
MASS = 0.5


def _model(name: str, interaction=None, trap_scale=None, eta=None) -> dynamics.LatticeModel:
    crystal = crystals.build_crystal(name, A_M)
    pot = potentials.MoirePotential(A_M, 15.0, np.pi, +1)
    inter = potentials.Coulomb(4.5) if interaction is None else interaction
    return dynamics.LatticeModel(crystal, pot, inter, MASS, trap_scale=trap_scale, ewald_eta=eta)


@pytest.mark.parametrize("name", ["triangular", "triangular_gwc"])
@pytest.mark.parametrize(
    "interaction", [potentials.Coulomb(4.5), potentials.Keldysh(4.5, 4.5)], ids=["coulomb", "keldysh"]
)
def test_fock_darwin_real_crystal(name, interaction):
    model = _model(name, interaction)
    w_m = model.potential.hbar_omega_M(MASS)
    for field in (3.0, 30.0):
        for charge in (-1, 1):
            w_c = gy.cyclotron_energy(field, MASS, charge)
            modes = gy.gyroscopic_modes(dynamics.dynamical_matrix(model, np.zeros((1, 2))), w_c)
            big = np.sqrt(w_m**2 + w_c**2 / 4)
            np.testing.assert_allclose(
                modes.frequencies[0], [big - abs(w_c) / 2, big + abs(w_c) / 2], rtol=1e-9
            )


def test_chern_numbers_real_honeycomb_mesh_and_ewald_invariant():
    w_c = gy.cyclotron_energy(20.0, MASS, -1)
    results = {}
    for mesh, eta_factor in [((24, 24), 1.0), ((36, 36), 1.0), ((24, 24), 2.0)]:
        area = crystals.build_crystal("honeycomb_gwc", A_M).area
        model = _model("honeycomb_gwc", eta=eta_factor * np.sqrt(np.pi / area))  # default η × 1, × 2
        q = crystals.monkhorst_pack(model.crystal, mesh)
        modes = gy.gyroscopic_modes(dynamics.dynamical_matrix(model, q), w_c)
        bm = tp.berry_curvature_mesh(modes, q, mesh, model.crystal.basis, model.crystal.reciprocal)
        results[(mesh, eta_factor)] = bm
    chern = results[((24, 24), 1.0)].chern_numbers
    assert all(isinstance(c, int) for c in chern) and sum(chern) == 0 and any(chern)
    assert results[((36, 36), 1.0)].chern_numbers == chern
    assert results[((24, 24), 2.0)].chern_numbers == chern
    np.testing.assert_allclose(
        results[((24, 24), 2.0)].berry_curvature,
        results[((24, 24), 1.0)].berry_curvature,
        rtol=1e-6,
        atol=1e-6,
    )


def test_real_honeycomb_inversion_breaking_valleys():
    model = _model("honeycomb_gwc", trap_scale=(1.0, 0.8))
    pts = crystals.special_points(model.crystal)
    q = model.crystal.to_cartesian(np.array([pts["K"], pts["K'"]]))
    modes = gy.gyroscopic_modes(dynamics.dynamical_matrix(model, q), 0.0)
    l_z, degenerate = ch.angular_momentum(modes)
    assert not degenerate.any()
    np.testing.assert_allclose(l_z[1], -l_z[0], atol=1e-10)
    omega, _ = tp.berry_curvature_path(
        lambda x: dynamics.dynamical_matrix(model, x), q, model.crystal.reciprocal
    )
    np.testing.assert_allclose(omega[1], -omega[0], rtol=1e-5, atol=1e-6)
    assert np.min(np.abs(omega[0])) > 1.0  # nm²
    mesh = (12, 12)
    qm = crystals.monkhorst_pack(model.crystal, mesh)
    bm = tp.berry_curvature_mesh(
        gy.gyroscopic_modes(dynamics.dynamical_matrix(model, qm), 0.0),
        qm, mesh, model.crystal.basis, model.crystal.reciprocal,
    )  # fmt: skip
    assert bm.chern_numbers == [0] * len(bm.groups)
