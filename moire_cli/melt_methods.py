"""`moire melt` beyond the harmonic approximation: the self-consistent (SCHA) and Monte Carlo methods
run on the harmonic sweep's relaxed models, and their rows in melt.csv, lindemann.csv, mc.csv and
summary.json (`melt.method`; docs/melting-beyond-harmonic.md). No file I/O, no printing.

Melting temperatures per method (column ``melting_temperature_K``): harmonic and self-consistent,
L(T_m) = L_c on their phonons (single-site ratio pinned, relative unpinned); Monte Carlo, the same
crossing of the measured ratio, linearly interpolated between the Monte Carlo temperatures (NaN if
already above L_c at the lowest, +inf if still below at the highest). Beside it the self-consistent
rows give T* (``instability_temperature_K``, no self-consistent solution above it) and the Monte
Carlo rows the temperature of the largest Ψ₆ susceptibility (``psi6_susceptibility_peak_K``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from moire_cli.output import blank_nan

HARMONIC, SELF_CONSISTENT, MONTE_CARLO = "harmonic", "self-consistent", "monte-carlo"


@dataclass(frozen=True, eq=False)
class MethodResults:
    """The methods asked for besides (or instead of) the harmonic one.

    Attributes:
        methods: the requested methods (`MeltSection.methods()`).
        scha: `scha.SCHASweepResult` or None.
        monte_carlo: one `montecarlo.MonteCarloResult` per sweep point, or None.
        mc_melting_temperature: (P,) K from the Monte Carlo Lindemann ratio (NaN/inf, see module doc).
        mc_psi6_peak: (P,) K, temperature of the largest χ₆.
    """

    methods: list[str]
    scha: object = None
    monte_carlo: list | None = None
    mc_melting_temperature: np.ndarray | None = None
    mc_psi6_peak: np.ndarray | None = None


def run_methods(cfg, points, res, log: Callable[[str], None] | None = None) -> MethodResults:
    """Run the self-consistent and Monte Carlo methods of ``cfg.melt.method`` on ``res.models`` (the
    relaxed models of the harmonic sweep ``res``), the SCHA on the mesh the harmonic sweep reached."""
    methods = cfg.melt.methods()
    scha_res = mc = mc_tm = mc_peak = None
    lc = np.array([p.melt.lindemann_critical for _, p in points])
    if SELF_CONSISTENT in methods:
        from moire_cli.scha import scha_sweep

        s = cfg.melt.scha
        if log is not None:
            log(f"self-consistent phonons: {len(points)} point(s), mesh {res.mesh.mesh}×{res.mesh.mesh}")
        scha_res = scha_sweep(res.models, lc, res.temperatures, mesh=res.mesh.mesh, pair_shells=s.pair_shells,
                              relax=False, t_max=cfg.melt.t_max, tol=s.tolerance, max_iter=s.max_iter,
                              t_rtol=s.t_rtol)
    if MONTE_CARLO in methods:
        from moire_cli.sweeps import monte_carlo_sweep

        m = cfg.melt.monte_carlo
        temps = mc_temperatures(cfg, res.temperatures)
        if log is not None:
            n = res.models[0].crystal.n_sites * m.supercell[0] * m.supercell[1]
            where = cfg.melt.scheduler or "a local Dask cluster"
            log(f"Monte Carlo: {len(points)} point(s) × {len(temps)} temperatures, N = {n}, "
                f"{m.equilibration} + {m.sweeps} sweeps, on {where}")
        mc = monte_carlo_sweep(res.models, temps, seed=m.seed, scheduler=cfg.melt.scheduler, workers=cfg.melt.workers,
                               supercell=tuple(m.supercell), sweeps=m.sweeps, equilibration=m.equilibration,
                               blocks=m.blocks, psi6_every=m.psi6_every)
        mc_tm = np.array([mc_melting_temperature(r, lc[i]) for i, r in enumerate(mc)])
        mc_peak = np.array([float(r.temperatures[np.argmax(r.psi6_susceptibility)]) for r in mc])
    return MethodResults(methods, scha_res, mc, mc_tm, mc_peak)


def mc_temperatures(cfg, temperatures: np.ndarray) -> np.ndarray:
    """The Monte Carlo temperatures: ``melt.monte_carlo.temperatures``, else the melt grid above 0 K.

    Raises:
        ConfigError: no temperature above 0 K.
    """
    from moire_cli.config import ConfigError

    t = cfg.melt.monte_carlo.temperature_values()
    t = np.asarray(temperatures, dtype=float)[np.asarray(temperatures) > 0] if t is None else t
    if not t.size:
        raise ConfigError("melt.method monte-carlo needs temperatures above 0 K (melt.monte_carlo.temperatures)")
    return t


def mc_ratio(r) -> np.ndarray:
    """The Monte Carlo criterion ratio per temperature: single-site pinned, relative unpinned."""
    return r.lindemann_ratio if r.pinned else r.relative_lindemann_ratio


def mc_melting_temperature(r, lindemann_critical: float) -> float:
    """T where the Monte Carlo ratio first reaches L_c, linear between its temperatures (sorted)."""
    order = np.argsort(r.temperatures)
    t, lr = r.temperatures[order], mc_ratio(r)[order]
    above = np.flatnonzero(lr >= lindemann_critical)
    if not above.size:
        return float("inf")
    j = int(above[0])
    if j == 0:
        return float("nan")
    return float(t[j - 1] + (lindemann_critical - lr[j - 1]) * (t[j] - t[j - 1]) / (lr[j] - lr[j - 1]))


# ------------------------------------------------------------------ tables
def melt_rows(harmonic_cols: dict[str, list], extra: MethodResults, blank: bool = True) -> dict[str, list]:
    """melt.csv: the harmonic table's rows (``harmonic_cols``, from `melt_run.melt_table`) once per
    requested method, with the method's own results and a ``method`` column."""
    n_p = len(harmonic_cols["point"])
    fill = "" if blank else float("nan")

    def cell(v):
        return fill if isinstance(v, (float, np.floating)) and np.isnan(v) else v

    out: dict[str, list] = {k: [] for k in ["method", *harmonic_cols, "instability_temperature_K",
                                             "psi6_susceptibility_peak_K"]}
    for method in extra.methods:
        rows = {k: list(v) for k, v in harmonic_cols.items()}
        t_star, peak = [fill] * n_p, [fill] * n_p
        if method == SELF_CONSISTENT:
            s = extra.scha
            rows["lindemann_ratio_zero"] = [cell(v) for v in s.lindemann_ratio_zero]
            rows["melting_temperature_K"] = [cell(v) for v in s.melting_temperature]
            rows["quantum_melted"] = [bool(v) for v in s.quantum_melted]
            t_star = [cell(v) for v in s.instability_temperature]
        elif method == MONTE_CARLO:
            rows["lindemann_ratio_zero"] = [fill] * n_p  # classical: no zero-point motion
            rows["melting_temperature_K"] = [cell(v) for v in extra.mc_melting_temperature]
            rows["quantum_melted"] = [False] * n_p
            peak = [cell(v) for v in extra.mc_psi6_peak]
        out["method"] += [method] * n_p
        for k in harmonic_cols:
            out[k] += rows[k]
        out["instability_temperature_K"] += t_star
        out["psi6_susceptibility_peak_K"] += peak
    return out


