"""Files of the chiral-phonon generation steps in the `moire phonons` folder (issue 13 §4).

optics.csv (Γ modes: frequency, oscillator strengths for σ+, σ−, x, y, circular polarisation, l_z,
dipole), absorption.csv + absorption.png; decay.csv (per Γ mode and temperature: total rate and its
split by the products' valley and l_z sign) + decay.png (zone map of the brightest σ+ line's decay);
thermal_hall.csv (``temperature_K``, ``kappa_xy_W_per_K``, ``kappa_xy_kB2T_per_hbar``) + thermal_hall.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moire_cli import output
from moire_cli.anharmonic import VALLEYS
from moire_cli.chiral_generation import ChiralGeneration
from moire_cli.optics import POLARIZATIONS
from moire_cli.plots import _pyplot, brillouin_zone


def write_chiral_generation(folder: Path, gen: ChiralGeneration, plot: bool = True, title: str = "") -> None:
    """Write the tables (and figures when ``plot``) of the steps that ran into ``folder``."""
    folder = Path(folder)
    if gen.absorption is not None:
        o = gen.optics
        cols = {"mode": np.arange(len(o.frequencies)), "frequency_meV": o.frequencies}
        cols.update({f"f_{p.replace('+', '_plus').replace('-', '_minus')}": o.oscillator_strengths[p] for p in POLARIZATIONS})
        cols["circular_polarization"] = o.circular_polarization
        cols["l_z_hbar"] = o.l_z
        cols["dipole_abs_e_nm"] = np.linalg.norm(o.dipoles, axis=1)
        output.write_csv(folder / "optics.csv", cols)
        spec = {"energy_meV": gen.energies_meV}
        spec.update({f"absorption_{k.replace('+', '_plus').replace('-', '_minus')}_per_meV": v for k, v in gen.absorption.items()
                     if k != "circular_dichroism"})
        spec["circular_dichroism"] = gen.absorption["circular_dichroism"]
        output.write_csv(folder / "absorption.csv", spec)
        if plot:
            output.save_figure(_absorption_figure(gen, title), folder / "absorption.png")
    if gen.decay is not None:
        d = gen.decay
        n_t, n_p = d.rates.shape
        cols = {
            "temperature_K": np.repeat(d.temperatures_K, n_p),
            "mode": np.tile(np.arange(n_p), n_t),
            "frequency_meV": np.tile(d.frequencies, n_t),
            "rate_meV": d.rates.ravel(),
        }
        tot = np.where(d.rates > 0, 2 * d.rates, 1.0)[..., None]
        for i, v in enumerate(VALLEYS):
            name = v.replace("'", "_prime")
            cols[f"share_{name}"] = (d.product_rates[:, :, i].sum(-1) / tot[..., 0]).ravel()
            cols[f"share_{name}_l_z_pos"] = (d.product_rates[:, :, i, 0] / tot[..., 0]).ravel()
            cols[f"share_{name}_l_z_neg"] = (d.product_rates[:, :, i, 1] / tot[..., 0]).ravel()
        output.write_csv(folder / "decay.csv", cols)
        if plot:
            output.save_figure(_decay_figure(gen, title), folder / "decay.png")
    if gen.thermal_hall is not None:
        t = gen.thermal_hall
        output.write_csv(
            folder / "thermal_hall.csv",
            {
                "temperature_K": t.temperatures_K,
                "kappa_xy_W_per_K": t.kappa_xy_W_per_K,
                "kappa_xy_kB2T_per_hbar": t.kappa_xy_kB2T_per_hbar,
            },
        )
        if plot:
            output.save_figure(_thermal_hall_figure(gen, title), folder / "thermal_hall.png")


def _absorption_figure(gen: ChiralGeneration, title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    e = gen.energies_meV
    for key, style in (("sigma+", "C3"), ("sigma-", "C0"), ("x", "0.4")):
        ls = "--" if key == "x" else "-"
        ax.plot(e, gen.absorption[key], color=style, ls=ls, lw=1.3, label={"sigma+": "σ+", "sigma-": "σ−"}.get(key, key))
    ax.set_xlabel("photon energy ħω (meV)")
    ax.set_ylabel("absorption  Re σ / (π n q²/2m)  (1/meV)")
    s = gen.optics.f_sums()
    ax.set_title(f"{title}\nf-sum: x {s['x']:.10f}, (σ+ + σ−)/2 {s['circular_mean']:.10f}", fontsize=9)
    ax.legend(frameon=False)
    ax.set_ylim(bottom=0)
    return fig


def _decay_figure(gen: ChiralGeneration, title: str):
    """Zone map of the decay of the σ+ Γ line with the largest f_σ+ · Γ (the brightest one if none decays),
    at the first temperature, tiled into the first zone."""
    from matplotlib.patches import Polygon

    plt = _pyplot()
    d, o = gen.decay, gen.optics
    f = o.oscillator_strengths["sigma+"]
    p = int(np.argmax(f * d.rates[0])) if np.any(d.rates[0] * f > 0) else int(np.argmax(f))
    values = d.zone_map[0, p] * d.mesh_points  # rate density (meV per unit zone fraction)
    cr = gen.reciprocal
    n1, n2 = gen.decay_mesh
    f1, f2 = np.meshgrid(np.arange(n1) / n1, np.arange(n2) / n2, indexing="ij")
    frac = np.stack([f1.ravel(), f2.ravel()], axis=1)
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    zone = brillouin_zone(cr)
    patch = Polygon(zone, closed=True, fill=False, edgecolor="k", lw=1.0)
    ax.add_patch(patch)
    vmax = float(values.max()) or 1.0
    for s1 in (-1, 0):
        for s2 in (-1, 0):
            q = (frac + [s1, s2]) @ cr
            sc = ax.scatter(q[:, 0], q[:, 1], c=values, s=2.2e4 / (n1 * n2), cmap="magma", vmin=0, vmax=vmax, marker="h", linewidths=0)
            sc.set_clip_path(patch)
    ext = 1.05 * np.max(np.abs(zone), axis=0)
    ax.set_xlim(-ext[0], ext[0])
    ax.set_ylim(-ext[1], ext[1])
    ax.set_aspect("equal")
    ax.set_xlabel("q_x (1/nm)")
    ax.set_ylabel("q_y (1/nm)")
    fig.colorbar(sc, ax=ax, label="dΓ/d(zone fraction) (meV)")
    ax.set_title(
        f"{title}\nσ+ line {d.frequencies[p]:.2f} meV → (q, −q): Γ = {d.rates[0, p]:.3g} meV at {d.temperatures_K[0]:g} K",
        fontsize=9,
    )
    return fig


def _thermal_hall_figure(gen: ChiralGeneration, title: str):
    plt = _pyplot()
    t = gen.thermal_hall
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.plot(t.temperatures_K, t.kappa_xy_W_per_K, color="C3", lw=1.5)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel("κ_xy per layer (W/K)")
    ax2 = ax.twinx()
    ax2.plot(t.temperatures_K, t.kappa_xy_kB2T_per_hbar, color="C0", lw=1.0, ls="--")
    ax2.set_ylabel("κ_xy / (k_B²T/ħ)  (dashed)")
    ax.set_title(f"{title}\nħω_c = {t.omega_c:.3g} meV, mesh {t.mesh[0]}×{t.mesh[1]}", fontsize=9)
    return fig
