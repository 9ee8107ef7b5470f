"""Berry curvature of phonon bands and Chern numbers (spec §6), symplectic definition.

Berry connection A = i x†K∇_q x, curvature Ω = ∂_x A_y − ∂_y A_x in nm² (Zhang, Ren, Wang, Li,
PRL 105, 225901 (2010); Qin, Zhou, Shi, PRB 86, 104305 (2012)); the Chern number of a band group is
C = (1/2π)∫_BZ Ω d²q. Conventions for D, q, modes and the metric K as in :mod:`moire_cli.gyroscopic`.

Sources: Fukui, Hatsugai & Suzuki, J. Phys. Soc. Jpn. 74, 1674 (2005) (lattice Chern numbers);
Vanderbilt, *Berry Phases in Electronic Structure Theory* (2018), §3.6 and §4.2 (periodic gauge
with intracell positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moire_cli.gyroscopic import (
    DEGENERACY_RTOL,
    GyroscopicModes,
    gyroscopic_modes,
    gyroscopic_term,
    krein_overlap,
)

#: Default relative gap (fraction of the largest ħω) that a band group needs on the mesh before a
#: Chern number is reported for it.
GAP_RTOL = 1e-4
#: A plaquette Berry phase above this (radians) means the mesh does not resolve the curvature.
PHASE_LIMIT = 0.5 * np.pi


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    """z component of the 2D cross product a × b."""
    return float(a[0] * b[1] - a[1] * b[0])


def _plaquette_phases(links: list[np.ndarray], labels: np.ndarray, band: int) -> np.ndarray:
    """Berry phase −arg Π_l det(M_l restricted to the group of ``band``) around each plaquette.

    links: four (P, 2n, 2n) overlap matrices in loop order; labels: (P, 2n) group labels per plaquette.
    """
    m = labels.shape[1]
    member = labels == labels[:, band : band + 1]
    pair = member[:, :, None] & member[:, None, :]
    eye = np.eye(m)
    prod = np.ones(labels.shape[0], dtype=complex)
    for link in links:
        det = np.linalg.det(np.where(pair, link, eye))
        prod *= det / np.maximum(np.abs(det), 1e-300)
    return -np.angle(prod)


def _band_curvatures(links, labels, invalid, area):
    """Per-band plaquette curvature (P, 2n) (group value / group size), degenerate flags, raw phases."""
    p, m = labels.shape
    phase = np.empty((p, m))
    for s in range(m):
        phase[:, s] = _plaquette_phases(links, labels, s)
    size = np.sum(labels[:, :, None] == labels[:, None, :], axis=1)
    omega = phase / (area * size)
    bad = invalid | (np.abs(phase) > PHASE_LIMIT)
    return np.where(bad, np.nan, omega), size > 1, phase


def _group_invalid(labels: np.ndarray, invalid_mode: np.ndarray) -> np.ndarray:
    """(P, 2n): True where any member of the mode's group is invalid."""
    same = labels[:, :, None] == labels[:, None, :]
    return np.any(same & invalid_mode[:, None, :], axis=2)


