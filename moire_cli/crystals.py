"""Crystals of charges on the moiré triangular lattice: cells, bases, k-paths and meshes.

Built-ins follow spec §4 (fillings ν of the moiré triangular lattice A1 = a_M(1, 0),
A2 = a_M(1/2, √3/2)). Every built-in has its first site at the origin and all sites on moiré
lattice points, so a :class:`moire_cli.potentials.MoirePotential` (whose coordinates are measured
from a potential minimum) pins each site in a minimum.

Conventions: lengths in nm; q vectors Cartesian in 1/nm including 2π; reciprocal vectors obey
b_i · a_j = 2π δ_ij.

A user-defined cell is replaced by the canonical reduced cell of the same lattice
(:func:`canonical_cell`: Lagrange–Gauss reduction, then a fixed choice among the reduced bases)
and its sites are wrapped into that cell, so every output (nearest-neighbour distance, default
path, meshes, fractional coordinates) is the same however the cell and the sites are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

SQRT3 = np.sqrt(3.0)

#: Built-in crystals: cell rows and basis rows in units of a_M (spec §4).
BUILTIN_CRYSTALS: dict[str, tuple[list[list[float]], list[list[float]], str]] = {
    "triangular": ([[1.0, 0.0], [0.5, SQRT3 / 2]], [[0.0, 0.0]], "ν = 1 (Mott)"),
    "triangular_gwc": ([[1.5, SQRT3 / 2], [0.0, SQRT3]], [[0.0, 0.0]], "ν = 1/3 generalized Wigner crystal"),
    "honeycomb_gwc": ([[1.5, SQRT3 / 2], [0.0, SQRT3]], [[0.0, 0.0], [1.0, 0.0]], "ν = 2/3 generalized Wigner crystal"),
    "linear_stripe": ([[1.0, 0.0], [0.0, SQRT3]], [[0.0, 0.0]], "ν = 1/2 linear stripe"),
    "zigzag_stripe": ([[2.0, 0.0], [0.0, SQRT3]], [[0.0, 0.0], [0.5, SQRT3 / 2]], "ν = 1/2 zigzag stripe"),
}


#: Moiré lattice A1 = (1, 0), A2 = (1/2, √3/2) (rows, units of a_M).
MOIRE_LATTICE = np.array([[1.0, 0.0], [0.5, SQRT3 / 2]])
#: Largest deviation (in lattice-vector coefficients) of a cell vector from a moiré lattice vector.
SUPERLATTICE_TOL = 1e-6
_TOL = 1e-9  # relative tolerance of the ties in the canonical choice


def gauss_reduce(cell: np.ndarray) -> np.ndarray:
    """Lagrange–Gauss reduction of a 2D lattice basis (rows a1, a2): returns (2, 2) rows u, v of the
    same lattice with |u| ≤ |v| and |u·v| ≤ |u|²/2, so u and v are the two successive minima
    (Lagrange 1773; Gauss, Disquisitiones Arithmeticae §171; e.g. Nguyen & Vallée, *The LLL
    Algorithm* (2010), ch. 2).

    Raises:
        ValueError: linearly dependent vectors.
    """
    a, b = (np.asarray(x, dtype=float).copy() for x in np.asarray(cell, dtype=float).reshape(2, 2))
    if abs(a[0] * b[1] - a[1] * b[0]) <= 1e-12 * np.linalg.norm(a) * np.linalg.norm(b):
        raise ValueError("cell vectors are linearly dependent")
    if a @ a > b @ b:
        a, b = b, a
    for _ in range(10000):  # terminates in O(log(|b|/|a|)) steps; the cap only guards round-off
        mu = np.round((a @ b) / (a @ a))
        b = b - mu * a
        if b @ b >= a @ a * (1 - 1e-15):
            break
        a, b = b, a
    return np.array([a, b])


def canonical_cell(cell: np.ndarray) -> np.ndarray:
    """The canonical basis (2, 2) of the lattice spanned by the rows of ``cell``: a reduced basis
    (both vectors successive minima) that is right-handed (det > 0), with an angle ≤ 90° between u and
    v, and u the shortest-lattice-vector candidate closest in direction to +x (then the one with
    u_y ≥ 0). Any basis of the same lattice gives the same result (up to round-off), and the
    built-in cells of spec §4 are their own canonical cells.
    """
    red = gauss_reduce(cell)
    area = abs(np.linalg.det(red))
    lam2 = np.linalg.norm(red[1])
    n = np.arange(-2, 3)
    coef = np.stack(np.meshgrid(n, n, indexing="ij"), -1).reshape(-1, 2)
    vec = coef @ red
    length = np.linalg.norm(vec, axis=1)
    vec, length = vec[(length > 0) & (length <= lam2 * (1 + _TOL))], length[(length > 0) & (length <= lam2 * (1 + _TOL))]
    det = vec[:, None, 0] * vec[None, :, 1] - vec[:, None, 1] * vec[None, :, 0]  # det(u_i, v_j)
    dot = vec @ vec.T
    ok = (np.abs(det - area) <= _TOL * area) & (dot >= -_TOL * np.outer(length, length))
    iu, iv = np.nonzero(ok)
    cos_u = vec[iu, 0] / length[iu]
    keep = cos_u >= cos_u.max() - _TOL
    iu, iv = iu[keep], iv[keep]
    uy = vec[iu, 1] / length[iu]
    keep = uy >= uy.max() - _TOL
    iu, iv = iu[keep], iv[keep]
    lv = length[iv]
    keep = lv <= lv.min() * (1 + _TOL)
    iu, iv = iu[keep], iv[keep]
    cos_uv = dot[iu, iv] / (length[iu] * length[iv])
    k = int(np.argmax(cos_uv))
    return np.array([vec[iu[k]], vec[iv[k]]])


def wrap_basis(cell: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Sites (n, 2) moved by lattice vectors into the cell: fractional coordinates in [0, 1) (a site
    within 1e-9 of a cell edge goes to the lower edge)."""
    frac = np.asarray(basis, dtype=float) @ np.linalg.inv(cell)
    frac = frac - np.floor(frac + _TOL)
    return frac @ cell


