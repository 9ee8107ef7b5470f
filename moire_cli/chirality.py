"""Chiral phonons: angular momentum, magnetic moment and their thermal totals (spec §6), and
:func:`chiral_phonons`, everything `moire phonons` reports about chirality in one call.

Modes in a field come from :mod:`moire_cli.gyroscopic` (conventions there), Berry curvature and
Chern numbers from :mod:`moire_cli.topology`.

Sources: Zhang & Niu, PRL 112, 085503 (2014) (phonon angular momentum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moire_cli.gyroscopic import (
    DEGENERACY_RTOL,
    GyroscopicModes,
    degenerate_groups,
    gyroscopic_modes,
    gyroscopic_stability,
    gyroscopic_term,
    krein_overlap,
)
from moire_cli.topology import GAP_RTOL, BerryCurvatureMesh, berry_curvature_mesh, berry_curvature_path
from moire_cli.units import K_B_MEV_PER_K

#: A run counts as chiral when B ≠ 0 or some |l_z| on the path exceeds this (ħ). Below it, l_z and
#: Ω vanish by symmetry (time reversal and inversion both intact) up to round-off.
CHIRAL_L_Z_TOL = 1e-6


def _spin_operator(n_dof: int) -> np.ndarray:
    """iJ ⊗ 1_sites: ε†(iJ)ε = Σ_κ 2 Im(ε*_κx ε_κy) (Zhang–Niu), the per-site rotation generator."""
    return gyroscopic_term(n_dof, 1.0)


def angular_momentum(
    modes: GyroscopicModes, *, rtol: float = DEGENERACY_RTOL
) -> tuple[np.ndarray, np.ndarray]:
    """Phonon angular momentum l_z per mode, in units of ħ (spec §6).

    B = 0: Zhang–Niu l_z = Σ_κ 2 Im(ε*_κx ε_κy) (PRL 112, 085503, eq. 4) for unit ε.
    B ≠ 0: the kinetic form, ⟨Σ_κ m (u_κ × u̇_κ)_z⟩ per phonon = ħω L/E for a classical mode:
    l_z = 2ω u†(iJ)u with u†(2ω − G)u = 1 (it reduces to Zhang–Niu at B = 0 and gives the exact
    zero-point ⟨L_kin⟩ = ħω_c/2√(ω_M² + ω_c²/4) of the Fock–Darwin oscillator).
    Inside a degenerate subspace (|Δω| ≤ rtol·max|ω|) the per-mode value is gauge dependent: every
    member gets the subspace-invariant mean tr(N⁻¹L)/k (N, L the Krein Gram and l matrices of the
    subspace) and is flagged. Unstable or zero modes get the Zhang–Niu value of their ε.

    Returns:
        l_z (N_q, 2n) in ħ; degenerate (N_q, 2n) bool.
    """
    f, u, ok = modes.frequencies, modes.displacements, modes.normalized
    m = f.shape[1]
    spin = _spin_operator(m)
    gmat = gyroscopic_term(m, modes.omega_c)
    tol = rtol * max(float(np.max(np.abs(f))), 1e-300)
    labels = degenerate_groups(f, tol)
    uh = np.conj(np.swapaxes(u, -1, -2))
    wsum = f[:, :, None] + f[:, None, :]
    gram = krein_overlap(u, f, u, f, gmat)
    lmat = wsum * (uh @ (spin @ u))
    eps = modes.polarizations
    l_zn = np.real(np.einsum("qis,ij,qjs->qs", eps.conj(), spin, eps))
    eye = np.eye(m)
    l_z = np.empty_like(f)
    degenerate = np.zeros(f.shape, dtype=bool)
    for s in range(m):
        member = labels == labels[:, s : s + 1]  # (N_q, 2n)
        size = member.sum(axis=1)
        pair = member[:, :, None] & member[:, None, :]
        group_ok = np.all(ok | ~member, axis=1)  # every member symplectically normalised
        nm = np.where(pair & group_ok[:, None, None], gram, eye)
        lm = np.where(pair, lmat, 0.0)
        val = np.real(np.trace(np.linalg.solve(nm, lm), axis1=1, axis2=2)) / size
        l_z[:, s] = np.where(group_ok, val, l_zn[:, s])
        degenerate[:, s] = size > 1
    return l_z, degenerate


def zhang_niu_angular_momentum(polarizations: np.ndarray) -> np.ndarray:
    """Zhang–Niu l_z = Σ_κ 2 Im(ε*_κx ε_κy) in ħ for unit polarization columns (..., 2n, 2n) → (..., 2n)."""
    e = np.asarray(polarizations)
    return 2.0 * np.sum(np.imag(np.conj(e[..., 0::2, :]) * e[..., 1::2, :]), axis=-2)


def magnetic_moment(l_z: np.ndarray, mass: float, charge_sign: int = -1) -> np.ndarray:
    """Phonon magnetic moment μ_z = (q_c/2m) l_z in Bohr magnetons: μ_z/μ_B = s (m₀/m) l_z/ħ.

    Args:
        l_z: angular momentum in ħ (any shape).
        mass: carrier mass in m₀.
        charge_sign: −1 electrons (μ antiparallel to l), +1 holes.
    """
    if charge_sign not in (-1, 1):
        raise ValueError(f"charge_sign must be -1 (electrons) or +1 (holes), got {charge_sign}")
    return float(charge_sign) * np.asarray(l_z) / float(mass)


def bose_weight(frequencies: np.ndarray, temperature_K: float) -> np.ndarray:
    """n_B(ω) + ½ for ħω in meV at T in K (½ at T = 0); NaN-free for ω > 0 only."""
    w = np.asarray(frequencies, dtype=float)
    if temperature_K < 0:
        raise ValueError(f"temperature must be ≥ 0 K, got {temperature_K}")
    if temperature_K == 0:
        return np.full_like(w, 0.5)
    x = w / (K_B_MEV_PER_K * temperature_K)
    with np.errstate(over="ignore", divide="ignore"):
        return 0.5 / np.tanh(0.5 * x)


def thermal_totals(
    frequencies: np.ndarray,
    l_z: np.ndarray,
    mu_z: np.ndarray,
    temperature_K: float,
    n_sites: int,
    *,
    valid: np.ndarray | None = None,
) -> dict:
    """Thermal angular momentum and magnetization per particle, each mode weighted by n_B(ω) + ½.

    L/N = (1/(N_q n)) Σ_{q,s} l_z (n_B + ½), likewise μ_z, over a uniform full mesh (spec §6).

    Args:
        frequencies, l_z, mu_z: (N_q, 2n) ħω in meV, l_z in ħ, μ_z in μ_B on the mesh.
        temperature_K: T ≥ 0.
        n_sites: particles per cell.
        valid: (N_q, 2n) bool, modes to include (default ω > 0); excluded modes are counted.

    Returns:
        dict(temperature_K, angular_momentum_per_particle_hbar, magnetization_per_particle_muB,
        excluded_modes).
    """
    f = np.asarray(frequencies, dtype=float)
    ok = f > 0 if valid is None else np.asarray(valid, dtype=bool)
    weight = np.where(ok, bose_weight(np.where(ok, f, 1.0), temperature_K), 0.0)
    norm = f.shape[0] * n_sites
    return {
        "temperature_K": float(temperature_K),
        "angular_momentum_per_particle_hbar": float(np.sum(weight * l_z) / norm),
        "magnetization_per_particle_muB": float(np.sum(weight * mu_z) / norm),
        "excluded_modes": int((~ok).sum()),
    }


# ---------------------------------------------------------------------------------------------
# Everything `moire phonons` reports, in one call


@dataclass(frozen=True)
class ChiralPhonons:
    """Chiral-phonon quantities along a path and on a mesh (see :func:`chiral_phonons`).

    Attributes:
        omega_c: signed ħω_c (meV); charge_sign: −1 electrons, +1 holes; mass in m₀.
        path_modes / mesh_modes: :class:`GyroscopicModes` on the path and on the mesh.
        l_z, mu_z, berry_curvature, degenerate: (N_path, 2n) on the path, in ħ, μ_B, nm²; flags
            mark modes inside a degenerate subspace (l_z or Ω carry the subspace mean there).
        mesh_l_z: (N_mesh, 2n) l_z on the mesh (input order), in ħ.
        mesh_berry: :class:`BerryCurvatureMesh` (per-band Ω map, Chern numbers).
        stability: :func:`gyroscopic_stability` on path and mesh together.
        thermal: :func:`thermal_totals` at ``temperature_K`` on the mesh.
    """

    omega_c: float
    charge_sign: int
    mass: float
    path_modes: GyroscopicModes
    l_z: np.ndarray
    mu_z: np.ndarray
    berry_curvature: np.ndarray
    degenerate: np.ndarray
    mesh_modes: GyroscopicModes
    mesh_l_z: np.ndarray
    mesh_berry: BerryCurvatureMesh
    stability: dict
    thermal: dict

    @property
    def is_chiral(self) -> bool:
        """True when B ≠ 0 or max |l_z| on the path > :data:`CHIRAL_L_Z_TOL`: time reversal or
        inversion is broken, so l_z and Ω carry information (otherwise both are zero by symmetry)."""
        return self.omega_c != 0.0 or float(np.max(np.abs(self.l_z), initial=0.0)) > CHIRAL_L_Z_TOL

    def summary(self) -> dict:
        """JSON-ready digest: ħω_c, stability under B, Chern numbers with the gap check, thermal totals."""
        groups = [g.as_dict() for g in self.mesh_berry.groups]
        return {
            "chiral": self.is_chiral,
            "hbar_omega_c_meV": self.omega_c,
            "charge_sign": self.charge_sign,
            "stability_under_field": self.stability,
            "chern_numbers": [g["chern"] for g in groups],
            "band_groups": groups,
            "chern_mesh": list(self.mesh_berry.mesh),
            "thermal": self.thermal,
            "max_abs_l_z_hbar": float(np.max(np.abs(self.l_z))),
            "max_abs_berry_curvature_nm2": float(np.nanmax(np.abs(self.berry_curvature), initial=0.0)),
        }


def chiral_phonons(
    dynamical_matrix_fn,
    q_path: np.ndarray,
    q_mesh: np.ndarray,
    mesh: tuple[int, int],
    basis: np.ndarray,
    reciprocal: np.ndarray,
    *,
    omega_c: float,
    mass: float,
    charge_sign: int = -1,
    temperature_K: float = 0.0,
    rtol: float = DEGENERACY_RTOL,
    gap_rtol: float = GAP_RTOL,
) -> ChiralPhonons:
    """Modes under B, l_z, μ_z and Ω along a path; Ω map, Chern numbers and thermal totals on a mesh.

    Args:
        dynamical_matrix_fn: callable q (M, 2) → ħ²D (M, 2n, 2n) meV² (e.g. ``dynamics.dynamical_matrix``
            bound to a model); called three times (path, path plaquettes, mesh).
        q_path: (N_path, 2) Cartesian 1/nm.  q_mesh: (N1·N2, 2) full Γ-centred grid.  mesh: (N1, N2).
        basis: (n, 2) nm; reciprocal: (2, 2) rows b1, b2.
        omega_c: signed ħω_c in meV (:func:`cyclotron_energy`); mass in m₀; charge_sign ±1.
        temperature_K: T for the thermal totals.

    Raises:
        ValueError: bad shapes, q_mesh not the stated grid, charge_sign not ±1, T < 0.
    """
    path_modes = gyroscopic_modes(dynamical_matrix_fn(q_path), omega_c, rtol=rtol)
    l_z, deg_l = angular_momentum(path_modes, rtol=rtol)
    omega, deg_o = berry_curvature_path(dynamical_matrix_fn, q_path, reciprocal, omega_c, rtol=rtol)
    mesh_modes = gyroscopic_modes(dynamical_matrix_fn(q_mesh), omega_c, rtol=rtol)
    mesh_l, _ = angular_momentum(mesh_modes, rtol=rtol)
    berry = berry_curvature_mesh(mesh_modes, q_mesh, mesh, basis, reciprocal, rtol=rtol, gap_rtol=gap_rtol)
    both = GyroscopicModes(
        np.concatenate([path_modes.frequencies, mesh_modes.frequencies]),
        np.concatenate([path_modes.displacements, mesh_modes.displacements]),
        np.concatenate([path_modes.normalized, mesh_modes.normalized]),
        np.concatenate([path_modes.growth_rates, mesh_modes.growth_rates]),
        float(omega_c),
        max(path_modes.real_tol, mesh_modes.real_tol),
    )
    stability = gyroscopic_stability(both)
    n_path = q_path.shape[0]
    stability["where"] = "path" if stability["index"][0] < n_path else "mesh"
    if stability["where"] == "mesh":
        stability["index"][0] -= n_path
    mesh_mu = magnetic_moment(mesh_l, mass, charge_sign)
    valid = mesh_modes.normalized & (mesh_modes.frequencies > 0)
    thermal = thermal_totals(
        mesh_modes.frequencies, mesh_l, mesh_mu, temperature_K, basis.shape[0], valid=valid
    )
    return ChiralPhonons(
        float(omega_c),
        int(charge_sign),
        float(mass),
        path_modes,
        l_z,
        magnetic_moment(l_z, mass, charge_sign),
        omega,
        deg_l | deg_o,
        mesh_modes,
        mesh_l,
        berry,
        stability,
        thermal,
    )
