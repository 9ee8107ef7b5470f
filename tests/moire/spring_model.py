"""Test-only lattice model: central + transverse springs between neighbours and an on-site trap.

Builds ħ²D(q) (meV², arbitrary scale) in phonopy's convention, e^{iq·(R_l + τ_κ′ − τ_κ)}, DOF order
2κ + α, exactly the structure of spec §5 with Φ(r) = k_L r̂r̂ᵀ + k_T (1 − r̂r̂ᵀ) within a cut-off.
Used to test gyroscopic.py, chirality.py and topology.py independently of the real engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SQ3 = np.sqrt(3.0)


@dataclass(frozen=True)
class SpringModel:
    cell: np.ndarray  # (2, 2) rows a1, a2
    basis: np.ndarray  # (n, 2)
    trap: np.ndarray  # (n,) on-site ω² (meV²) per site
    k_l: float = 1.0
    k_t: float = 0.2
    cutoff: float = 1.05

    @property
    def reciprocal(self) -> np.ndarray:
        return 2 * np.pi * np.linalg.inv(self.cell).T

    def _bonds(self):
        """All (κ, κ′, r = R + τ′ − τ) with 0 < |r| ≤ cutoff, as arrays."""
        rng = np.arange(-4, 5)
        lat = (rng[:, None, None] * self.cell[0] + rng[None, :, None] * self.cell[1]).reshape(-1, 2)
        n = len(self.basis)
        r = lat[None, None, :, :] + self.basis[None, :, None, :] - self.basis[:, None, None, :]
        dist = np.linalg.norm(r, axis=-1)
        keep = (dist > 1e-9) & (dist <= self.cutoff)
        kk, kp, ll = np.nonzero(keep)
        assert kk.size and n
        return kk, kp, r[kk, kp, ll]

    def dynamical_matrix(self, q: np.ndarray) -> np.ndarray:
        """(N_q, 2n, 2n) complex ħ²D for q (N_q, 2) Cartesian."""
        q = np.atleast_2d(q)
        n = len(self.basis)
        kk, kp, r = self._bonds()
        rhat = r / np.linalg.norm(r, axis=-1, keepdims=True)
        phi = self.k_l * rhat[:, :, None] * rhat[:, None, :] + self.k_t * (
            np.eye(2) - rhat[:, :, None] * rhat[:, None, :]
        )
        phase = np.exp(1j * q @ r.T)  # (N_q, bonds)
        s_q = np.zeros((q.shape[0], n, n, 2, 2), dtype=complex)
        s_0 = np.zeros((n, 2, 2))
        np.add.at(s_0, kk, phi)
        for b in range(len(kk)):  # loop over bonds (a handful), vectorized over q
            s_q[:, kk[b], kp[b]] += phase[:, b, None, None] * phi[b]
        d = -s_q
        for k in range(n):
            d[:, k, k] += s_0[k] + self.trap[k] * np.eye(2)
        return d.transpose(0, 1, 3, 2, 4).reshape(q.shape[0], 2 * n, 2 * n)


def triangular(trap: float = 4.0, **kw) -> SpringModel:
    cell = np.array([[1.0, 0.0], [0.5, SQ3 / 2]])
    return SpringModel(cell, np.zeros((1, 2)), np.array([trap]), **kw)


def honeycomb(trap_a: float = 4.0, trap_b: float = 4.0, **kw) -> SpringModel:
    """Honeycomb of nearest-neighbour distance 1 in the √3 × √3 cell of spec §4 (honeycomb GWC)."""
    cell = np.array([[1.5, SQ3 / 2], [0.0, SQ3]])
    basis = np.array([[0.0, 0.0], [1.0, 0.0]])
    return SpringModel(cell, basis, np.array([trap_a, trap_b]), **kw)


def gamma_grid(reciprocal: np.ndarray, mesh: tuple[int, int], shuffle: int | None = None) -> np.ndarray:
    """Full Γ-centred grid, fractions in [−½, ½), optionally shuffled (tests mesh_order)."""
    n1, n2 = mesh
    i1, i2 = np.meshgrid(np.arange(n1), np.arange(n2), indexing="ij")
    f = np.stack([i1.ravel() / n1, i2.ravel() / n2], axis=-1)
    f = f - np.floor(f + 0.5)
    q = f @ reciprocal
    if shuffle is not None:
        q = q[np.random.default_rng(shuffle).permutation(len(q))]
    return q


def k_point(reciprocal: np.ndarray) -> np.ndarray:
    """A zone corner K of a hexagonal reciprocal lattice (b1, b2 at 60° or 120°)."""
    b1, b2 = reciprocal
    k = (b1 + b2) / 3 if b1 @ b2 > 0 else (2 * b1 + b2) / 3
    assert np.isclose(np.linalg.norm(k), np.linalg.norm(b1) / SQ3)
    return k
