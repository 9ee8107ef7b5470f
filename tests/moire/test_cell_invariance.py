"""Outputs do not depend on how a user cell is written (issue 15 items 1, 2): the cell is reduced
(Lagrange–Gauss) to a canonical cell and the sites wrapped into it; pinned cells must be
superlattices of the moiré lattice."""

import csv
import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from moire_cli.cli import app
from moire_cli.config import ConfigError, PhononsConfig, config_from_dict
from moire_cli.crystals import BUILTIN_CRYSTALS, build_crystal, canonical_cell, gauss_reduce

runner = CliRunner()
ISSUE_CELL = [[7.0, 3.4641016151377544], [8.5, 4.330127018922193]]  # triangular, written non-reduced


def unimodular(ops: list[tuple[int, int]]) -> np.ndarray:
    """A product of elementary integer matrices (shears by k, swaps with a sign): det ±1."""
    m = np.eye(2, dtype=int)
    for kind, k in ops:
        e = np.eye(2, dtype=int)
        if kind == 0:
            e[0, 1] = k
        elif kind == 1:
            e[1, 0] = k
        else:
            e = np.array([[0, 1], [1, 0]]) if k % 2 else np.array([[-1, 0], [0, 1]])
        m = e @ m
    return m


OPS = st.lists(st.tuples(st.integers(0, 2), st.integers(-3, 3)), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(OPS, st.sampled_from(sorted(BUILTIN_CRYSTALS)))
def test_canonical_cell_is_basis_independent(ops, name):
    cell = 8.0 * np.array(BUILTIN_CRYSTALS[name][0])
    m = unimodular(ops)
    canon = canonical_cell(m @ cell)
    assert canon == pytest.approx(cell, abs=1e-9 * 8 * np.abs(m).max())  # built-ins are canonical
    red = gauss_reduce(m @ cell)
    assert abs(np.linalg.det(red)) == pytest.approx(abs(np.linalg.det(cell)), rel=1e-9)
    assert np.linalg.norm(red[0]) <= np.linalg.norm(red[1]) * (1 + 1e-12)
    assert abs(red[0] @ red[1]) <= 0.5 * red[0] @ red[0] * (1 + 1e-9)


def test_issue_cell_nearest_neighbour_distance():
    cr = build_crystal("mine", 8.0, ISSUE_CELL, [[0.0, 0.0]])
    assert cr.nearest_neighbour_distance == pytest.approx(8.0, rel=1e-12)  # was 13.86 nm
    assert cr.is_hexagonal and cr.cell == pytest.approx(build_crystal("triangular", 8.0).cell, abs=1e-12)


BASE = {
    "moire_potential": {"a_M": 8.0, "V": 15.0, "psi_deg": 45.0, "carrier": "hole"},
    "mass": 0.45,
    "interaction": {"kind": "keldysh", "r0": 4.511},
    "mesh": {"size": [6, 6], "n_energies": 50},
    "path": {"n_per_segment": 5},
    "output": {"plot": False},
}


def _phonons(tmp_path, tag, crystal):
    cfg = dict(BASE, crystal=crystal)
    path = tmp_path / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / f"out-{tag}"
    res = runner.invoke(app, ["phonons", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    for key in ("config", "provenance"):
        summary.pop(key)
    tables = {}
    for name in ("bands.csv", "dos.csv"):
        with open(out / name, newline="") as fh:
            tables[name] = list(csv.DictReader(fh))
    return summary, tables


def _assert_same(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, str):
        try:
            fa, fb = float(a), float(b)
        except ValueError:
            assert a == b, path
        else:
            assert fa == pytest.approx(fb, rel=1e-7, abs=1e-7), path
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-7, abs=1e-7), path
    else:
        assert a == b, path


@pytest.mark.parametrize(("name", "m", "shifts"), [
    ("triangular", [[4, -5], [9, -11]], [[3, -2]]),
    ("honeycomb_gwc", [[-2, 1], [-5, 2]], [[0, 0], [-1, 4]]),
    ("zigzag_stripe", [[1, 3], [1, 2]], [[2, 1], [0, -3]]),
])
def test_every_phonons_output_is_invariant_under_a_change_of_cell_basis(tmp_path, name, m, shifts):
    _check_invariance(tmp_path, np.array(m), name, shifts)


@settings(max_examples=60, deadline=None)
@given(OPS, st.sampled_from(sorted(BUILTIN_CRYSTALS)),
       st.lists(st.tuples(st.integers(-40, 40), st.integers(-40, 40)), min_size=2, max_size=2))
def test_model_is_invariant_under_a_change_of_cell_basis(ops, name, shifts):
    """The built model (cell, wrapped sites, nearest-neighbour distance, energy, D(q) at fixed
    Cartesian q) is the same for any unimodular change of the cell and lattice shifts of the sites."""
    from moire_cli import dynamics

    cell, basis, _ = BUILTIN_CRYSTALS[name]
    cell, basis = np.array(cell), np.array(basis)
    moved = basis + np.array(shifts[: len(basis)]) @ cell
    models = []
    for c, b in ((cell, basis), (unimodular(ops) @ cell, moved)):
        data = dict(BASE, crystal={"name": "user", "cell": c.tolist(), "basis": b.tolist()})
        models.append(config_from_dict(data, PhononsConfig).build_model())
    ref, new = models
    assert new.crystal.cell == pytest.approx(ref.crystal.cell, abs=1e-9)
    assert new.crystal.basis == pytest.approx(ref.crystal.basis, abs=1e-9)
    assert new.crystal.nearest_neighbour_distance == pytest.approx(ref.crystal.nearest_neighbour_distance, rel=1e-10)  # sites wrapped from up to 40 cells away: ~1e-12 rounding
    q = np.array([[0.013, 0.029], [0.2, -0.1]])
    assert dynamics.dynamical_matrix(new, q) == pytest.approx(dynamics.dynamical_matrix(ref, q), rel=1e-9, abs=1e-9)


def _check_invariance(tmp_path, m, name, shifts):
    cell, basis, _ = BUILTIN_CRYSTALS[name]
    cell, basis = np.array(cell), np.array(basis)
    moved = basis + (np.array(shifts[: len(basis)]) @ cell)  # sites moved by lattice vectors too
    ref = _phonons(tmp_path, "ref", {"name": "user", "cell": cell.tolist(), "basis": basis.tolist()})
    new = _phonons(tmp_path, "new", {"name": "user", "cell": (m @ cell).tolist(), "basis": moved.tolist()})
    _assert_same(ref, new)


def test_issue_cell_melt_matches_builtin(tmp_path):
    """The issue's case end to end: L(0) and T_m of the non-reduced cell equal the built-in's."""
    rows = {}
    for tag, crystal in (("builtin", {"name": "triangular"}),
                         ("user", {"name": "user", "cell": ISSUE_CELL, "basis": [[0.0, 0.0]]})):
        cfg = dict(BASE, crystal=crystal, melt={"mesh": {"start": 6, "max": 6}, "temperatures": [0.0, 10.0]})
        for key in ("mesh", "path"):
            cfg.pop(key)
        cfg["output"] = {"plot": False}
        path = tmp_path / f"{tag}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = runner.invoke(app, ["melt", str(path), "--out", str(tmp_path / tag)])
        assert res.exit_code == 0, res.output
        with open(tmp_path / tag / "melt.csv", newline="") as fh:
            rows[tag] = next(csv.DictReader(fh))
    for key in ("nearest_neighbour_distance_nm", "lindemann_ratio_zero", "melting_temperature_K"):
        assert float(rows["user"][key]) == pytest.approx(float(rows["builtin"][key]), rel=1e-9), key
    assert float(rows["user"]["nearest_neighbour_distance_nm"]) == pytest.approx(8.0)


def test_explicit_fractional_path_points_refer_to_the_cell_as_written():
    cfg = config_from_dict(dict(BASE, crystal={"name": "u", "cell": ISSUE_CELL, "basis": [[0, 0]]}), PhononsConfig)
    cr = cfg.build_model().crystal
    from moire_cli.crystals import high_symmetry_path

    q, _, _ = high_symmetry_path(cr, [("A", (0.0, 0.0)), ("B", (1.0, 0.0))], 3)
    written = 8.0 * np.array(ISSUE_CELL)
    assert q[-1] == pytest.approx(2 * np.pi * np.linalg.inv(written).T[0], abs=1e-12)  # b1 of the written cell


# ---------------------------------------------------------------- item 2: incommensurate cells
def test_pinned_square_cell_is_refused_in_one_line():
    data = dict(BASE, crystal={"name": "square", "cell": [[1, 0], [0, 1]], "basis": [[0, 0]]})
    with pytest.raises(ConfigError, match=r"crystal.cell vector 2 .* not a moiré lattice vector"):
        config_from_dict(data, PhononsConfig)
    # unpinned, any cell is a valid 2D Wigner crystal (the square lattice of Bonsall & Maradudin)
    unpinned = dict(data, moire_potential={"a_M": 8.0, "V": 0.0})
    assert config_from_dict(unpinned, PhononsConfig).build_model().potential is None
    # all trap scales 0 is unpinned too
    zero = dict(data, moire_potential={"a_M": 8.0, "V": 15.0, "trap_scale": [0.0]})
    assert config_from_dict(zero, PhononsConfig).build_model().potential is None


def test_superlattice_cells_are_accepted_and_snapped():
    s3 = np.sqrt(3)
    data = dict(BASE, crystal={"name": "r3", "cell": [[1.5, 0.8660254], [0.0, 1.7320508]], "basis": [[0, 0]]})
    cr = config_from_dict(data, PhononsConfig).build_model().crystal
    assert cr.cell == pytest.approx(8.0 * np.array([[1.5, s3 / 2], [0.0, s3]]), abs=1e-12)  # exact, not 7 digits
    with pytest.raises(ConfigError, match="not a moiré lattice vector"):
        config_from_dict(dict(BASE, crystal={"name": "x", "cell": [[1.5, 0.866], [0.0, 1.732]], "basis": [[0, 0]]}),
                         PhononsConfig)