def lindemann_rows(points, res, extra: MethodResults) -> dict[str, list]:
    """lindemann.csv: one row per (method, sweep point, temperature) with L, L_rel and, for Monte
    Carlo, their blocking errors; NaN as ''."""
    labels = [lab for lab, _ in points]
    cols: dict[str, list] = {"method": [], "point": [], **{f"sweep_{k}": [] for k in labels[0]},
                             "temperature_K": [], "lindemann_ratio": [], "relative_lindemann_ratio": [],
                             "lindemann_ratio_err": [], "relative_lindemann_ratio_err": []}

    def add(method, i, temps, l_single, l_rel, e_single=None, e_rel=None):
        n = len(temps)
        cols["method"] += [method] * n
        cols["point"] += [i] * n
        for k in labels[0]:
            cols[f"sweep_{k}"] += [labels[i][k]] * n
        cols["temperature_K"] += list(temps)
        cols["lindemann_ratio"] += blank_nan(l_single)
        cols["relative_lindemann_ratio"] += blank_nan(l_rel)
        cols["lindemann_ratio_err"] += blank_nan(e_single) if e_single is not None else [""] * n
        cols["relative_lindemann_ratio_err"] += blank_nan(e_rel) if e_rel is not None else [""] * n

    for method in extra.methods:
        for i in range(len(points)):
            if method == HARMONIC:
                add(method, i, res.temperatures, res.lindemann_ratio[i], res.relative_lindemann_ratio[i])
            elif method == SELF_CONSISTENT:
                s = extra.scha
                add(method, i, s.temperatures, s.lindemann_ratio[i], s.relative_lindemann_ratio[i])
            else:
                r = extra.monte_carlo[i]
                single = r.lindemann_ratio if r.pinned else np.full(len(r.temperatures), np.nan)
                add(method, i, r.temperatures, single, r.relative_lindemann_ratio,
                    r.lindemann_ratio_err if r.pinned else single, r.relative_lindemann_ratio_err)
    return cols


