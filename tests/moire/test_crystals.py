"""Crystals, reciprocal lattices, meshes and paths (spec §4)."""

import numpy as np
import pytest

from moire_cli.crystals import BUILTIN_CRYSTALS, build_crystal, high_symmetry_path, monkhorst_pack

A = 8.0
FILLING = {"triangular": 1, "triangular_gwc": 1 / 3, "honeycomb_gwc": 2 / 3, "linear_stripe": 1 / 2, "zigzag_stripe": 1 / 2}


@pytest.mark.parametrize("name", sorted(BUILTIN_CRYSTALS))
def test_builtin_filling_and_neighbours(name):
    cr = build_crystal(name, A)
    moire_density = 2 / (np.sqrt(3) * A**2)
    assert cr.density / moire_density == pytest.approx(FILLING[name], rel=1e-12)
    assert cr.reciprocal @ cr.cell.T == pytest.approx(2 * np.pi * np.eye(2), abs=1e-12)
    nn = {"triangular": A, "triangular_gwc": np.sqrt(3) * A, "honeycomb_gwc": A, "linear_stripe": A, "zigzag_stripe": A}
    assert cr.nearest_neighbour_distance == pytest.approx(nn[name], rel=1e-12)


def test_zigzag_is_not_double_row_stripe():
    cr = build_crystal("zigzag_stripe", 1.0)
    # each site has exactly 2 neighbours at distance a_M from the other sublattice, none in its own row
    d = cr.basis[1] - cr.basis[0]
    assert np.linalg.norm(d) == pytest.approx(1.0)
    assert cr.cell[1] == pytest.approx([0, np.sqrt(3)])


def test_user_defined_and_errors():
    cr = build_crystal("square", 2.0, cell=[[1, 0], [0, 1]], basis=[[0, 0]])
    assert cr.area == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown crystal"):
        build_crystal("squarish", 1.0)
    with pytest.raises(ValueError, match="built in"):
        build_crystal("triangular", 1.0, cell=[[1, 0], [0, 1]], basis=[[0, 0]])
    with pytest.raises(ValueError):
        build_crystal("triangular", -1.0)


def test_monkhorst_pack_is_full_gamma_centred_grid():
    cr = build_crystal("zigzag_stripe", A)
    q = monkhorst_pack(cr, (4, 6))
    frac = cr.to_fractional(q)
    assert q.shape == (24, 2)
    assert frac.min() == pytest.approx(0.0) and frac[:, 0].max() == pytest.approx(0.75)
    assert len({tuple(np.round(f, 9)) for f in frac}) == 24
    # sum over a full grid of e^{iq·R} vanishes for R a non-zero lattice vector
    assert abs(np.exp(1j * q @ cr.cell[0]).sum()) < 1e-12


def test_paths_hexagonal_and_rectangular():
    tri = build_crystal("triangular", A)
    q, dist, labels = high_symmetry_path(tri, None, 11)
    assert [lab for _, lab in labels] == ["G", "M", "K", "G"]
    b = 4 * np.pi / (np.sqrt(3) * A)
    iK = labels[2][0]
    assert np.linalg.norm(q[iK]) == pytest.approx(b / np.sqrt(3), rel=1e-12)  # |ΓK| = |b|/√3
    assert np.linalg.norm(q[labels[1][0]]) == pytest.approx(b / 2, rel=1e-12)  # |ΓM| = |b|/2
    assert np.all(np.diff(dist) > 0) and len(q) == 31
    gwc = build_crystal("triangular_gwc", A)  # 60° reciprocal vectors
    q2, _, lab2 = high_symmetry_path(gwc, ["G", "K"], 3)
    assert np.linalg.norm(q2[-1]) == pytest.approx(np.linalg.norm(gwc.reciprocal[0]) / np.sqrt(3), rel=1e-12)
    st = build_crystal("linear_stripe", A)
    _, _, lab3 = high_symmetry_path(st, None, 5)
    assert [lab for _, lab in lab3] == ["G", "X", "S", "Y", "G"]
    q4, _, _ = high_symmetry_path(st, [("A", [0.1, 0.2]), ("B", [0.3, 0.2])], 3)
    assert st.to_fractional(q4[1]) == pytest.approx([0.2, 0.2])
    with pytest.raises(ValueError, match="unknown high-symmetry point"):
        high_symmetry_path(st, ["G", "K"], 5)
