"""Rotation symmetry of the one-site-per-cell SCHA map (spec §12): the q mesh of the real path of
`moire_cli.scha_map.step` reduced to one point per orbit of the largest rotation group C_m
(m = 6, 4 or 3) that maps the lattice, the mesh, the harmonic D(q), the bonds and the moiré cosines
onto themselves.

With a symmetric state (R C_site Rᵀ = C_site and C_{Rδ} = R C_δ Rᵀ for every rotation R of the
group: the harmonic fluctuations are symmetric, and a step keeps a symmetric state symmetric) the
fluctuation matrix obeys G(Rq) = R G(q) Rᵀ, so for any f

    Σ_{q ∈ mesh} w_q G(q) f(q·δ) = (1/m) Σ_k R^k [Σ_{q ∈ orbits} W_q G(q) f(q·R^{−k}δ)] R^{−k}ᵀ,

with W_q the summed weight of the orbit of q. The q work then runs over about 1/12 of the mesh for
the hexagonal crystals (time reversal alone gives 1/2), the same numbers to rounding (each check
holds to 1e-10 relative; the Ewald D(q) of the built-in crystals is covariant to 1e-15).
"""

from __future__ import annotations

import numpy as np

_ORDERS = (6, 4, 3)
_TOL = 1e-10


def _rotation(m: int) -> np.ndarray:
    c, s = np.cos(2 * np.pi / m), np.sin(2 * np.pi / m)
    return np.array([[c, -s], [s, c]])


def _tensor_maps(rots: np.ndarray) -> np.ndarray:
    """(m, 3, 3): T -> R T Rᵀ on the components (xx, xy, yy) of a symmetric 2×2 T."""
    basis = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    rot = np.einsum("kij,cjl,kml->kcim", rots, basis, rots)  # (m, component in, 2, 2)
    return np.stack([rot[..., 0, 0], rot[..., 0, 1], rot[..., 1, 1]], axis=-1).transpose(0, 2, 1)


def _match(vectors: np.ndarray, targets: np.ndarray, scale: float) -> np.ndarray | None:
    """Index of the target equal to ± each vector (within _TOL·scale), or None if one has none."""
    dist = np.minimum(np.linalg.norm(vectors[:, None] - targets[None], axis=-1),
                      np.linalg.norm(vectors[:, None] + targets[None], axis=-1))
    idx = np.argmin(dist, axis=1)
    return idx if np.all(dist[np.arange(len(vectors)), idx] <= _TOL * scale) else None


def rotation_orbits(cell: np.ndarray, n_mesh: int, todo: np.ndarray, rep: np.ndarray, q_weight: np.ndarray,
                    d_real: np.ndarray, delta_half: np.ndarray, smeared_half: np.ndarray,
                    cos_moire: np.ndarray, b: np.ndarray) -> dict | None:
    """The orbits of the largest rotation group of one sweep point's single-site problem.

    Args:
        cell: (2, 2) rows a1, a2 (nm).  n_mesh: n of the Γ-centred n×n mesh (`crystals.monkhorst_pack`).
        todo: (N_q,) sorted mesh indices of the time-reversal representatives; rep: (n²,) mesh index
            -> its representative's mesh index (`dynamics.time_reversal_representatives`).
        q_weight: (N_q,) weights of the representatives.  d_real: (3, N_q) ħ²D_xx, ħ²D_xy, ħ²D_yy.
        delta_half: (H, 2) one bond of each ±δ pair (nm); smeared_half: (H,) bool.
        cos_moire: (3,) s cos(b_j·τ + ψ); b: (3, 2) moiré reciprocal vectors (1/nm).

    Returns:
        None if no rotation of order 3, 4 or 6 is a symmetry; else {"orbit": (N_o,) positions in
        ``todo`` of one q per orbit, "weight": (N_o,) summed q weights, "maps": (m, 3, 3) the
        tensor maps of R^k divided by m, "bond_index": (m, H) the half bond ±R^{−k}δ_h}.
    """
    inv = np.linalg.inv(cell)
    recip = 2 * np.pi * inv.T
    n_q = len(todo)
    tensors = d_real.T[:, [0, 1, 1, 2]].reshape(n_q, 2, 2)
    for m in _ORDERS:
        r = _rotation(m)
        lattice = cell @ r.T @ inv
        frac = recip @ r.T @ np.linalg.inv(recip)  # q = f·B -> Rq = f·(B Rᵀ B⁻¹)·B
        if np.abs(lattice - np.rint(lattice)).max() > _TOL or np.abs(frac - np.rint(frac)).max() > _TOL:
            continue
        i, j = np.divmod(todo, n_mesh)
        f = np.stack([i, j], axis=1) @ np.rint(frac).astype(int)
        perm = np.searchsorted(todo, rep[(f[:, 0] % n_mesh) * n_mesh + f[:, 1] % n_mesh])  # q -> Rq
        if np.abs(r @ tensors @ r.T - tensors[perm]).max() > _TOL * np.abs(tensors).max():
            continue
        rots = np.stack([np.linalg.matrix_power(r, k) for k in range(m)])
        bond_index = [_match(delta_half @ rk, delta_half, np.abs(delta_half).max()) for rk in rots]  # R^{−k}δ
        moire = _match(b @ r.T, b, np.abs(b).max()) if np.any(cos_moire) else np.arange(len(b))
        if any(x is None for x in bond_index) or moire is None or not np.allclose(cos_moire[moire], cos_moire):
            continue
        bond_index = np.array(bond_index)
        if not np.array_equal(smeared_half[bond_index], np.broadcast_to(smeared_half, bond_index.shape)):
            continue
        orbit_id = np.arange(n_q)
        step = np.arange(n_q)
        for _ in range(m - 1):
            step = perm[step]
            orbit_id = np.minimum(orbit_id, step)
        orbit, inverse = np.unique(orbit_id, return_inverse=True)
        weight = np.bincount(inverse.ravel(), weights=q_weight, minlength=len(orbit))
        return {"orbit": orbit, "weight": weight, "maps": _tensor_maps(rots) / m, "bond_index": bond_index}
    return None