def mc_trace_rows(points, extra: MethodResults) -> dict[str, list]:
    """mc.csv: the Monte Carlo block means, one row per (sweep point, temperature, block)."""
    labels = [lab for lab, _ in points]
    cols: dict[str, list] = {"point": [], **{f"sweep_{k}": [] for k in labels[0]}, "temperature_K": [],
                             "block": [], "energy_meV": [], "mean_square_displacement_nm2": [], "psi6": []}
    for i, r in enumerate(extra.monte_carlo):
        nt, nb = r.traces["energy"].shape
        cols["point"] += [i] * (nt * nb)
        for k in labels[0]:
            cols[f"sweep_{k}"] += [labels[i][k]] * (nt * nb)
        cols["temperature_K"] += list(np.repeat(r.temperatures, nb))
        cols["block"] += list(np.tile(np.arange(nb), nt))
        cols["energy_meV"] += list(r.traces["energy"].ravel())
        cols["mean_square_displacement_nm2"] += list(r.traces["mean_square_displacement"].ravel())
        cols["psi6"] += list(r.traces["psi6"].ravel())
    return cols


def summary_section(cfg, extra: MethodResults) -> dict:
    """summary.json entries: "methods", the SCHA settings and mesh, and per point the Monte Carlo
    means with their errors, acceptance, equilibration check and the harmonic classical ⟨u²⟩."""
    out: dict = {"methods": extra.methods}
    if extra.scha is not None:
        s = extra.scha
        out["self_consistent"] = {**cfg.melt.scha.model_dump(), "mesh": s.mesh,
                                  "pair_average": "nearest pair_shells shells: 3×3 Gauss–Hermite average of the force "
                                                  "constants over the relative-displacement Gaussian; farther bonds "
                                                  "and the Ewald long-range part harmonic; moiré cosines exact"}
    if extra.monte_carlo is not None:
        m = cfg.melt.monte_carlo
        out["monte_carlo"] = {
            **m.model_dump(mode="json"), "scheduler": cfg.melt.scheduler or "local Dask cluster",
            "n_particles": extra.monte_carlo[0].n_particles,
            "points": [{
                "temperatures_K": r.temperatures, "seed": r.seed,
                "gamma": r.gamma, "energy_meV": r.energy, "energy_err_meV": r.energy_err,
                "mean_square_displacement_nm2": r.mean_square_displacement,
                "mean_square_displacement_err_nm2": r.mean_square_displacement_err,
                "harmonic_classical_msd_nm2": r.harmonic_msd,
                "lindemann_ratio": r.lindemann_ratio, "lindemann_ratio_err": r.lindemann_ratio_err,
                "relative_lindemann_ratio": r.relative_lindemann_ratio,
                "relative_lindemann_ratio_err": r.relative_lindemann_ratio_err,
                "psi6": r.psi6, "psi6_err": r.psi6_err, "psi6_susceptibility": r.psi6_susceptibility,
                "acceptance": r.acceptance, "equilibrated": r.equilibrated,
            } for r in extra.monte_carlo],
        }
    return out


def _span(values) -> str:
    v = np.asarray(values, dtype=float)
    fin = v[np.isfinite(v)]
    text = f"{fin.min():.4g}–{fin.max():.4g} K" if fin.size > 1 and fin.min() != fin.max() else (
        f"{fin[0]:.4g} K" if fin.size else "none")
    if np.isposinf(v).any():
        text += f" ({int(np.isposinf(v).sum())} above the range)"
    return text


def messages_for(extra: MethodResults) -> list[str]:
    """One line per method beyond harmonic: its melting temperatures over the sweep."""
    out = []
    if extra.scha is not None:
        s = extra.scha
        out.append(f"self-consistent: T_m {_span(s.melting_temperature)}, no self-consistent solution above "
                   f"T* {_span(s.instability_temperature)}; quantum melted at {int(s.quantum_melted.sum())} point(s)")
    if extra.monte_carlo is not None:
        out.append(f"monte-carlo (N = {extra.monte_carlo[0].n_particles}): T_m {_span(extra.mc_melting_temperature)}, "
                   f"χ₆ peak {_span(extra.mc_psi6_peak)}")
    return out


