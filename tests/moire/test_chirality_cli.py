"""`moire phonons` with chirality: bands.csv columns round-trip, summary, bad chirality configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moire_cli.cli import app
from moire_cli.units import HBAR_OMEGA_C_MEV_PER_T

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "moire"
SMALL = ["--set", "mesh.size=[12, 12]", "--set", "path.n_per_segment=8"]


def _run(tmp_path: Path, name: str, *extra: str):
    out = tmp_path / name
    result = CliRunner().invoke(
        app, ["phonons", str(CONFIGS / f"{name}.yaml"), "--out", str(out), *SMALL, *extra]
    )
    return result, out


@pytest.fixture(scope="module")
def honeycomb_field(tmp_path_factory):
    result, out = _run(tmp_path_factory.mktemp("chiral"), "wse2_ws2_honeycomb_gwc_field")
    assert result.exit_code == 0, result.output
    return out


def test_bands_csv_chirality_columns_round_trip(honeycomb_field):
    with open(honeycomb_field / "bands.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    arrays = np.load(honeycomb_field / "arrays.npz")
    n_q, n_m = arrays["path_l_z_hbar"].shape
    assert len(rows) == n_q * n_m
    for column, key in [("l_z", "path_l_z_hbar"), ("mu_z_muB", "path_mu_z_muB"),
                        ("berry_curvature", "path_berry_curvature_nm2")]:  # fmt: skip
        values = np.array([float(r[column]) for r in rows]).reshape(n_q, n_m)
        np.testing.assert_allclose(values, arrays[key], rtol=1e-9, atol=1e-12)
    freq = np.array([float(r["frequency_meV"]) for r in rows]).reshape(n_q, n_m)
    np.testing.assert_allclose(freq, arrays["path_frequencies_meV"], rtol=1e-9)
    # Holes (charge +e): μ_z = +(m₀/m) l_z in μ_B.
    np.testing.assert_allclose(arrays["path_mu_z_muB"], arrays["path_l_z_hbar"] / 0.45, rtol=1e-12)


def test_summary_chern_numbers_and_gap_check(honeycomb_field):
    summary = json.loads((honeycomb_field / "summary.json").read_text())
    chi = summary["chirality"]
    assert summary["chern_numbers"] == chi["chern_numbers"]
    assert chi["hbar_omega_c_meV"] == pytest.approx(-HBAR_OMEGA_C_MEV_PER_T * 30 / 0.45)
    assert sum(chi["chern_numbers"]) == 0 and any(chi["chern_numbers"])
    assert all(g["gapped"] for g in chi["band_groups"]) and chi["stability_under_field"]["stable"]
    # The Ω map in arrays.npz integrates to the reported Chern numbers (isolated bands).
    arrays = np.load(honeycomb_field / "arrays.npz")
    cell = np.asarray(summary["crystal"]["cell_nm"])
    bz_area = (2 * np.pi) ** 2 / abs(np.linalg.det(cell))
    omega = arrays["berry_curvature_mesh_nm2"]
    chern = omega.sum(axis=(0, 1)) * bz_area / (omega.shape[0] * omega.shape[1]) / (2 * np.pi)
    np.testing.assert_allclose(chern, chi["chern_numbers"], atol=1e-8)
    assert {"temperature_K", "angular_momentum_per_particle_hbar", "magnetization_per_particle_muB"} <= set(
        chi["thermal"]
    )
    for png in ("bands.png", "bands_l_z.png", "berry_curvature.png"):
        assert (honeycomb_field / png).stat().st_size > 1000


def test_triangular_field_fock_darwin_in_bands_csv(tmp_path):
    result, out = _run(tmp_path, "wse2_ws2_triangular_field", "--set", "chirality.magnetic_field_T=20")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    w_m = summary["moire_potential"]["hbar_omega_M_meV"]
    w_c = HBAR_OMEGA_C_MEV_PER_T * 20 / 0.45
    gamma = np.asarray(summary["frequencies_at_labels"]["G"]["frequencies_meV"])
    big = np.sqrt(w_m**2 + w_c**2 / 4)
    np.testing.assert_allclose(gamma, [big - w_c / 2, big + w_c / 2], rtol=1e-8)


@pytest.mark.parametrize(
    "override, message",
    [
        ("moire_potential.trap_scale=[1.0, 0.8, 0.5]", "trap_scale has 3 entries"),
        ("chirality.berry_band=4", "berry_band"),
        ("chirality.magnetic_field_T=strong", "magnetic_field_T"),
        ("chirality.charge_sign=2", "charge_sign"),
        ("chirality.temperature_K=-1", "temperature_K"),
    ],
)
def test_bad_chirality_config_exits_2(tmp_path, override, message):
    result, out = _run(tmp_path, "wse2_ws2_honeycomb_gwc_inversion_breaking", "--set", override)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output
    assert not out.exists()
