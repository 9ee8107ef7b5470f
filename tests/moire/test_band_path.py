"""Band paths with breaks (phonopy's convention): pieces, labels, distance across a break."""

from __future__ import annotations

import numpy as np
import pytest

from moire_cli.band_path import BandPath, band_path, split_pieces
from moire_cli.crystals import build_crystal, high_symmetry_path, special_points

TRI = build_crystal("triangular", 8.0)


def test_no_break_is_the_high_symmetry_path():
    q, dist, labels = high_symmetry_path(TRI, None, 7)
    path = band_path(TRI, None, 7)
    np.testing.assert_array_equal(path.q, q)
    np.testing.assert_array_equal(path.distance, dist)
    assert path.labels == labels
    assert path.pieces == [(0, len(q))]
    assert path.segments == [(0, 6), (6, 12), (12, 18)]


def test_break_jumps_without_advancing_distance():
    n = 5
    path = band_path(TRI, ["G", "M", "K", "G", "|", "K'", "M"], n)
    first = 3 * (n - 1) + 1  # Γ–M–K–Γ: three segments sharing their ends
    assert path.pieces == [(0, first), (first, first + n)]
    assert len(path.q) == first + n
    assert path.labels == [(0, "G"), (n - 1, "M"), (2 * (n - 1), "K"), (first - 1, "G"), (first, "K'"),
                           (first + n - 1, "M")]
    # The distance stays put across the break, then grows by |M − K'| over the second piece.
    assert path.distance[first] == path.distance[first - 1]
    pts = special_points(TRI)
    jump = np.linalg.norm(TRI.to_cartesian(pts["M"]) - TRI.to_cartesian(pts["K'"]))
    assert path.distance[-1] - path.distance[first] == pytest.approx(jump, rel=1e-12)
    np.testing.assert_allclose(path.q[first], TRI.to_cartesian(pts["K'"]), atol=1e-12)
    # No segment spans the break; ticks merge the two labels at one position.
    assert path.segments == [(0, n - 1), (n - 1, 2 * (n - 1)), (2 * (n - 1), first - 1), (first, first + n - 1)]
    ticks = path.tick_labels()
    assert [t for _, t in ticks] == ["Γ", "M", "K", "Γ|K'", "M"]
    assert ticks[3][0] == path.distance[first]


@pytest.mark.parametrize(
    "points", [["|", "G", "M"], ["G", "M", "|"], ["G", "M", "|", "|", "K", "G"], ["G", "M", "|", "K"]]
)
def test_misplaced_break_is_refused(points):
    with pytest.raises(ValueError, match="at least two points"):
        split_pieces(points)


def test_explicit_points_and_break():
    path = band_path(TRI, [("A", [0.1, 0.0]), ("B", [0.2, 0.0]), "|", "G", "K"], 3)
    assert isinstance(path, BandPath)
    assert [lab for _, lab in path.labels] == ["A", "B", "G", "K"]
    assert path.pieces == [(0, 3), (3, 6)]