def warnings_for(extra: MethodResults) -> list[str]:
    """Lines for the user: Monte Carlo runs that failed the equilibration check."""
    out = []
    if extra.monte_carlo is not None:
        bad = sum(int((~r.equilibrated).sum()) for r in extra.monte_carlo)
        if bad:
            out.append(f"Monte Carlo: {bad} (point, temperature) run(s) not equilibrated (block halves differ by "
                       "more than 3σ); raise melt.monte_carlo.equilibration / sweeps")
    return out


# ------------------------------------------------------------------ figures
_STYLE = {HARMONIC: "-", SELF_CONSISTENT: "--", MONTE_CARLO: "o"}
_MAX_CURVES = 8


def method_figures(run):
    """(file name, Figure) when the methods are not harmonic alone: lindemann.png, one panel per method
    side by side (the criterion ratio L(T): single-site pinned, relative unpinned; up to 8 sweep points,
    one colour each in every panel; Monte Carlo with its blocking error bars), and
    melting_temperature.png (T_m of each method, T* and the χ₆ peak, over a_M or the sweep point)."""
    from moire_cli.plots import _pyplot

    plt = _pyplot()
    points, res, extra = run.points, run.sweep, run.methods
    name = res.models[0].crystal.name
    labels = [", ".join(f"{k}={v}" for k, v in lab.items()) or name for lab, _ in points]
    methods = list(extra.methods)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods) + 1.8, 4.0), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, method in zip(axes[0], methods, strict=True):
        for i in range(min(len(points), _MAX_CURVES)):
            c = colours[i % len(colours)]
            pinned = bool(res.pinned[i])
            label = labels[i] if method == methods[0] else None
            if method == HARMONIC:
                y = res.lindemann_ratio[i] if pinned else res.relative_lindemann_ratio[i]
                ax.plot(res.temperatures, y, _STYLE[method], color=c, label=label)
            elif method == SELF_CONSISTENT:
                sc = extra.scha
                y = sc.lindemann_ratio[i] if pinned else sc.relative_lindemann_ratio[i]
                ax.plot(sc.temperatures, y, _STYLE[method], color=c, label=label)
            else:
                r = extra.monte_carlo[i]
                err = r.lindemann_ratio_err if r.pinned else r.relative_lindemann_ratio_err
                ax.errorbar(r.temperatures, mc_ratio(r), yerr=err, fmt=_STYLE[method] + "-", color=c, ms=4,
                            lw=0.8, label=label)
        ax.axhline(float(res.lindemann_critical[0]), color="k", lw=0.9, ls="--")
        ax.set_title(method + (" (classical)" if method == MONTE_CARLO else ""), fontsize=9)
        ax.set_xlabel("T (K)")
        ax.set_ylim(bottom=0)
    axes[0, 0].set_ylabel("Lindemann ratio L (single-site pinned, relative unpinned)")
    fig.legend(loc="outside right center", fontsize="x-small", frameon=False)
    fig.suptitle(f"{name}: Lindemann ratio by method (dashed: L_c)", fontsize=10)
    yield "lindemann.png", fig

    a_m = [p.moire_potential.a_M for _, p in points]
    x = np.asarray(a_m, dtype=float) if len(set(a_m)) == len(a_m) else np.arange(len(points), dtype=float)
    order = np.argsort(x)
    fig, ax = plt.subplots(figsize=(7.0, 4.5), layout="constrained")
    series = [(HARMONIC, res.melting_temperature, "o-")]
    if extra.scha is not None:
        series += [(SELF_CONSISTENT, extra.scha.melting_temperature, "s--"),
                   ("self-consistent T* (no solution above)", extra.scha.instability_temperature, "v:")]
    if extra.monte_carlo is not None:
        series += [(MONTE_CARLO, extra.mc_melting_temperature, "D-"),
                   ("Monte Carlo χ₆ peak", extra.mc_psi6_peak, "x")]
    for label, y, fmt in series:
        if label == HARMONIC and HARMONIC not in extra.methods:
            continue
        y = np.where(np.isfinite(y), y, np.nan)
        ax.plot(x[order], y[order], fmt, label=label)
    ax.set_xlabel("a_M (nm)" if len(set(a_m)) == len(a_m) else "sweep point")
    ax.set_ylabel("T_m (K)")
    ax.set_title(f"{name}: melting temperature by method")
    ax.legend(fontsize="small")
    yield "melting_temperature.png", fig