def berry_curvature_path(
    dynamical_matrix_fn,
    q: np.ndarray,
    reciprocal: np.ndarray,
    omega_c: float = 0.0,
    *,
    step: float = 1e-3,
    rtol: float = DEGENERACY_RTOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Berry curvature Ω_s(q) in nm² at arbitrary q (e.g. a band path) from a small FHS plaquette.

    Each q gets a plaquette of side ``step``·b1 × ``step``·b2 centred on it (error O(step²)); the
    Berry phase uses determinant links over the group of modes that are degenerate at the centre or
    any corner; group members share the group's Ω / size and are flagged. A plaquette phase above
    π/2 (an unresolved crossing) or an unstable mode gives NaN.

    Args:
        dynamical_matrix_fn: callable q (M, 2) → ħ²D (M, 2n, 2n) in meV² (called once, with 5·N_q points).
        q: (N_q, 2) Cartesian 1/nm.
        reciprocal: (2, 2) rows b1, b2 (1/nm, with 2π).
        omega_c: signed ħω_c in meV.
        step: plaquette side as a fraction of b1, b2.

    Returns:
        berry_curvature (N_q, 2n) nm²; degenerate (N_q, 2n) bool.
    """
    q = np.atleast_2d(np.asarray(q, dtype=float))
    b = np.asarray(reciprocal, dtype=float)
    n_q = q.shape[0]
    d1, d2 = step * b[0], step * b[1]
    offsets = np.array([0.0 * d1, -0.5 * (d1 + d2), 0.5 * (d1 - d2), 0.5 * (d1 + d2), 0.5 * (d2 - d1)])
    pts = (q[None, :, :] + offsets[:, None, :]).reshape(-1, 2)
    modes = gyroscopic_modes(dynamical_matrix_fn(pts), omega_c, rtol=rtol)
    m = modes.frequencies.shape[1]
    f = modes.frequencies.reshape(5, n_q, m)
    u = modes.displacements.reshape(5, n_q, m, m)
    ok = modes.normalized.reshape(5, n_q, m)
    tol = rtol * max(float(np.max(np.abs(f))), 1e-300)
    cuts = np.all(np.diff(f, axis=-1) > tol, axis=0)
    labels = np.concatenate([np.zeros((n_q, 1), dtype=int), np.cumsum(cuts, axis=-1)], axis=-1)
    gmat = gyroscopic_term(m, omega_c)
    loop = [1, 2, 3, 4, 1]
    links = [krein_overlap(u[a], f[a], u[c], f[c], gmat) for a, c in zip(loop[:-1], loop[1:], strict=True)]
    invalid = _group_invalid(labels, ~np.all(ok, axis=0))
    area = _cross(d1, d2)
    omega, degenerate, _ = _band_curvatures(links, labels, invalid, area)
    return omega, degenerate


@dataclass(frozen=True)
class BandGroupChern:
    """Chern number of one band group on the mesh (bands ``first``..``last``, 0-based, inclusive).

    ``chern`` is None when it is not defined on this mesh; ``note`` says why.
    """

    first: int
    last: int
    chern: int | None
    min_gap_below_meV: float
    min_gap_above_meV: float | None
    gapped: bool
    max_plaquette_phase: float
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "bands": [self.first, self.last],
            "chern": self.chern,
            "min_gap_below_meV": self.min_gap_below_meV,
            "min_gap_above_meV": self.min_gap_above_meV,
            "gapped": self.gapped,
            "max_plaquette_phase": self.max_plaquette_phase,
            "note": self.note,
        }


@dataclass(frozen=True)
class BerryCurvatureMesh:
    """Berry curvature on an N1 × N2 Monkhorst–Pack mesh (FHS plaquettes, periodic gauge).

    Attributes:
        mesh: (N1, N2).
        q_centres: (N1, N2, 2) plaquette centres, Cartesian 1/nm.
        berry_curvature: (N1, N2, 2n) Ω in nm² per band and plaquette (NaN where undefined);
            inside a locally degenerate group every member carries group Ω / size (flagged).
        degenerate: (N1, N2, 2n) bool.
        groups: Chern numbers per band group, bands merged where they touch on the mesh.
        order: (N1·N2,) indices mapping the input q order to the (N1, N2) layout.
    """

    mesh: tuple[int, int]
    q_centres: np.ndarray
    berry_curvature: np.ndarray
    degenerate: np.ndarray
    groups: list[BandGroupChern] = field(default_factory=list)
    order: np.ndarray | None = None

    @property
    def chern_numbers(self) -> list[int | None]:
        """Chern number per group (None where not defined)."""
        return [g.chern for g in self.groups]


def mesh_order(q: np.ndarray, reciprocal: np.ndarray, mesh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Map a full Γ-centred N1 × N2 grid (any order, any BZ shift) onto integer indices.

    Returns:
        order (N1·N2,) such that q[order] is laid out row-major as (i1, i2), q = (i1/N1) b1 + (i2/N2) b2
        modulo reciprocal vectors; frac (N1·N2, 2) the fractional coordinates of q[order].

    Raises:
        ValueError: q is not such a grid.
    """
    n1, n2 = (int(x) for x in mesh)
    q = np.asarray(q, dtype=float)
    if q.shape != (n1 * n2, 2):
        raise ValueError(f"expected {n1}x{n2} = {n1 * n2} q-points, got shape {q.shape}")
    frac = q @ np.linalg.inv(np.asarray(reciprocal, dtype=float))
    scaled = frac * np.array([n1, n2])
    idx = np.rint(scaled).astype(int)
    if np.max(np.abs(scaled - idx)) > 1e-6:
        raise ValueError("q is not a Γ-centred Monkhorst–Pack grid of the given mesh")
    key = (idx[:, 0] % n1) * n2 + idx[:, 1] % n2
    order = np.argsort(key, kind="stable")
    if not np.array_equal(key[order], np.arange(n1 * n2)):
        raise ValueError("q does not cover every point of the mesh exactly once")
    return order, frac[order]


def berry_curvature_mesh(
    modes: GyroscopicModes,
    q: np.ndarray,
    mesh: tuple[int, int],
    basis: np.ndarray,
    reciprocal: np.ndarray,
    *,
    rtol: float = DEGENERACY_RTOL,
    gap_rtol: float = GAP_RTOL,
) -> BerryCurvatureMesh:
    """Berry curvature per band and Chern numbers per band group on a full mesh (FHS method).

    Fukui–Hatsugai–Suzuki (JPSJ 74, 1674, eqs. 7–8) with the symplectic inner product
    x_a†K x_b: links U = det M over the group's modes, plaquette phase F = −arg(U1 U2 U3 U4),
    Ω = F / (signed plaquette area), C = Σ F / 2π (an integer by construction). Periodic gauge:
    D here is in phonopy's convention (intracell phases e^{iq·τ}), so the state at q + G is
    e^{−iG·τ_κ} u_κ(q) (Vanderbilt 2018, eq. 4.4); links that wrap around the zone carry that phase.

    Band groups for Chern numbers: bands s, s+1 are merged when min_q(ω_{s+1} − ω_s) ≤ gap_rtol·max ω.
    A group's Chern number is reported only when it is gapped from its neighbours (and, for the
    lowest group, from ω = 0), its modes are stable, and no plaquette phase exceeds π/2 (the mesh
    resolves the curvature); otherwise ``chern`` is None and ``note`` says why.

    Args:
        modes: :func:`gyroscopic_modes` at the mesh points ``q`` (any order).
        q: (N1·N2, 2) Cartesian 1/nm, a full Γ-centred grid.
        mesh: (N1, N2).
        basis: (n, 2) site positions τ_κ in nm.
        reciprocal: (2, 2) rows b1, b2.

    Raises:
        ValueError: q is not the stated grid, or shapes disagree.
    """
    n1, n2 = (int(x) for x in mesh)
    b = np.asarray(reciprocal, dtype=float)
    tau = np.asarray(basis, dtype=float)
    m = modes.frequencies.shape[1]
    if tau.shape != (m // 2, 2):
        raise ValueError(f"basis shape {tau.shape} does not match {m} degrees of freedom")
    order, _ = mesh_order(q, b, mesh)
    qg = np.asarray(q, dtype=float)[order].reshape(n1, n2, 2)
    f = modes.frequencies[order].reshape(n1, n2, m)
    u = modes.displacements[order].reshape(n1, n2, m, m)
    ok = modes.normalized[order].reshape(n1, n2, m)
    gmat = gyroscopic_term(m, modes.omega_c)
    fmax = max(float(np.max(np.abs(f))), 1e-300)

    def neighbour(axis: int):
        """States at q + b_axis/N_axis in the periodic gauge: (u, ω) rolled, with wrap phases."""
        step = b[axis] / (n1, n2)[axis]
        qn = np.roll(qg, -1, axis=axis)
        g = qg + step - qn  # reciprocal lattice vector (0 inside the zone)
        phase = np.exp(-1j * (g @ tau.T))  # (N1, N2, n)
        ph = np.repeat(phase, 2, axis=-1)[..., :, None]
        return np.roll(u, -1, axis=axis) * ph, np.roll(f, -1, axis=axis)

    u1, f1 = neighbour(0)
    u2, f2 = neighbour(1)
    m1 = krein_overlap(u, f, u1, f1, gmat)  # q → q + δ1
    m2 = krein_overlap(u, f, u2, f2, gmat)  # q → q + δ2

    def herm(x):
        return np.conj(np.swapaxes(x, -1, -2))

    links = [
        m1.reshape(-1, m, m),
        np.roll(m2, -1, axis=0).reshape(-1, m, m),
        herm(np.roll(m1, -1, axis=1)).reshape(-1, m, m),
        herm(m2).reshape(-1, m, m),
    ]
    corners = [f, np.roll(f, -1, 0), np.roll(np.roll(f, -1, 0), -1, 1), np.roll(f, -1, 1)]
    okc = [ok, np.roll(ok, -1, 0), np.roll(np.roll(ok, -1, 0), -1, 1), np.roll(ok, -1, 1)]
    tol = rtol * fmax
    cuts = np.all([np.diff(c, axis=-1) > tol for c in corners], axis=0).reshape(-1, m - 1)
    labels = np.concatenate([np.zeros((n1 * n2, 1), dtype=int), np.cumsum(cuts, axis=-1)], axis=-1)
    bad_mode = ~np.all(okc, axis=0).reshape(-1, m)
    area = _cross(b[0], b[1]) / (n1 * n2)
    omega, degenerate, _ = _band_curvatures(links, labels, _group_invalid(labels, bad_mode), area)

    # Chern numbers per globally gapped group.
    gap_tol = gap_rtol * fmax
    gaps = np.min(np.diff(f, axis=-1).reshape(-1, m - 1), axis=0)  # (2n − 1,)
    glabels = np.concatenate([[0], np.cumsum(gaps > gap_tol)])
    lowest = float(np.min(f[..., 0]))
    groups = []
    for lab in range(int(glabels[-1]) + 1):
        members = np.flatnonzero(glabels == lab)
        first, last = int(members[0]), int(members[-1])
        phase = _plaquette_phases(links, np.broadcast_to(glabels, (n1 * n2, m)), first)
        below = lowest if first == 0 else float(gaps[first - 1])
        above = None if last == m - 1 else float(gaps[last])
        gapped = below > gap_tol and (above is None or above > gap_tol)
        max_phase = float(np.max(np.abs(phase)))
        raw = float(np.sum(phase) / (2 * np.pi))
        stable = bool(np.all(ok[..., first : last + 1]))
        notes = []
        if last > first:
            notes.append(f"bands {first}-{last} touch on the mesh: one Chern number for the merged group")
        if not stable:
            notes.append("unstable or zero-frequency modes in this group on the mesh: Berry curvature undefined")
        elif not gapped:
            notes.append("group not gapped from zero frequency on the mesh")
        elif max_phase > PHASE_LIMIT:
            notes.append(f"mesh too coarse: plaquette Berry phase up to {max_phase:.2f} rad > π/2")
        defined = stable and gapped and max_phase <= PHASE_LIMIT
        groups.append(
            BandGroupChern(
                first,
                last,
                int(round(raw)) if defined else None,
                below,
                above,
                gapped,
                max_phase,
                "; ".join(notes),
            )
        )
    centres = qg + 0.5 * (b[0] / n1 + b[1] / n2)
    return BerryCurvatureMesh(
        (n1, n2),
        centres,
        omega.reshape(n1, n2, m),
        degenerate.reshape(n1, n2, m),
        groups,
        order,
    )
