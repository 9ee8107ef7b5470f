"""`moire melt` end to end: every shipped melt config round-trips; bad configs exit 2 cleanly."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moire_cli.cli import app
from moire_cli.config import MeltConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "moire" / "melt").glob("*.yaml"))
HOLE = ROOT / "configs" / "moire" / "melt" / "wse2_ws2_hole_crystal.yaml"
FAST = ["--set", "melt.mesh.start=6", "--set", "melt.mesh.max=12", "--set", "sweep.a_M=[8.0, 16.0]",
        "--set", "sweep.V=[0.5, 12.0]"]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_shipped_melt_configs_cover_holes_and_excitons():
    cfgs = [load_config(p, MeltConfig) for p in CONFIGS]
    assert {c.interaction.is_exciton for c in cfgs} == {False, True}
    for c in cfgs:  # each compares bare and screened interactions
        kinds = set(c.sweep_values()["interaction"])
        assert kinds in ({"coulomb", "keldysh"}, {"dipole-bare", "dipole-twosheet"})
    exc = next(c for c in cfgs if c.exciton is not None)
    assert exc.effective_mass == pytest.approx(exc.exciton.m_e + exc.exciton.m_h)
    assert exc.build_model().mass == pytest.approx(exc.effective_mass)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_round_trip_each_shipped_melt_config(config, tmp_path):
    out = tmp_path / "run"
    res = run("melt", config, "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    cfg = load_config(config, MeltConfig, FAST[1::2])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == cfg.model_dump(mode="json")
    assert summary["codata_year"] >= 2018
    assert summary["mesh"]["sizes_tried"][0] == 6 and summary["mesh"]["reached"] in (6, 12)
    rows = _rows(out / "melt.csv")
    n_points = len(cfg.sweep_points())
    assert len(rows) == n_points == 8 == summary["n_points"]
    temps = cfg.melt.temperature_values()
    lrows = _rows(out / "lindemann.csv")
    assert len(lrows) == n_points * len(temps)
    for i, row in enumerate(rows):
        curve = np.array([float(r["lindemann_ratio"]) for r in lrows if int(r["point"]) == i])
        lc = float(row["lindemann_critical"])
        assert float(row["lindemann_ratio_zero"]) == pytest.approx(curve[0], rel=1e-9)
        if row["quantum_melted"] == "True":
            assert row["melting_temperature_K"] == "" and curve[0] >= lc
        elif row["melting_temperature_K"]:
            tm = float(row["melting_temperature_K"])
            if tm < temps[-1]:  # L crosses L_c between the grid points around T_m
                k = np.searchsorted(temps, tm)
                assert curve[k - 1] < lc <= curve[k] * (1 + 1e-12)
        assert summary["points"][i]["criterion"] == "single-site"
    assert {r["interaction"] for r in rows} == set(cfg.sweep_values()["interaction"])
    for name in ("lindemann.png", "melting_temperature.png", "phase_diagram.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))


def test_unpinned_point_uses_relative_ratio_and_says_so(tmp_path):
    out = tmp_path / "run"
    res = run("melt", HOLE, "--out", out,
              "--set", "sweep={V: [0.0, 15.0]}", "--set", "melt.mesh.start=6", "--set", "melt.mesh.max=12",
              "--set", "interaction.kind=coulomb", "--set", "moire_potential.a_M=30.0")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert [p["criterion"] for p in summary["points"]] == ["relative", "single-site"]
    assert "relative nearest-neighbour ratio" in summary["criterion"]["messages"][0]
    lrows = [r for r in _rows(out / "lindemann.csv") if r["point"] == "0"]
    assert lrows[0]["lindemann_ratio"] != "" and all(r["lindemann_ratio"] == "" for r in lrows[1:])
    assert all(r["relative_lindemann_ratio"] != "" for r in lrows)


BAD = [
    ("sweep:\n  colour: [1, 2]\n", "sweep.colour: unknown sweep key"),
    ("interaction:\n  kind: dipole-bare\nexciton: {m_e: 0.5, m_h: 0.4}\n", "interaction.d (nm) is required"),
    ("exciton: {m_e: 0.5, m_h: 0.4}\n", "needs a dipole interaction"),
    ("interaction: {kind: dipole-twosheet, d: 0.6}\n", "add an exciton section"),
    ("mass: 0.5\nexciton: {m_e: 0.5, m_h: 0.4}\ninteraction: {kind: dipole-bare, d: 0.6}\n", "not mass"),
    ("melt:\n  temperatures: [0, -5]\n", "melt.temperatures"),
    ("melt:\n  lindemann_critical: 1.5\n", "melt.lindemann_critical"),
    ("melt:\n  mesh: {start: 24, max: 12}\n", "melt.mesh.max"),
    ("sweep:\n  V: [-1.0, 2.0]\n", "sweep point (V=-1.0): moire_potential.V"),
    ("sweep:\n  a_M: {start: 5, stop: 10}\n", "sweep.a_M"),
    ("melt:\n  colour: red\n", "melt.colour: unknown key"),
    ("moire_potential: [1, 2\n", "malformed YAML"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_configs_exit_2_with_one_line(tmp_path, extra, message):
    base = "moire_potential: {a_M: 8.0, V: 10.0}\n"
    path = tmp_path / "bad.yaml"
    path.write_text(extra if extra.startswith("moire_potential") else base + extra)
    res = run("melt", path, "--out", tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_missing_config_and_existing_output(tmp_path):
    res = run("melt", tmp_path / "nope.yaml")
    assert res.exit_code == 2 and "config file not found" in res.output
    out = tmp_path / "out"
    out.mkdir()
    res = run("melt", CONFIGS[0], "--out", out, *FAST)
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("moire_potential: {a_M: 8.0}\nsweep: {interaction: [coulomb, dipole-bare]}\n")
    proc = subprocess.run([sys.executable, "-m", "moire_cli", "melt", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "sweep point (interaction=dipole-bare)" in proc.stderr and "Traceback" not in proc.stderr
