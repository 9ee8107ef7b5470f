"""The files of `moire melt`: one writer for a :class:`moire_cli.melt_run.MeltRun`.

melt.csv (one row per sweep point), lindemann.csv (one row per point and temperature),
summary.json and, with ``output.plot``, lindemann.png, melting_temperature.png (of the methods that
ran, side by side when not harmonic alone), phase_diagram.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moire_cli import melt_methods, output, plots
from moire_cli.melt_run import PHASES, MeltRun, melt_table, numeric_sweep_keys, phase_panels

#: Display name and unit of each swept parameter (config key → (symbol, unit); "" = dimensionless).
QUANTITIES = {"a_M": ("a_M", "nm"), "V": ("V", "meV"), "psi_deg": ("ψ", "deg"), "epsilon": ("ε", ""),
              "kappa": ("κ", ""), "r0": ("r₀", "nm"), "r0_1": ("r₀₁", "nm"), "r0_2": ("r₀₂", "nm"),
              "d": ("d", "nm"), "d_g": ("d_g", "nm"), "lindemann_critical": ("L_c", ""), "mass": ("m", "m₀"),
              "hbar_omega_M": ("ħω_M", "meV"), "T": ("T", "K")}


def axis_label(key: str) -> str:
    """Axis label with unit for a swept key, e.g. "V (meV)" (the key itself when unknown)."""
    name, unit = QUANTITIES.get(key, (key, ""))
    return f"{name} ({unit})" if unit else name


def value_label(key: str, value) -> str:
    """One swept value as a person reads it: "V = 15 meV", "ε = 5.1"; the interaction model as its name."""
    if key == "interaction":
        return str(value)
    name, unit = QUANTITIES.get(key, (key, ""))
    text = f"{value:g}" if isinstance(value, (int, float)) else str(value)
    return f"{name} = {text} {unit}".rstrip()


def _index(values: list) -> tuple[list[int], list]:
    """(index of each value among the distinct values in first-seen order, the distinct values)."""
    distinct = list(dict.fromkeys(values))
    return [distinct.index(v) for v in values], distinct


def write_melt(folder: Path, run: MeltRun) -> None:
    """Write every output file of ``run`` into ``folder`` (an existing, empty folder, e.g. the
    temporary one of :func:`moire_cli.output.atomic_output_dir`)."""
    folder = Path(folder)
    extra = run.methods
    output.write_csv(folder / "melt.csv", melt_methods.melt_rows(melt_table(run.points, run.sweep), extra))
    output.write_csv(folder / "lindemann.csv", melt_methods.lindemann_rows(run.points, run.sweep, extra))
    if extra.monte_carlo is not None:
        output.write_csv(folder / "mc.csv", melt_methods.mc_trace_rows(run.points, extra))
    output.write_json(folder / "summary.json", run.summary)
    if run.config.output.plot:
        harmonic_only = list(extra.methods) == [melt_methods.HARMONIC]
        figures = list(melt_figures(run, harmonic_plots=harmonic_only))
        if not harmonic_only:  # lindemann.png and melting_temperature.png show the methods that ran
            figures = list(melt_methods.method_figures(run)) + figures
        for name, fig in figures:
            output.save_figure(fig, folder / name)


def melt_figures(run: MeltRun, harmonic_plots: bool = True):
    """(file name, Figure) for lindemann.png, melting_temperature.png (harmonic; skipped with
    ``harmonic_plots=False``, when `melt_methods.method_figures` draws them) and phase_diagram.png.

    lindemann.png: one panel per combination of the swept parameters other than the one with the
    most values, which colours the curves. melting_temperature.png: T_m over a_M (or the first
    numeric swept key), one series per combination of the others, colour = the first numeric one
    among them, line style = the interaction model (else the next key).
    """
    cfg, points, res = run.config, run.points, run.sweep
    name = res.models[0].crystal.name
    if not harmonic_plots:
        yield "phase_diagram.png", _phase_figure(run, name)
        return
    sweeps = [lab for lab, _ in points]
    keys = list(sweeps[0])
    crit = np.where(res.pinned[:, None], res.lindemann_ratio, res.relative_lindemann_ratio)
    ckey = max(keys, key=lambda k: len(set(lab[k] for lab in sweeps))) if keys else None
    facet_keys = [k for k in keys if k != ckey]
    panel_of, panels = _index([tuple(lab[k] for k in facet_keys) for lab in sweeps])
    panel_titles = [", ".join(value_label(k, v) for k, v in zip(facet_keys, p, strict=True)) or name for p in panels]
    colour_of, colours = _index([lab[ckey] for lab in sweeps] if ckey else [None] * len(sweeps))
    colour_labels = [value_label(ckey, v) if ckey else "config" for v in colours]
    yield "lindemann.png", plots.plot_lindemann(
        res.temperatures, crit, res.lindemann_critical, panel_of, panel_titles, colour_of, colour_labels,
        title=f"{name}: Lindemann ratio (single-site pinned, relative unpinned)")
    numeric = numeric_sweep_keys(cfg)
    xkey = "a_M" if "a_M" in numeric else (numeric[0] if numeric else None)
    x = [p.moire_potential.a_M for _, p in points] if xkey in (None, "a_M") else [lab[xkey] for lab in sweeps]
    others = [k for k in keys if k != xkey]
    if "interaction" not in others:  # the interaction model is always named in the legend
        others = ["interaction", *others]
    series_of, series = _index([tuple(lab.get(k, p.interaction.kind) for k in others) for lab, p in points])
    labels = [", ".join(value_label(k, v) for k, v in zip(others, s, strict=True)) for s in series]
    colour_key = next((k for k in others if k in numeric), None)
    style_key = "interaction" if colour_key != "interaction" else next((k for k in others if k != colour_key), None)

    def key_index(key):
        if key is None:
            return list(range(len(series)))
        col = others.index(key)
        return _index([s[col] for s in series])[0]

    yield "melting_temperature.png", plots.plot_melting_temperature(
        x, res.melting_temperature, res.quantum_melted, series_of, labels, key_index(colour_key),
        key_index(style_key) if style_key else [0] * len(series), axis_label(xkey or "a_M"),
        title=f"{name}: melting temperature")
    yield "phase_diagram.png", _phase_figure(run, name)


def _phase_figure(run: MeltRun, name: str):
    panels = [(t, x, y, ph, axis_label(kx), axis_label(ky)) for t, x, y, ph, kx, ky in phase_panels(run)]
    return plots.plot_phase_diagram(panels, PHASES, title=f"{name}: phase diagram")
