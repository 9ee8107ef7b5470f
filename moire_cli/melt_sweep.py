"""Lindemann melting of a sweep of lattice models (spec §7): the driver behind `moire melt`.

`melt_sweep` runs the whole analysis for a sweep of `dynamics.LatticeModel`s: relaxation, phonons
on time-reversal-reduced meshes (one batched call per point), mesh refinement (`refine_mesh`),
criteria per point, and T_m for all points at once (Illinois regula falsi on the bracket,
vectorized). The Lindemann physics itself (spectra, L(T), T_m) is :mod:`moire_cli.lindemann`.

Units: ħω meV, m in m₀, lengths nm, T K.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from moire_cli.lindemann import (
    RELATIVE,
    SINGLE_SITE,
    LindemannSpectrum,
    lindemann_squared_shared,
    nearest_neighbour_bonds,
    relative_spectrum,
    single_site_spectrum,
    stack_spectra,
)


# --------------------------------------------------------------------------------------------
# Mesh refinement
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeshConvergence:
    """Outcome of `refine_mesh`: the mesh used, the last relative change, and the whole history."""

    mesh: int
    change: float
    converged: bool
    history: tuple[tuple[int, float], ...]


def refine_mesh(
    compute: Callable[[int], np.ndarray], meshes: Sequence[int], tolerance: float
) -> tuple[np.ndarray, MeshConvergence]:
    """Evaluate `compute(n)` (an n×n mesh) on growing meshes until the result changes by < tolerance.

    The change is max |x_n − x_prev| / max |x_n| over the finite entries (e.g. ⟨u²⟩ on the
    temperature grid of every sweep point at once).

    Args:
        compute: n -> array (any fixed shape). meshes: increasing mesh sizes (≥ 2 entries).
        tolerance: relative.

    Returns:
        (result on the last mesh evaluated, MeshConvergence). Not converged after the last mesh:
        converged=False (the caller reports it).
    """
    if len(meshes) < 2:
        raise ValueError("refine_mesh needs at least two mesh sizes")
    prev = compute(meshes[0])
    history: list[tuple[int, float]] = [(int(meshes[0]), float("nan"))]
    change = float("inf")
    for n in meshes[1:]:
        cur = compute(n)
        ok = np.isfinite(cur) & np.isfinite(prev)
        scale = np.abs(cur[ok]).max() if ok.any() else 1.0
        change = float(np.abs(cur[ok] - prev[ok]).max() / scale) if ok.any() else 0.0
        history.append((int(n), change))
        prev = cur
        if change < tolerance:
            return cur, MeshConvergence(int(n), change, True, tuple(history))
    return prev, MeshConvergence(int(meshes[-1]), change, False, tuple(history))


# --------------------------------------------------------------------------------------------
# Sweeps over lattice models
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MeltSweepResult:
    """Lindemann analysis of a sweep of P lattice models on N_T temperatures.

    Attributes:
        temperatures: (N_T,) K.
        lindemann_ratio: (P, N_T) single-site L(T); NaN at T > 0 for unpinned crystals (diverges).
        relative_lindemann_ratio: (P, N_T) L_rel(T) = √(⟨|u_i − u_j|²⟩/2)/a (largest bond).
        lindemann_ratio_zero: (P,) single-site L(0); for unpinned crystals extrapolated in the mesh
            (error ∝ 1/N from the Γ cell, removed by Richardson extrapolation of the last two meshes).
        melting_temperature: (P,) K; NaN when quantum melted or unstable, +inf above t_max.
        quantum_melted: (P,) L(0) ≥ L_c.  unstable: (P,) imaginary phonons.
        criterion: (P,) "single-site" (pinned) or "relative" (unpinned) — the ratio T_m is solved on.
        pinned: (P,) bool.  hbar_omega_M: (P,) meV (NaN unpinned).  nearest_neighbour_distance: (P,) nm.
        lindemann_critical: (P,) L_c.  mesh: the MeshConvergence reached (shared by all points).
        models: the (relaxed) lattice models.
    """

    temperatures: np.ndarray
    lindemann_ratio: np.ndarray
    relative_lindemann_ratio: np.ndarray
    lindemann_ratio_zero: np.ndarray
    melting_temperature: np.ndarray
    quantum_melted: np.ndarray
    unstable: np.ndarray
    criterion: np.ndarray
    pinned: np.ndarray
    hbar_omega_M: np.ndarray
    nearest_neighbour_distance: np.ndarray
    lindemann_critical: np.ndarray
    mesh: MeshConvergence
    models: tuple


def _phonon_spectra(models: Sequence, n: int) -> tuple[LindemannSpectrum, LindemannSpectrum]:
    """Single-site and relative spectra of every model on its n×n Γ-centred mesh: one batched
    `dynamics.phonons` call per model (all q at once) on the time-reversal representatives
    (q and −q mod G have the same frequencies and mode weights), each counted with its multiplicity."""
    from moire_cli import crystals, dynamics

    single, relative = [], []
    for m in models:  # sweep points; each call is vectorized over the N_q mesh points
        cr = m.crystal
        q_full = crystals.monkhorst_pack(cr, (n, n))
        rep = dynamics.time_reversal_representatives(cr, q_full)[0]
        todo, counts = np.unique(rep, return_counts=True)  # q and −q (mod G): one D, weight 2
        q = q_full[todo]
        w, e = dynamics.phonons(m, q)
        tol = 1e-5 * float(np.abs(w).max())  # acoustic zero modes at Γ (round-off level)
        bonds = nearest_neighbour_bonds(cr.cell, cr.basis)
        single.append(single_site_spectrum(w, e, m.mass, bonds[3], tol, counts))
        relative.append(relative_spectrum(w, e, q, bonds, m.mass, tol, counts))
    return stack_spectra(single), stack_spectra(relative)


def melt_sweep(
    models: Sequence,
    lindemann_critical: float | np.ndarray,
    temperatures: np.ndarray,
    meshes: Sequence[int] = (12, 24, 48),
    tolerance: float = 1e-3,
    relax: bool = True,
    t_max: float = 1e4,
) -> MeltSweepResult:
    """Lindemann ratio L(T), T_m and quantum melting for a sweep of `dynamics.LatticeModel`s.

    Each model is relaxed (optional), its phonons computed on Γ-centred n×n Monkhorst–Pack meshes
    (all q at once), and the meshes in ``meshes`` are tried in turn until the monitored L²
    (criterion ratio on the temperature grid and single-site L²(0), all points together) changes by
    less than ``tolerance`` relative; the reached mesh and history are returned (not silent).
    Pinned models use the single-site ratio; unpinned ones (potential None) the relative one for
    T_m (the single-site one diverges at T > 0), and a mesh-extrapolated single-site L(0).
    Everything after the phonons is vectorized over the sweep.

    Args:
        models: P lattice models with the same crystal type (same number of sites).
        lindemann_critical: L_c, scalar or (P,).
        temperatures: (N_T,) K, ≥ 0.
        meshes: increasing mesh sizes n (n×n); one entry = no refinement.
        tolerance: relative change of L² that counts as converged.
        relax: relax each basis first (`dynamics.relax`).
        t_max: K, upper end of the T_m bracket.

    Raises:
        ValueError: empty sweep, negative temperatures, models with different numbers of sites.
    """
    from moire_cli import dynamics

    if not len(models):
        raise ValueError("empty sweep")
    temps = np.asarray(temperatures, dtype=float)
    if temps.ndim != 1 or temps.size == 0 or np.any(temps < 0):
        raise ValueError("temperatures must be a non-empty list of values ≥ 0 K")
    if len({m.crystal.n_sites for m in models}) != 1:
        raise ValueError("all sweep points must have the same number of sites per cell")
    if relax:
        models = [dynamics.relax(m).model for m in models]
    n_p = len(models)
    lc = np.broadcast_to(np.asarray(lindemann_critical, dtype=float), (n_p,)).copy()
    pinned = np.array([m.potential is not None for m in models])
    t_all = np.concatenate([[0.0], temps])

    state: dict = {}

    def monitored(n: int) -> np.ndarray:
        single, rel = _phonon_spectra(models, n)
        l2_single, l2_rel = (x.max(axis=-2) for x in lindemann_squared_shared([single, rel], t_all))  # (P, 1+N_T)
        l2_zero = l2_single[:, 0].copy()
        prev = state.get("l2_zero_raw")
        if prev is not None and not pinned.all():  # Richardson in h = 1/n for the Γ-cell error of free crystals
            n0 = state["n"]
            extrap = (n * l2_zero - n0 * prev) / (n - n0)
            l2_zero = np.where(pinned, l2_zero, extrap)
        state.update(n=n, l2_zero_raw=l2_single[:, 0].copy(), single=single, rel=rel, l2_zero=l2_zero,
                     l2_single=l2_single, l2_rel=l2_rel)
        crit = np.where(pinned[:, None], l2_single[:, 1:], l2_rel[:, 1:])
        return np.concatenate([l2_zero[:, None], crit], axis=1)

    if len(meshes) == 1:
        monitored(int(meshes[0]))
        conv = MeshConvergence(int(meshes[0]), float("nan"), False, ((int(meshes[0]), float("nan")),))
    else:
        _, conv = refine_mesh(monitored, [int(n) for n in meshes], tolerance)
    single, rel = state["single"], state["rel"]
    l_zero = np.sqrt(state["l2_zero"])
    res_single = single.melting_temperature(lc, t_max)
    res_rel = rel.melting_temperature(lc, t_max)
    unstable = res_single.unstable
    quantum = (l_zero >= lc) & ~unstable
    tm = np.where(pinned, res_single.melting_temperature, res_rel.melting_temperature)
    tm = np.where(quantum | unstable, np.nan, tm)
    lt = np.sqrt(state["l2_single"][:, 1:])
    lt = np.where(pinned[:, None] | (temps[None, :] == 0), lt, np.nan)
    lt = np.where(~pinned[:, None] & (temps[None, :] == 0), l_zero[:, None], lt)
    return MeltSweepResult(
        temperatures=temps,
        lindemann_ratio=lt,
        relative_lindemann_ratio=np.sqrt(state["l2_rel"][:, 1:]),
        lindemann_ratio_zero=l_zero,
        melting_temperature=tm,
        quantum_melted=quantum,
        unstable=unstable,
        criterion=np.where(pinned, SINGLE_SITE, RELATIVE),
        pinned=pinned,
        hbar_omega_M=np.array([m.potential.hbar_omega_M(m.mass) if m.potential is not None else np.nan for m in models]),
        nearest_neighbour_distance=np.array([m.crystal.nearest_neighbour_distance for m in models]),
        lindemann_critical=lc,
        mesh=conv,
        models=tuple(models),
    )