def moire_lattice_coefficients(cell: np.ndarray) -> tuple[np.ndarray, float]:
    """Integer coefficients N (2, 2) with cell ≈ N · (A1; A2) for a cell in units of a_M, and the
    largest deviation |cell·(A1; A2)⁻¹ − N| (0 for an exact superlattice of the moiré lattice)."""
    m = np.asarray(cell, dtype=float) @ np.linalg.inv(MOIRE_LATTICE)
    n = np.round(m)
    return n, float(np.abs(m - n).max())


def lattice_coefficient_bounds(cell: np.ndarray, r: float) -> np.ndarray:
    """(2,) bounds n_max with |n_i| ≤ n_max_i for every lattice vector n1 a1 + n2 a2 of length ≤ r
    (|n_i| ≤ r |b_i| / 2π, b the reciprocal vectors): a search that is far enough for any basis."""
    recip = np.linalg.inv(np.asarray(cell, dtype=float)).T
    return np.ceil(r * np.linalg.norm(recip, axis=1)).astype(int) + 1


def neighbour_vectors(cell: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, float]:
    """d = R + τ_κ′ − τ_κ (n, n, L, 2) over every lattice vector R that can reach the nearest
    neighbour, and the nearest-neighbour distance (nm): the search radius is the shortest lattice
    vector plus the largest intra-cell separation, whatever basis the cell is written in."""
    cell = np.asarray(cell, dtype=float)
    basis = np.asarray(basis, dtype=float)
    tau = basis[None, :, :] - basis[:, None, :]
    r = float(np.linalg.norm(gauss_reduce(cell)[0])) + float(np.linalg.norm(tau, axis=-1).max())
    n1, n2 = lattice_coefficient_bounds(cell, r)
    g1, g2 = np.meshgrid(np.arange(-n1, n1 + 1), np.arange(-n2, n2 + 1), indexing="ij")
    lat = g1.ravel()[:, None] * cell[0] + g2.ravel()[:, None] * cell[1]
    d = lat[None, None] + tau[:, :, None]
    dist = np.linalg.norm(d, axis=-1)
    scale = np.sqrt(abs(np.linalg.det(cell)))
    return d, float(dist[dist > 1e-9 * scale].min())


