"""The files of `moire melt`: one writer for a :class:`moire_cli.melt_run.MeltRun`.

melt.csv (one row per sweep point), lindemann.csv (one row per point and temperature),
summary.json and, with ``output.plot``, lindemann.png, melting_temperature.png, phase_diagram.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moire_cli import output, plots
from moire_cli.melt_run import PHASES, MeltRun, lindemann_table, melt_table, numeric_sweep_keys, phase_panels

#: Axis labels (with units) of the swept parameters.
AXIS_LABELS = {"a_M": "a_M (nm)", "V": "V (meV)", "psi_deg": "ψ (deg)", "epsilon": "ε", "kappa": "κ",
               "r0": "r₀ (nm)", "r0_1": "r₀₁ (nm)", "r0_2": "r₀₂ (nm)", "d": "d (nm)", "d_g": "d_g (nm)",
               "lindemann_critical": "L_c", "mass": "m (m₀)", "hbar_omega_M": "ħω_M (meV)", "T": "T (K)"}


def axis_label(key: str) -> str:
    """Axis label with unit for a swept key (the key itself when unknown)."""
    return AXIS_LABELS.get(key, key)


def write_melt(folder: Path, run: MeltRun) -> None:
    """Write every output file of ``run`` into ``folder`` (an existing, empty folder, e.g. the
    temporary one of :func:`moire_cli.output.atomic_output_dir`)."""
    folder = Path(folder)
    output.write_csv(folder / "melt.csv", melt_table(run.points, run.sweep))
    output.write_csv(folder / "lindemann.csv", lindemann_table(run.points, run.sweep))
    output.write_json(folder / "summary.json", run.summary)
    if run.config.output.plot:
        for name, fig in melt_figures(run):
            output.save_figure(fig, folder / name)


def melt_figures(run: MeltRun):
    """(file name, Figure) for lindemann.png, melting_temperature.png and phase_diagram.png."""
    cfg, points, res = run.config, run.points, run.sweep
    labels = [", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in lab.items()) or "config"
              for lab, _ in points]
    crit = np.where(res.pinned[:, None], res.lindemann_ratio, res.relative_lindemann_ratio)
    name = res.models[0].crystal.name
    yield "lindemann.png", plots.plot_lindemann(res.temperatures, crit, res.lindemann_critical, labels,
                                                 title=f"{name}: Lindemann ratio (single-site pinned, relative free)")
    values = cfg.sweep_values()
    numeric = numeric_sweep_keys(cfg)
    xkey = "a_M" if "a_M" in numeric else (numeric[0] if numeric else None)
    x = [p.moire_potential.a_M for _, p in points] if xkey in (None, "a_M") else [lab[xkey] for lab, _ in points]
    others = [k for k in values if k != xkey and k != "interaction"]
    groups = [p.interaction.kind + "".join(f", {k}={lab[k]}" for k in others) for lab, p in points]
    yield "melting_temperature.png", plots.plot_melting_temperature(
        x, res.melting_temperature, res.quantum_melted, groups, axis_label(xkey or "a_M"),
        title=f"{name}: melting temperature")
    panels = [(t, x, y, ph, axis_label(kx), axis_label(ky)) for t, x, y, ph, kx, ky in phase_panels(run)]
    yield "phase_diagram.png", plots.plot_phase_diagram(panels, PHASES, title=f"{name}: phase diagram")
