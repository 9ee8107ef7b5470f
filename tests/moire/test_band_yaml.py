"""band.yaml in phonopy's layout: a round-trip through yaml, and phonopy's own reader and plotter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from moire_cli.band_path import band_path
from moire_cli.band_yaml import ELECTRON_MASS_AMU, REQUIRED_KEYS, band_yaml_text
from moire_cli.cli import app
from moire_cli.crystals import build_crystal
from moire_cli.units import convert_frequency

POINTS = ["G", "M", "K", "G", "|", "K'", "M"]
N = 5


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """band.yaml of a honeycomb crystal (two sites) on a path with a break, and what made it."""
    crystal = build_crystal("honeycomb_gwc", 8.0)
    path = band_path(crystal, POINTS, N)
    rng = np.random.default_rng(0)
    freqs = np.sort(rng.uniform(-1.0, 70.0, size=(len(path.q), 4)), axis=1)  # meV, one imaginary branch
    text = band_yaml_text(path, crystal, freqs, 0.45, comment={"calculator": "moire", "length_unit": "nm"})
    file = tmp_path_factory.mktemp("band") / "band.yaml"
    file.write_text(text, encoding="utf-8")
    return file, crystal, path, freqs


def test_round_trip_keys_shapes_and_values(written):
    file, crystal, path, freqs = written
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    assert set(REQUIRED_KEYS) <= set(data)
    segments = path.segments  # Γ–M, M–K, K–Γ, K'–M: nothing across the break
    assert data["npath"] == len(segments) == 4
    assert data["segment_nqpoint"] == [N] * 4
    assert data["nqpoint"] == sum(data["segment_nqpoint"]) == len(data["phonon"])
    assert data["labels"] == [["$\\Gamma$", "M"], ["M", "K"], ["K", "$\\Gamma$"], ["K'", "M"]]
    assert data["natom"] == 2 and len(data["points"]) == 2
    assert data["points"][0]["mass"] == pytest.approx(0.45 * ELECTRON_MASS_AMU, rel=1e-9)
    lattice = np.array(data["lattice"])
    rec = np.array(data["reciprocal_lattice"])
    np.testing.assert_allclose(lattice[:2, :2], crystal.cell, atol=1e-12)
    np.testing.assert_allclose(lattice @ rec.T, np.eye(3), atol=1e-9)  # phonopy: a_i · b_j = δ_ij (no 2π)
    # Per q-point: each segment repeats its end points, as phonopy's band.yaml does.
    rows = [j for first, last in segments for j in range(first, last + 1)]
    q = np.array([p["q-position"] for p in data["phonon"]])
    dist = np.array([p["distance"] for p in data["phonon"]])
    thz = np.array([[b["frequency"] for b in p["band"]] for p in data["phonon"]])
    assert q.shape == (len(rows), 3) and thz.shape == (len(rows), 4)
    np.testing.assert_allclose(q[:, :2], crystal.to_fractional(path.q[rows]), atol=5e-8)
    np.testing.assert_array_equal(q[:, 2], 0.0)
    np.testing.assert_allclose(dist, path.distance[rows] / (2 * np.pi), atol=5e-8)
    np.testing.assert_allclose(thz, convert_frequency(freqs[rows], "THz"), atol=5e-11)
    assert thz.min() < 0  # imaginary modes stay negative (phonopy's convention)
    # phonopy's distance is |Δq · reciprocal_lattice| accumulated within a segment, constant across a break.
    step = np.linalg.norm(np.diff(q, axis=0) @ rec, axis=1)
    inside = np.diff(dist) > 0
    np.testing.assert_allclose(np.diff(dist)[inside], step[inside], atol=2e-7)
    assert dist[3 * N] == dist[3 * N - 1]  # K' starts where Γ ended


def test_phonopy_reads_it(written, tmp_path):
    """phonopy's band-plot reader finds the segments, labels and the break; its plotter draws it."""
    pytest.importorskip("phonopy")
    try:  # phonopy-bandplot's own reader (phonopy ≥ 2.x; private names, so skip if they moved)
        from phonopy.cui.phonopy_bandplot_script import (
            PhonopyBandplotMockArgs,
            _arrange_band_data,
            _read_band_yaml,
            main,
        )
    except ImportError as err:
        pytest.skip(f"phonopy-bandplot internals not importable: {err}")

    file, _, path, freqs = written
    distances, frequencies, qpoints, segment_nqpoint, label_pairs = _read_band_yaml(file)
    assert frequencies.shape == (4 * N, 4) and qpoints.shape == (4 * N, 3)
    labels, connections, freq_list, dist_list = _arrange_band_data(
        distances, frequencies, qpoints, segment_nqpoint, label_pairs
    )
    assert labels == ["$\\Gamma$", "M", "K", "$\\Gamma$", "K'", "M"]
    assert connections == [True, True, False, False]  # the break after K–Γ, and the end
    assert [len(f) for f in freq_list] == [N] * 4
    np.testing.assert_allclose(dist_list[3][0], dist_list[2][-1])
    out = tmp_path / "phonopy_band.pdf"
    main(args=PhonopyBandplotMockArgs(filenames=[file], output_filename=out))
    assert out.stat().st_size > 1000


def test_moire_phonons_writes_band_yaml_with_a_break(tmp_path):
    out = tmp_path / "run"
    points = json.dumps(POINTS)
    result = CliRunner().invoke(app, [
        "phonons", "configs/moire/wse2_ws2_triangular.yaml", "--out", str(out), "--set", "mesh.size=[4,4]",
        "--set", "path.n_per_segment=4", "--set", "output.plot=false", "--set", f"path.points={points}",
    ])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load((out / "band.yaml").read_text(encoding="utf-8"))
    arrays = np.load(out / "arrays.npz")
    assert data["labels"][-1] == ["K'", "M"] and data["npath"] == 4
    # Same bands as bands.csv / arrays.npz, in THz, segment ends repeated.
    first = [p["band"][0]["frequency"] for p in data["phonon"]]
    rows = [0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 10, 11, 12, 13]
    np.testing.assert_allclose(first, convert_frequency(arrays["path_frequencies_meV"][rows, 0], "THz"), atol=5e-11)
    np.testing.assert_array_equal(arrays["path_distance"][9:11], arrays["path_distance"][9])  # no advance
    # Eigenvectors as phonopy writes them: per band, per atom, [re, im] of x, y, z (z = 0 here).
    ev = np.array([[b["eigenvector"] for b in p["band"]] for p in data["phonon"]])  # (q, band, atom, 3, 2)
    assert ev.shape == (16, 2, 1, 3, 2)
    ours = arrays["path_eigenvectors"][rows]  # (q, 2n, modes)
    np.testing.assert_allclose(ev[:, :, 0, :2, 0] + 1j * ev[:, :, 0, :2, 1], np.swapaxes(ours, 1, 2), atol=1e-13)
    np.testing.assert_array_equal(ev[:, :, 0, 2], 0.0)


@pytest.mark.parametrize("points", ['["|", "G", "M"]', '["G", "M", "|", "K"]'])
def test_misplaced_break_is_one_line_error(tmp_path, points):
    result = CliRunner().invoke(app, [
        "phonons", "configs/moire/wse2_ws2_triangular.yaml", "--out", str(tmp_path / "x"),
        "--set", f"path.points={points}", "--set", "mesh.size=[4,4]",
    ])
    assert result.exit_code == 2
    assert "path.points" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