@dataclass(frozen=True, eq=False)
class Crystal:
    """A 2D Bravais lattice with a basis.

    Attributes:
        name: crystal name (a built-in name or a user label).
        cell: (2, 2) rows = lattice vectors a1, a2 (nm).
        basis: (n, 2) Cartesian site positions τ_κ (nm).
        input_cell: (2, 2) the cell as the user wrote it (nm), whose reciprocal basis explicit
            fractional path points refer to; None = ``cell``.
    """

    name: str
    cell: np.ndarray
    basis: np.ndarray
    input_cell: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        cell = np.asarray(self.cell, dtype=float).reshape(2, 2)
        basis = np.atleast_2d(np.asarray(self.basis, dtype=float))
        if basis.ndim != 2 or basis.shape[1] != 2 or basis.shape[0] < 1:
            raise ValueError(f"basis must have shape (n, 2), got {basis.shape}")
        if abs(np.linalg.det(cell)) < 1e-12 * np.prod(np.linalg.norm(cell, axis=1)):  # relative: any a_M
            raise ValueError("cell vectors are linearly dependent")
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "basis", basis)

    def with_basis(self, basis: np.ndarray) -> Crystal:
        """Same cell and name, new basis (n, 2) nm."""
        return Crystal(self.name, self.cell, np.asarray(basis, dtype=float), self.input_cell)

    @property
    def n_sites(self) -> int:
        return int(self.basis.shape[0])

    @property
    def area(self) -> float:
        """Cell area |a1 × a2| (nm²)."""
        return float(abs(np.linalg.det(self.cell)))

    @property
    def density(self) -> float:
        """Areal density n_sites / area (nm⁻²)."""
        return self.n_sites / self.area

    @property
    def reciprocal(self) -> np.ndarray:
        """(2, 2) rows b1, b2 (1/nm) with b_i · a_j = 2π δ_ij."""
        return 2 * np.pi * np.linalg.inv(self.cell).T

    @cached_property
    def nearest_neighbour_distance(self) -> float:
        """Smallest distance between two distinct sites of the infinite crystal (nm), searched far
        enough for any cell basis (:func:`neighbour_vectors`)."""
        return neighbour_vectors(self.cell, self.basis)[1]

    def to_fractional(self, q: np.ndarray) -> np.ndarray:
        """Cartesian q (..., 2) 1/nm -> fractional coordinates (..., 2) in units of b1, b2."""
        return np.asarray(q) @ self.cell.T / (2 * np.pi)

    def to_cartesian(self, frac: np.ndarray) -> np.ndarray:
        """Fractional q (..., 2) -> Cartesian (..., 2) 1/nm."""
        return np.asarray(frac, dtype=float) @ self.reciprocal

    @property
    def is_hexagonal(self) -> bool:
        """|a1| = |a2| with a 60° or 120° angle."""
        l1, l2 = np.linalg.norm(self.cell, axis=1)
        c = float(self.cell[0] @ self.cell[1]) / (l1 * l2)
        return bool(np.isclose(l1, l2, rtol=1e-9) and np.isclose(abs(c), 0.5, atol=1e-9))


def build_crystal(
    name: str,
    a_M: float,
    cell: np.ndarray | None = None,
    basis: np.ndarray | None = None,
) -> Crystal:
    """Build a built-in crystal of spec §4 or a user-defined one.

    Args:
        name: one of :data:`BUILTIN_CRYSTALS` or any other label for a user-defined crystal.
        a_M: moiré period (nm), > 0.
        cell: (2, 2) lattice vectors in units of a_M (user-defined crystals only).
        basis: (n, 2) Cartesian sites in units of a_M (user-defined crystals only).

    Raises:
        ValueError: unknown name without cell/basis, a built-in given a cell, a_M ≤ 0, bad shapes.
    """
    if not a_M > 0:
        raise ValueError(f"a_M must be positive, got {a_M}")
    if name in BUILTIN_CRYSTALS:
        if cell is not None or basis is not None:
            raise ValueError(f"crystal {name!r} is built in; give cell and basis only for a user-defined crystal")
        c, b, _ = BUILTIN_CRYSTALS[name]
        return Crystal(name, a_M * np.array(c), a_M * np.array(b))
    if cell is None or basis is None:
        raise ValueError(f"unknown crystal {name!r}: choose one of {sorted(BUILTIN_CRYSTALS)} or give cell and basis")
    given = a_M * np.asarray(cell, dtype=float)
    canon = canonical_cell(given)
    return Crystal(name, canon, wrap_basis(canon, a_M * np.atleast_2d(np.asarray(basis, dtype=float))), given)


