"""`moire melt` with melt.method beyond harmonic: rows per method, mc.csv, summary, figures, errors."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moire_cli.cli import app

ROOT = Path(__file__).resolve().parents[2]
HOLE = ROOT / "configs" / "moire" / "melt" / "wse2_ws2_hole_crystal.yaml"
TINY = ["--set", "sweep={a_M: [8.0, 12.0]}", "--set", "melt.mesh.start=6", "--set", "melt.mesh.max=6",
        "--set", "melt.temperatures=[0, 20, 40, 80]"]
runner = CliRunner()


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_three_methods_side_by_side(tmp_path):
    out = tmp_path / "run"
    mc = "melt.monte_carlo={supercell: [3, 3], sweeps: 40, equilibration: 10, blocks: 4, psi6_every: 10, " \
         "temperatures: [10, 40]}"
    res = runner.invoke(app, ["melt", str(HOLE), "--out", str(out), *TINY, "--set",
                              "melt.method=[harmonic, self-consistent, monte-carlo]", "--set", mc,
                              "--scheduler", "serial"])
    assert res.exit_code == 0, res.output
    rows = _rows(out / "melt.csv")
    assert [r["method"] for r in rows] == ["harmonic"] * 2 + ["self-consistent"] * 2 + ["monte-carlo"] * 2
    h, s = rows[0], rows[2]
    assert float(s["lindemann_ratio_zero"]) > float(h["lindemann_ratio_zero"])  # SCHA fluctuates more
    assert float(s["melting_temperature_K"]) < float(h["melting_temperature_K"])
    assert float(s["instability_temperature_K"]) > 0 and h["instability_temperature_K"] == ""
    assert rows[4]["psi6_susceptibility_peak_K"] in ("10.0", "40.0")
    lrows = _rows(out / "lindemann.csv")
    assert [sum(r["method"] == m for r in lrows) for m in ("harmonic", "self-consistent", "monte-carlo")] == [8, 8, 4]
    assert all(r["lindemann_ratio_err"] != "" for r in lrows if r["method"] == "monte-carlo")
    traces = _rows(out / "mc.csv")
    assert len(traces) == 2 * 2 * 4 and {"energy_meV", "mean_square_displacement_nm2", "psi6"} <= set(traces[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["harmonic", "self-consistent", "monte-carlo"]
    assert summary["monte_carlo"]["n_particles"] == 9 and len(summary["monte_carlo"]["points"]) == 2
    assert summary["self_consistent"]["mesh"] == 6
    for name in ("lindemann.png", "melting_temperature.png", "phase_diagram.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*_methods.png"))  # the plain figures show the methods side by side
    assert "self-consistent: T_m" in res.output


def test_default_is_harmonic_with_a_method_column(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["melt", str(HOLE), "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output
    assert [r["method"] for r in _rows(out / "melt.csv")] == ["harmonic"] * 2
    assert not (out / "mc.csv").exists() and (out / "lindemann.png").exists()
    assert json.loads((out / "summary.json").read_text())["methods"] == ["harmonic"]


@pytest.mark.parametrize(("override", "message"), [
    ("melt.method=anharmonic", "melt.method"),
    ("melt.method=[]", "melt.method"),
    ("melt.monte_carlo={supercell: [1, 4]}", "melt.monte_carlo"),
    ("melt.monte_carlo={temperatures: [0.0, 5.0]}", "melt.monte_carlo.temperatures"),
])
def test_bad_method_settings_exit_2(tmp_path, override, message):
    res = runner.invoke(app, ["melt", str(HOLE), "--out", str(tmp_path / "out"), "--set", override])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "out").exists()
