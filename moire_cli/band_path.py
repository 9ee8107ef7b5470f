"""Band paths with breaks, as phonopy allows them (spec §5; issue 16 §8).

``points: [G, M, K, G, "|", "K'", M]`` is two continuous pieces, Γ–M–K–Γ and K′–M: the line jumps
at the break, no segment is drawn across it, and the path distance does not advance across it
(phonopy's convention: the first point after a break sits at the same distance as the last point
before it; a plot labels that position "Γ|K′"). Each piece is a
:func:`moire_cli.crystals.high_symmetry_path`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moire_cli import crystals

#: The path element that breaks the path (phonopy writes the same break as a comma in BAND).
BREAK = "|"


@dataclass(frozen=True)
class BandPath:
    """A band path of one or more continuous pieces.

    Attributes:
        q: (N_q, 2) Cartesian 1/nm (with 2π).
        distance: (N_q,) cumulative length in 1/nm along the pieces; equal at the two sides of a break.
        labels: (index into q, label) of every labelled point, both ends of a break included.
        pieces: (start, stop) index ranges of the continuous pieces (stop exclusive), in order.
    """

    q: np.ndarray
    distance: np.ndarray
    labels: list[tuple[int, str]]
    pieces: list[tuple[int, int]]

    @property
    def segments(self) -> list[tuple[int, int]]:
        """(first, last) indices (inclusive) of each straight segment between consecutive labelled
        points of one piece — phonopy's band segments (band.yaml ``segment_nqpoint`` = last − first + 1)."""
        out = []
        for (i, _), (j, _) in zip(self.labels[:-1], self.labels[1:], strict=True):
            if any(start <= i < j < stop for start, stop in self.pieces):
                out.append((i, j))
        return out

    def tick_labels(self) -> list[tuple[float, str]]:
        """(distance, text) per tick: "G" shown as Γ, labels at one distance (a break) joined as "Γ|K'"."""
        ticks: list[tuple[float, str]] = []
        for i, lab in self.labels:
            text = "Γ" if lab == "G" else lab
            x = float(self.distance[i])
            if ticks and np.isclose(ticks[-1][0], x, rtol=0, atol=1e-12 * max(1.0, abs(x))):
                ticks[-1] = (ticks[-1][0], f"{ticks[-1][1]}|{text}")
            else:
                ticks.append((x, text))
        return ticks


def split_pieces(points: list | None) -> list[list] | None:
    """Split a path spec at :data:`BREAK` into its pieces (None stays None = the default path).

    Raises:
        ValueError: a break at either end, two breaks in a row, or a piece of fewer than two points.
    """
    if points is None:
        return None
    pieces: list[list] = [[]]
    for p in points:
        if isinstance(p, str) and p == BREAK:
            pieces.append([])
        else:
            pieces[-1].append(p)
    for k, piece in enumerate(pieces):
        if len(piece) < 2:
            where = "starts" if k == 0 else "ends" if k == len(pieces) - 1 else "has a piece"
            raise ValueError(
                f"the path {where} with fewer than two points around a {BREAK!r} break "
                "(each piece between breaks needs at least two points)"
            )
    return pieces


def band_path(crystal: crystals.Crystal, points: list | None = None, n_per_segment: int = 40) -> BandPath:
    """Piecewise-linear band path through labelled points, with optional breaks.

    Args:
        crystal: the crystal (its special points name the labels).
        points: labels of :func:`moire_cli.crystals.special_points` ("G" is Γ), (label, fractional
            (2,)) pairs, and :data:`BREAK` between pieces; None = the default path (no break).
        n_per_segment: q-points per segment (≥ 2); segment ends inside a piece are shared.

    Raises:
        ValueError: unknown label, a misplaced break, a piece of fewer than two points, n_per_segment < 2.
    """
    pieces = split_pieces(points) or [None]
    qs, dists, labels, ranges = [], [], [], []
    start, offset = 0, 0.0
    for piece in pieces:
        q, dist, labs = crystals.high_symmetry_path(crystal, piece, n_per_segment)
        qs.append(q)
        dists.append(dist + offset)
        labels.extend((start + i, lab) for i, lab in labs)
        ranges.append((start, start + len(q)))
        start += len(q)
        offset += float(dist[-1])
    return BandPath(np.concatenate(qs), np.concatenate(dists), labels, ranges)
