"""What the figures show: facets and legends with units (melt), breaks and DOS axis (bands), and
which phonons runs write the chiral plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moire_cli.cli import app
from moire_cli.config import MeltConfig, load_config
from moire_cli.melt_output import axis_label, melt_figures, value_label
from moire_cli.melt_run import run_melt

ROOT = Path(__file__).resolve().parents[2]
HOLE = ROOT / "configs" / "moire" / "melt" / "wse2_ws2_hole_crystal.yaml"
TINY_MELT = ["melt.mesh.start=6", "melt.mesh.max=6", "sweep.a_M=[8.0, 12.0, 16.0]", "sweep.V=[3.0, 15.0]",
             "melt.temperatures={start: 0.0, stop: 100.0, num: 5}"]
TINY = ["--set", "mesh.size=[4,4]", "--set", "path.n_per_segment=4"]


@pytest.fixture(scope="module")
def melt_figs():
    import matplotlib.pyplot as plt

    run = run_melt(load_config(HOLE, MeltConfig, TINY_MELT))
    figs = dict(melt_figures(run))
    yield run, figs
    for fig in figs.values():
        plt.close(fig)


def test_value_and_axis_labels_carry_units():
    assert value_label("V", 15.0) == "V = 15 meV"
    assert value_label("a_M", 4.0) == "a_M = 4 nm"
    assert value_label("epsilon", 5.1) == "ε = 5.1"
    assert value_label("interaction", "keldysh") == "keldysh"
    assert axis_label("V") == "V (meV)" and axis_label("T") == "T (K)"


def test_lindemann_png_facets_by_the_other_swept_parameters(melt_figs):
    run, figs = melt_figs
    fig = figs["lindemann.png"]
    # 2 interactions × 3 a_M × 2 V: a_M (most values) colours, one panel per (interaction, V).
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_title() for ax in panels) == sorted(
        f"{kind}, V = {v:g} meV" for kind in ("coulomb", "keldysh") for v in (3.0, 15.0)
    )
    for ax in panels:
        assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]) == 3  # one curve per a_M
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["a_M = 8 nm", "a_M = 12 nm", "a_M = 16 nm"]
    # The curves in a panel are the points of that panel (not coloured by point index).
    ax = next(a for a in panels if a.get_title() == "keldysh, V = 15 meV")
    sel = [i for i, (lab, _) in enumerate(run.points) if lab["interaction"] == "keldysh" and lab["V"] == 15.0]
    drawn = np.array([ln.get_ydata() for ln in ax.get_lines() if ln.get_linestyle() == "-"])
    np.testing.assert_allclose(drawn, run.sweep.lindemann_ratio[sel])


def test_melting_temperature_png_styles_and_units(melt_figs):
    _, figs = melt_figs
    ax = figs["melting_temperature.png"].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"{k}, V = {v:g} meV" for k in ("coulomb", "keldysh") for v in (3.0, 15.0)]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    a, b = lines["coulomb, V = 15 meV"], lines["keldysh, V = 15 meV"]
    assert a.get_color() == b.get_color()  # same V: same colour
    assert a.get_linestyle() != b.get_linestyle()  # different interaction: line style …
    assert b.get_markerfacecolor() == "none"  # … and open markers, so a filled one under it shows
    assert ax.get_xlabel() == "a_M (nm)"


def _phonons(tmp_path, config, *extra):
    out = tmp_path / config
    result = CliRunner().invoke(app, ["phonons", str(ROOT / "configs" / "moire" / f"{config}.yaml"), "--out",
                                      str(out), *TINY, *extra])
    assert result.exit_code == 0, result.output
    return out


def test_non_chiral_run_writes_no_chiral_plots(tmp_path):
    out = _phonons(tmp_path, "wse2_ws2_triangular")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chirality"]["chiral"] is False and summary["chirality"]["max_abs_l_z_hbar"] == 0.0
    assert (out / "bands.png").exists()
    assert not (out / "bands_l_z.png").exists() and not (out / "berry_curvature.png").exists()


def test_inversion_breaking_run_writes_chiral_plots(tmp_path):
    out = _phonons(tmp_path, "wse2_ws2_honeycomb_gwc_inversion_breaking")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chirality"]["chiral"] is True and summary["chirality"]["hbar_omega_c_meV"] == 0.0
    assert (out / "bands_l_z.png").stat().st_size > 1000 and (out / "berry_curvature.png").stat().st_size > 1000


def test_bands_plot_break_and_dos_axis():
    import matplotlib.pyplot as plt

    from moire_cli import plots
    from moire_cli.band_path import band_path
    from moire_cli.crystals import build_crystal

    path = band_path(build_crystal("triangular", 8.0), ["G", "M", "|", "K", "G"], 4)
    freqs = np.column_stack([path.distance, 2 * path.distance])
    energies = np.linspace(0, 1, 11)
    fig = plots.plot_bands_dos(path.distance, freqs, path.tick_labels(), energies, energies, "meV",
                               pieces=path.pieces)
    ax, axd = fig.axes
    band_lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    assert len(band_lines) == 2 * 2  # two pieces × two modes: nothing drawn across the break
    assert all(len(ln.get_xdata()) == 4 for ln in band_lines)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Γ", "M|K", "Γ"]
    assert axd.get_xlabel() == "DOS (1/meV per cell)"
    fig.canvas.draw()
    assert 0.0 not in axd.get_xticks()  # no "0.0" against the last band tick
    plt.close(fig)
