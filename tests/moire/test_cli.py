"""`moire phonons` end to end: every shipped config round-trips; bad input exits 2 cleanly."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moire_cli.cli import app
from moire_cli.config import PhononsConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "moire").glob("*.yaml"))
FAST = ["--set", "mesh.size=[4,4]", "--set", "path.n_per_segment=6"]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_shipped_configs_exist_for_each_crystal_type():
    names = {load_config(p, PhononsConfig).crystal.name for p in CONFIGS}
    assert names >= {"triangular", "triangular_gwc", "honeycomb_gwc", "linear_stripe", "zigzag_stripe"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_round_trip_each_shipped_config(config, tmp_path):
    out = tmp_path / "run"
    res = run("phonons", config, "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    cfg = load_config(config, PhononsConfig, FAST[1::2])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == cfg.model_dump(mode="json")  # every input echoed
    assert summary["codata_year"] >= 2018
    arr = np.load(out / "arrays.npz")
    with open(out / "bands.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    n_q, n_m = arr["path_frequencies_meV"].shape
    assert len(rows) == n_q * n_m
    assert np.array([float(r["frequency_meV"]) for r in rows]) == pytest.approx(
        arr["path_frequencies_meV"].ravel(), rel=1e-9)
    assert float(rows[-1]["distance"]) == pytest.approx(arr["path_distance"][-1], rel=1e-9)
    all_f = np.concatenate([arr["path_frequencies_meV"].ravel(), arr["mesh_frequencies_meV"].ravel()])
    assert summary["min_frequency_meV"] == pytest.approx(all_f.min())
    assert summary["stable"] == (summary["unstable_modes"] == 0)
    g = summary["frequencies_at_labels"]["G"]["frequencies_meV"]
    if n_m == 2:  # one particle per cell: ω(Γ) = ω_M, under B the Fock–Darwin pair √(ω_M² + ω_c²/4) ± ω_c/2
        w_m, w_c = summary["moire_potential"]["hbar_omega_M_meV"], abs(summary["chirality"]["hbar_omega_c_meV"])
        fock_darwin = np.sqrt(w_m**2 + w_c**2 / 4) + np.array([-w_c / 2, w_c / 2])
        assert g == pytest.approx(fock_darwin, rel=1e-9)
    moved = summary["crystal"]["max_displacement_nm"]
    assert (moved > 1e-3) == (cfg.crystal.name == "zigzag_stripe")
    with open(out / "dos.csv", newline="") as fh:
        dos = list(csv.DictReader(fh))
    assert len(dos) == cfg.mesh.n_energies
    assert (out / "bands.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))


def test_overrides_and_units(tmp_path):
    cfg = CONFIGS[0]
    out = tmp_path / "thz"
    res = run("phonons", cfg, "--out", out, *FAST, "--set", "output.frequency_unit=THz",
              "--set", "output.plot=false", "--set", "moire_potential.V=3")
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["moire_potential"]["V"] == 3
    header = (out / "bands.csv").read_text().splitlines()[0]
    assert "frequency_THz" in header.split(",")
    assert not (out / "bands.png").exists()


def test_existing_output_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = run("phonons", CONFIGS[0], "--out", out, *FAST)
    assert res.exit_code == 2
    assert (out / "keep.txt").read_text() == "precious"
    res = run("phonons", CONFIGS[0], "--out", out, *FAST, "--overwrite")  # not a moire output: refused too
    assert res.exit_code == 2 and "not written by moire" in res.output
    assert (out / "keep.txt").read_text() == "precious"
    fresh = tmp_path / "fresh"
    assert run("phonons", CONFIGS[0], "--out", fresh, *FAST).exit_code == 0
    (fresh / "stale.txt").write_text("old")
    res = run("phonons", CONFIGS[0], "--out", fresh, *FAST, "--overwrite")  # an earlier output: replaced
    assert res.exit_code == 0
    assert not (fresh / "stale.txt").exists() and (fresh / "summary.json").exists()


BAD = {
    "malformed.yaml": ("crystal: [unclosed\n", "malformed YAML"),
    "unknown.yaml": ("moire_potential: {a_M: 8}\nfoo: 1\n", "foo: unknown key"),
    "unknown_nested.yaml": ("moire_potential: {a_M: 8, depth: 3}\n", "moire_potential.depth: unknown key"),
    "wrongtype.yaml": ("moire_potential: {a_M: eight}\n", "moire_potential.a_M"),
    "negative.yaml": ("moire_potential: {a_M: -8}\n", "a_M: Input should be greater than or equal to 0.01"),
    "badcrystal.yaml": ("moire_potential: {a_M: 8}\ncrystal: {name: kagome}\n", "unknown crystal 'kagome'"),
    "keldysh.yaml": ("moire_potential: {a_M: 8}\ninteraction: {kind: keldysh}\n", "r0 is required"),
    "list.yaml": ("- 1\n- 2\n", "must be a YAML mapping"),
    "badpath.yaml": ("moire_potential: {a_M: 8}\npath: {points: [G, X]}\n", "unknown high-symmetry point"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_configs_exit_2_with_one_line(name, tmp_path):
    text, needle = BAD[name]
    p = tmp_path / name
    p.write_text(text)
    out = tmp_path / "out"
    res = run("phonons", p, "--out", out)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines() if res.stderr else res.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert "Traceback" not in res.output
    assert not out.exists()


def test_bad_set_and_missing_file(tmp_path):
    res = run("phonons", tmp_path / "nope.yaml")
    assert res.exit_code == 2 and "not found" in res.output
    res = run("phonons", CONFIGS[0], "--out", tmp_path / "o", "--set", "novalue")
    assert res.exit_code == 2 and "key=value" in res.output


def test_module_entry_point_subprocess(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("moire_potential: {a_M: 8}\nmass: -1\n")
    r = subprocess.run([sys.executable, "-m", "moire_cli", "phonons", str(p), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "mass" in r.stderr and "Traceback" not in r.stderr
