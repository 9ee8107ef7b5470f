"""`moire melt` as one core call: config in, :class:`MeltRun` out (no file I/O, no printing).

Steps: expand the sweep → one lattice model per point → :func:`moire_cli.melt_sweep.melt_sweep`
(L(T), T_m, quantum melting, mesh refinement) → messages and warnings → the melt table (melt.csv
columns), the summary.json digest and the phase-diagram panels. Writing is
:func:`moire_cli.melt_output.write_melt`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from moire_cli.config import MeltConfig
from moire_cli.melt_methods import messages_for, run_methods, summary_section, warnings_for
from moire_cli.melt_sweep import MeltSweepResult, melt_sweep
from moire_cli.output import blank_nan, provenance

#: Said whenever a point is unpinned (V = 0 or every trap_scale 0): which Lindemann ratio T_m is solved on.
RELATIVE_MESSAGE = (
    "unpinned crystal (V = 0 or every trap_scale 0): the single-site ⟨u²⟩ diverges logarithmically at T > 0, so T_m uses the "
    "relative nearest-neighbour ratio L_rel = √(⟨|u_i − u_j|²⟩/2)/a (γ = ⟨|u_i − u_j|²⟩/a² = 2L_rel²); "
    "L(0) and quantum melting use the single-site ratio"
)

#: Phase categories of `moire melt` (index = phase code in :func:`phase_panels`).
PHASES = ("crystal", "thermally melted", "quantum melted", "unstable")


@dataclass(frozen=True, eq=False)
class MeltRun:
    """Everything `moire melt` computed for one config.

    Attributes:
        config: the validated config.
        points: (swept values {key: value}, config of that point) per sweep point, P in all.
        sweep: the Lindemann analysis of all P points.
        messages: lines for the user about the method (which ratio is used).
        warnings: lines for the user about the result (harmonic expansion, mesh, instability).
        summary: the JSON-ready digest written as summary.json.
    """

    config: MeltConfig
    points: list[tuple[dict, MeltConfig]]
    sweep: MeltSweepResult
    messages: list[str]
    warnings: list[str]
    summary: dict
    methods: object = None  # melt_methods.MethodResults: the self-consistent / Monte Carlo results


def run_melt(cfg: MeltConfig, log: Callable[[str], None] | None = None) -> MeltRun:
    """Quantum and thermal Lindemann melting over the config's sweep (spec §7).

    Args:
        cfg: a validated :class:`MeltConfig`.
        log: optional progress callback (one line per call); the core prints nothing itself.
    """
    points = cfg.sweep_points()
    models = [p.build_model() for _, p in points]
    harmonic = [w for p, m in zip(points, models, strict=True) if m.potential is not None
                and (w := m.potential.harmonic_warning(p[1].effective_mass))]
    warnings = []
    if harmonic:
        more = f" (and {len(harmonic) - 1} more sweep point(s))" if len(harmonic) > 1 else ""
        warnings.append(harmonic[0] + more)
    temps = cfg.melt.temperature_values()
    meshes = cfg.melt.mesh.sizes()
    if log is not None:
        log(f"{models[0].crystal.name}: {len(points)} sweep point(s) × {len(temps)} temperatures, meshes {meshes}")
    res = melt_sweep(
        models,
        [p.melt.lindemann_critical for _, p in points],
        temps,
        meshes,
        cfg.melt.mesh.tolerance,
        cfg.melt.relax,
        cfg.melt.t_max,
    )
    messages = []
    if not res.pinned.all():
        messages.append(RELATIVE_MESSAGE)
    if len(meshes) > 1 and not res.mesh.converged:
        warnings.append(f"⟨u²⟩ not converged to {cfg.melt.mesh.tolerance:g} on the {res.mesh.mesh}×{res.mesh.mesh} "
                        f"mesh (last change {res.mesh.change:.2g}); raise melt.mesh.max")
    if res.unstable.any():
        warnings.append(f"{int(res.unstable.sum())} sweep point(s) dynamically unstable (imaginary phonons): no L, T_m")
    extra = run_methods(cfg, points, res, log)  # melt.method beyond harmonic (moire_cli/melt_methods.py)
    messages += messages_for(extra)
    warnings += warnings_for(extra)
    summary = melt_summary(cfg, points, res, messages, warnings)
    summary.update(summary_section(cfg, extra))
    return MeltRun(cfg, points, res, messages, warnings, summary, extra)


def point_inputs(cfg: MeltConfig) -> dict:
    """The physical inputs of one sweep point (melt.csv columns; NaN where not applicable)."""
    pot = cfg.moire_potential
    inter = cfg.interaction
    r01, r02 = inter.screening_lengths() if inter.is_exciton else (np.nan, np.nan)
    return {
        "interaction": inter.kind,
        "a_M_nm": pot.a_M,
        "V_meV": pot.V if pot.hbar_omega_M is None else np.nan,
        "psi_deg": pot.psi_deg,
        "kappa": cfg.dielectric.kappa,
        "r0_nm": inter.r0 if inter.kind == "keldysh" else np.nan,
        "d_g_nm": inter.d_g if inter.kind == "dual-gate" else np.nan,
        "d_nm": inter.d if inter.is_exciton else np.nan,
        "r0_1_nm": r01,
        "r0_2_nm": r02,
        "mass_m0": cfg.effective_mass,
        "lindemann_critical": cfg.melt.lindemann_critical,
    }


def melt_table(points, res: MeltSweepResult, blank: bool = True) -> dict[str, list]:
    """melt.csv columns, one row per sweep point; NaN becomes '' (empty cell) when ``blank``, else
    stays (null in JSON)."""
    rows = [point_inputs(p) for _, p in points]
    _blank = blank_nan if blank else list
    cols: dict[str, list] = {"point": list(range(len(points)))}
    for key in points[0][0]:
        cols[f"sweep_{key}"] = [lab[key] for lab, _ in points]
    for key in rows[0]:
        cols[key] = _blank([r[key] for r in rows])
    cols["hbar_omega_M_meV"] = _blank(res.hbar_omega_M)
    cols["nearest_neighbour_distance_nm"] = list(res.nearest_neighbour_distance)
    cols["lindemann_ratio_zero"] = _blank(res.lindemann_ratio_zero)
    cols["melting_temperature_K"] = _blank(res.melting_temperature)
    cols["above_t_max"] = [bool(np.isposinf(v)) for v in res.melting_temperature]  # T_m empty/null then
    cols["quantum_melted"] = [bool(v) for v in res.quantum_melted]
    cols["unstable"] = [bool(v) for v in res.unstable]
    cols["criterion"] = list(res.criterion)
    return cols


def lindemann_table(points, res: MeltSweepResult) -> dict[str, list]:
    """lindemann.csv columns, one row per (sweep point, temperature); NaN as ''."""
    n_p, n_t = res.lindemann_ratio.shape
    cols: dict[str, list] = {"point": np.repeat(np.arange(n_p), n_t)}
    for key in points[0][0]:
        cols[f"sweep_{key}"] = np.repeat(np.array([lab[key] for lab, _ in points], dtype=object), n_t)
    cols["temperature_K"] = np.tile(res.temperatures, n_p)
    cols["lindemann_ratio"] = blank_nan(res.lindemann_ratio.ravel())
    cols["relative_lindemann_ratio"] = blank_nan(res.relative_lindemann_ratio.ravel())
    return cols


def melt_summary(cfg: MeltConfig, points, res: MeltSweepResult, messages, warnings) -> dict:
    """The summary.json digest: config, provenance, sweep, mesh convergence, criteria, one record per point."""
    prov = provenance()
    rows = melt_table(points, res, blank=False)
    return {
        "command": "melt",
        "config": cfg.model_dump(mode="json"),
        "provenance": prov,
        "codata_year": prov["constants"]["codata_year"],
        "crystal": res.models[0].crystal.name,
        "sweep": cfg.sweep_values(),
        "n_points": len(points),
        "temperatures_K": res.temperatures,
        "mesh": {
            "sizes_tried": [n for n, _ in res.mesh.history],
            "reached": res.mesh.mesh,
            "last_change": res.mesh.change,
            "tolerance": cfg.melt.mesh.tolerance,
            "converged": res.mesh.converged,
            "history": [{"mesh": n, "change": c} for n, c in res.mesh.history],
        },
        "criterion": {"pinned": "single-site", "unpinned": "relative", "messages": messages},
        "points": [{k: v[i] for k, v in rows.items()} for i in range(len(points))],
        "warnings": warnings,
    }


def numeric_sweep_keys(cfg: MeltConfig) -> list[str]:
    """Swept keys whose values are all numbers (the candidate plot axes), in sweep order."""
    values = cfg.sweep_values()
    return [k for k, v in values.items() if all(isinstance(x, (int, float)) for x in v)]


def phase_panels(run: MeltRun) -> list[tuple]:
    """Phase-diagram panels, one per interaction model: over the first two swept numeric parameters
    at the phase temperature, or over (parameter, T) with one, or (sweep point, T) with none.

    Returns:
        list of (title, x (nx,), y (ny,), phase (ny, nx) index into :data:`PHASES` (3 = not computed),
        x key or "sweep point", y key or "T").
    """
    cfg, points, res = run.config, run.points, run.sweep
    numeric = numeric_sweep_keys(cfg)
    temps = res.temperatures
    t_phase = cfg.output.phase_temperature
    if t_phase is None:
        t_phase = float(temps[len(temps) // 2])
    panels = []
    for kind in dict.fromkeys(p.interaction.kind for _, p in points):
        sel = [i for i, (_, p) in enumerate(points) if p.interaction.kind == kind]
        if len(numeric) >= 2:
            kx, ky = numeric[:2]
            fixed = {k: points[sel[0]][0][k] for k in points[0][0] if k not in (kx, ky, "interaction")}
            sel = [i for i in sel if all(points[i][0][k] == v for k, v in fixed.items())]
            xs = sorted({points[i][0][kx] for i in sel})
            ys = sorted({points[i][0][ky] for i in sel})
            phase = np.full((len(ys), len(xs)), 3.0)
            for i in sel:
                phase[ys.index(points[i][0][ky]), xs.index(points[i][0][kx])] = phase_of(res, i, t_phase)
            note = "".join(f", {k}={v}" for k, v in fixed.items())
            panels.append((f"{kind}, T = {t_phase:g} K{note}", xs, ys, phase, kx, ky))
        else:
            if numeric:
                key = numeric[0]
                xs_raw = [points[i][0][key] for i in sel]
            else:
                xs_raw, key = list(range(len(sel))), "sweep point"
            order = np.argsort(xs_raw)
            phase = np.array([[phase_of(res, sel[j], t) for j in order] for t in temps])
            panels.append((kind, np.asarray(xs_raw, float)[order], temps, phase, key, "T"))
    return panels


def phase_of(res: MeltSweepResult, i: int, t: float) -> int:
    """Index into :data:`PHASES` for sweep point i at temperature t."""
    if res.unstable[i]:
        return 3
    if res.quantum_melted[i]:
        return 2
    return 0 if t < res.melting_temperature[i] else 1