def monkhorst_pack(crystal: Crystal, mesh: tuple[int, int]) -> np.ndarray:
    """Γ-centred full Monkhorst–Pack grid (fractional k_i = j/n_i, j = 0 … n_i − 1).

    Returns:
        (n1·n2, 2) Cartesian q (1/nm, with 2π).
    Raises:
        ValueError: non-positive mesh.
    """
    n1, n2 = (int(m) for m in mesh)
    if n1 < 1 or n2 < 1:
        raise ValueError(f"mesh must be positive, got {mesh}")
    f1, f2 = np.meshgrid(np.arange(n1) / n1, np.arange(n2) / n2, indexing="ij")
    frac = np.stack([f1.ravel(), f2.ravel()], axis=1)
    return crystal.to_cartesian(frac)


def special_points(crystal: Crystal) -> dict[str, np.ndarray]:
    """Named high-symmetry points (fractional coordinates) of the crystal's Brillouin zone.

    Hexagonal cells: Γ, M, K, K' (K' = −K). Other cells: Γ, X = (½,0), Y = (0,½), S = (½,½)
    (the rectangular labels, used for oblique cells too).
    """
    pts = {"G": np.zeros(2)}
    if crystal.is_hexagonal:
        b = crystal.reciprocal
        cosb = float(b[0] @ b[1]) / float(np.linalg.norm(b[0]) * np.linalg.norm(b[1]))
        k = np.array([2.0, 1.0]) / 3 if cosb < 0 else np.array([1.0, 1.0]) / 3
        pts.update({"M": np.array([0.5, 0.0]), "K": k, "K'": -k})
    else:
        pts.update({"X": np.array([0.5, 0.0]), "Y": np.array([0.0, 0.5]), "S": np.array([0.5, 0.5])})
    return pts


def default_path_labels(crystal: Crystal) -> list[str]:
    """Γ–M–K–Γ for hexagonal cells, Γ–X–S–Y–Γ otherwise."""
    return ["G", "M", "K", "G"] if crystal.is_hexagonal else ["G", "X", "S", "Y", "G"]


def high_symmetry_path(
    crystal: Crystal,
    points: list[str] | list[tuple[str, np.ndarray]] | None = None,
    n_per_segment: int = 40,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Piecewise-linear path through labelled points.

    Args:
        points: labels of :func:`special_points` ("G" is Γ), or (label, fractional (2,)) pairs in
            units of the reciprocal vectors of ``crystal.input_cell`` (the cell as written; the
            crystal's own cell when None); None = :func:`default_path_labels`. At least two points.
        n_per_segment: q-points per segment (≥ 2); segment ends are shared, not repeated.

    Returns:
        q (N_q, 2) Cartesian 1/nm; distance (N_q,) cumulative path length (1/nm);
        label positions: list of (index into q, label).
    Raises:
        ValueError: unknown label, fewer than two points, n_per_segment < 2.
    """
    if n_per_segment < 2:
        raise ValueError("n_per_segment must be at least 2")
    if points is None:
        points = default_path_labels(crystal)
    named = special_points(crystal)
    written = crystal.cell if crystal.input_cell is None else crystal.input_cell
    to_own = crystal.cell @ np.linalg.inv(written)  # fractional in the written cell -> own cell
    labelled: list[tuple[str, np.ndarray]] = []
    for p in points:
        if isinstance(p, str):
            if p not in named:
                raise ValueError(f"unknown high-symmetry point {p!r} for this cell; known: {sorted(named)}")
            labelled.append((p, named[p]))
        else:
            lab, frac = p
            labelled.append((str(lab), to_own @ np.asarray(frac, dtype=float).reshape(2)))
    if len(labelled) < 2:
        raise ValueError("a path needs at least two points")
    fr = np.array([f for _, f in labelled])
    t = np.linspace(0.0, 1.0, n_per_segment)
    segs = [fr[i] + t[:, None] * (fr[i + 1] - fr[i]) for i in range(len(fr) - 1)]
    frac = np.concatenate([segs[0]] + [s[1:] for s in segs[1:]])
    q = crystal.to_cartesian(frac)
    step = np.linalg.norm(np.diff(q, axis=0), axis=1)
    distance = np.concatenate([[0.0], np.cumsum(step)])
    labels = [(i * (n_per_segment - 1), lab) for i, (lab, _) in enumerate(labelled)]
    return q, distance, labels
