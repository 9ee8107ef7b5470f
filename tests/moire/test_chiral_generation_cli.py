"""`moire phonons` with the opt-in optics / anharmonic_decay / thermal_hall sections (issue 13 §4)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moire_cli.cli import app
from moire_cli.optics import fock_darwin_lines

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "moire"
SMALL = [
    "--set", "mesh.size=[12, 12]",
    "--set", "path.n_per_segment=6",
    "--set", "anharmonic_decay.mesh=[12, 12]",
    "--set", "thermal_hall.num=8",
    "--set", "thermal_hall.mesh=[12, 12]",
]  # fmt: skip


def _run(tmp_path: Path, name: str, *extra: str):
    out = tmp_path / name
    result = CliRunner().invoke(app, ["phonons", str(CONFIGS / f"{name}.yaml"), "--out", str(out), *SMALL, *extra])
    return result, out


def _csv(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [r[k] for r in rows] for k in rows[0]}


@pytest.fixture(scope="module")
def triangular_field(tmp_path_factory):
    result, out = _run(tmp_path_factory.mktemp("gen"), "wse2_ws2_triangular_field_chiral_generation")
    assert result.exit_code == 0, result.output
    return out


def test_outputs_and_summary_keys(triangular_field):
    for name in ("optics.csv", "absorption.csv", "absorption.png", "decay.csv", "decay.png", "thermal_hall.csv",
                 "thermal_hall.png"):  # fmt: skip
        assert (triangular_field / name).is_file(), name
    s = json.loads((triangular_field / "summary.json").read_text())
    assert abs(s["optics"]["f_sum_ratio"] - 1.0) < 1e-8
    assert s["anharmonic_decay"]["energy_conservation_possible"] is False
    assert s["thermal_hall"]["mesh"] == [12, 12]
    th = _csv(triangular_field / "thermal_hall.csv")
    assert list(th) == ["temperature_K", "kappa_xy_W_per_K", "kappa_xy_kB2T_per_hbar"]
    assert len(th["temperature_K"]) == 8


def test_optics_csv_is_the_fock_darwin_pair_of_the_one_site_crystal(triangular_field):
    s = json.loads((triangular_field / "summary.json").read_text())
    o = _csv(triangular_field / "optics.csv")
    w_m = s["moire_potential"]["hbar_omega_M_meV"]
    fd = fock_darwin_lines(w_m, s["chirality"]["hbar_omega_c_meV"])
    np.testing.assert_allclose(np.array(o["frequency_meV"], float), [fd["lower"], fd["upper"]], rtol=1e-8)
    # holes in B > 0: ω_c < 0, so σ− takes the upper line with weight ω₊/Ω
    assert fd["upper_polarization"] == "sigma-"
    np.testing.assert_allclose(np.array(o["f_sigma_minus"], float), [0.0, fd["f_upper"]], atol=1e-8)
    np.testing.assert_allclose(np.array(o["f_sigma_plus"], float), [fd["f_lower"], 0.0], atol=1e-8)


def test_plain_run_writes_none_of_them(tmp_path):
    result = CliRunner().invoke(
        app, ["phonons", str(CONFIGS / "wse2_ws2_triangular_field.yaml"), "--out", str(tmp_path / "p"), "--set",
              "mesh.size=[12, 12]", "--set", "path.n_per_segment=6"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "p" / "optics.csv").exists()
    assert "optics" not in json.loads((tmp_path / "p" / "summary.json").read_text())


@pytest.mark.parametrize(
    "override, message",
    [
        ("optics.broadening_meV=0", "broadening_meV"),
        ("anharmonic_decay.mesh=[1, 1]", "anharmonic_decay.mesh"),
        ("thermal_hall.start_K=200", "start_K"),
    ],
)
def test_bad_sections_exit_2(tmp_path, override, message):
    result, out = _run(tmp_path, "wse2_ws2_triangular_field_chiral_generation", "--set", override)
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists()
