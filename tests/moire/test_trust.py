"""Regression tests for issue 15 (moire): sweeps that change nothing, trap_scale all zero, YAML 1.2,
--overwrite only of earlier moire outputs, clean stops on SIGTERM/SIGHUP, swaps that always leave
an output."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from moire_cli import output
from moire_cli.cli import app
from moire_cli.config import ConfigError, MeltConfig, PhononsConfig, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[2]
HOLE = ROOT / "configs" / "moire" / "melt" / "wse2_ws2_hole_crystal.yaml"
EXCITON = ROOT / "configs" / "moire" / "melt" / "mose2_wse2_exciton_crystal.yaml"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- item 3 (and 12: sites per cell)
@pytest.mark.parametrize(("config", "sweep", "message"), [
    (HOLE, "{melt.t_max: [1, 10000]}", "melt.t_max applies to the whole run"),
    (HOLE, "{melt.mesh.max: [12, 24]}", "melt.mesh.max applies to the whole run"),
    (HOLE, "{melt.mesh.tolerance: [0.1]}", "applies to the whole run"),
    (HOLE, "{melt.temperatures: [5]}", "applies to the whole run"),
    (HOLE, "{melt.relax: [1, 0]}", "applies to the whole run"),
    (HOLE, "{output.phase_temperature: [5, 10]}", "applies to the whole run"),
    (EXCITON, "{d_g: [1, 4]}", "interaction 'dipole-twosheet' does not use d_g"),
    (EXCITON, "{r0: [1, 4]}", "interaction 'dipole-twosheet' does not use r0"),  # r0_1, r0_2 are given
    (EXCITON, "{r0: [1, 4], interaction: [dipole-bare]}", "interaction 'dipole-bare' does not use r0"),
    (HOLE, "{r0: [1, 4], interaction: [coulomb]}", "interaction 'coulomb' does not use r0"),
    (HOLE, "{d_g: [1, 4], interaction: [keldysh]}", "does not use d_g"),
    (HOLE, "{psi_deg: [0, 30], V: [0]}", "the crystal is unpinned"),
    (HOLE, "{crystal.name: [triangular, honeycomb_gwc]}", "sites per cell"),
])
def test_sweep_keys_that_change_nothing_are_refused(config, sweep, message):
    cfg = load_config(config, MeltConfig, [f"sweep={sweep}"])
    with pytest.raises(ConfigError, match=message):
        cfg.sweep_points()


def test_sweep_keys_that_matter_are_kept():
    for sweep in ("{r0: [1, 4], interaction: [coulomb, keldysh]}", "{r0: [1, 4]}", "{lindemann_critical: [0.2, 0.3]}",
                  "{epsilon: [3, 5]}", "{mass: [0.4, 0.5]}"):
        cfg = load_config(HOLE, MeltConfig, [f"sweep={sweep}"])
        assert len(cfg.sweep_points()) >= 2
    cfg = load_config(EXCITON, MeltConfig, ["sweep={r0: [1, 4]}", "interaction.r0_1=null", "interaction.r0_2=null"])
    assert len(cfg.sweep_points()) == 2  # r0 is the default of both layers then


def test_v_is_ignored_when_hbar_omega_m_is_given():
    cfg = load_config(HOLE, MeltConfig, ["sweep={V: [1, 3]}", "moire_potential.hbar_omega_M=5"])
    with pytest.raises(ConfigError, match="hbar_omega_M sets V"):
        cfg.sweep_points()


# ---------------------------------------------------------------- item 4: trap_scale all zero
def test_trap_scale_all_zero_is_the_unpinned_crystal(tmp_path):
    rows = {}
    common = ["--set", "sweep={}", "--set", "melt.mesh.start=6", "--set", "melt.mesh.max=12", "--set",
              "output.plot=false", "--set", "moire_potential.a_M=40", "--set", "melt.temperatures=[0, 1, 2]"]
    for tag, extra in (("zero", "moire_potential.trap_scale=[0.0]"), ("V0", "moire_potential.V=0")):
        res = run("melt", HOLE, "--out", tmp_path / tag, *common, "--set", extra)
        assert res.exit_code == 0, res.output
        with open(tmp_path / tag / "melt.csv", newline="") as fh:
            rows[tag] = next(csv.DictReader(fh))
        assert "unpinned crystal" in res.output
    for key in ("criterion", "lindemann_ratio_zero", "melting_temperature_K", "hbar_omega_M_meV",
                "nearest_neighbour_distance_nm", "quantum_melted"):
        assert rows["zero"][key] == rows["V0"][key], key
    assert rows["zero"]["criterion"] == "relative"
    cfg = config_from_dict({"moire_potential": {"a_M": 8.0, "V": 15.0, "trap_scale": [0.0, 0.0]},
                            "crystal": {"name": "honeycomb_gwc"}}, PhononsConfig)
    assert not cfg.pinned and cfg.build_model().potential is None
    half = config_from_dict({"moire_potential": {"a_M": 8.0, "V": 15.0, "trap_scale": [0.0, 1.0]},
                             "crystal": {"name": "honeycomb_gwc"}}, PhononsConfig)
    assert half.pinned and half.build_model().trap_scale == (0.0, 1.0)  # one pinned sublattice pins the crystal


# ---------------------------------------------------------------- item 6: YAML 1.2 core
@pytest.mark.parametrize(("text", "message"), [
    ("moire_potential: {a_M: 8, V: 10, psi_deg: 1:30}\n", "psi_deg: Input should be a valid number"),
    ("moire_potential: {a_M: 8, V: 10}\nmesh: {size: [true, 6]}\n", "mesh.size: the boolean true"),
    ("moire_potential: {a_M: 8, V: 10}\ncrystal: {name: no}\n", "unknown crystal 'no'"),
    ("moire_potential: {a_M: 8, V: 10}\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels"),
    ("moire_potential: {a_M: 8, V: " + "9" * 5000 + "}\n", "integer with 5000 characters is too long"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdef", "bcdefg", strict=True)), "after expanding aliases"),
])
def test_yaml_1_1_forms_and_hostile_yaml_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path, PhononsConfig)
    assert "\n" not in str(err.value)


def test_yaml_1_2_values():
    path_text = "moire_potential: {a_M: 8, V: 1e1, psi_deg: 0o17}\npath: {n_per_segment: 010}\noutput: {plot: false}\n"
    cfg = config_from_dict(yaml.safe_load("{}") or {}, PhononsConfig, [
        "moire_potential.a_M=8", "moire_potential.V=1e1", "moire_potential.psi_deg=0o17", "path.n_per_segment=010"])
    assert (cfg.moire_potential.V, cfg.moire_potential.psi_deg, cfg.path.n_per_segment) == (10.0, 15.0, 10)
    assert path_text  # same through a file:
    with pytest.raises(ConfigError, match="sweep: the boolean true"):
        load_config(HOLE, MeltConfig, ["sweep={a_M: [true]}"])
    with pytest.raises(ConfigError, match="psi_deg"):
        config_from_dict({}, PhononsConfig, ["moire_potential.a_M=8", "moire_potential.psi_deg=1:30"])


# ---------------------------------------------------------------- item 7: --overwrite
TINY = ["--set", "mesh.size=[3,3]", "--set", "path.n_per_segment=3", "--set", "output.plot=false"]
PHONONS = ROOT / "configs" / "moire" / "wse2_ws2_triangular.yaml"


def test_overwrite_refuses_foreign_folders_files_and_links(tmp_path):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    for target in (foreign, foreign / "thesis.tex"):
        res = run("phonons", PHONONS, "--out", target, "--overwrite", *TINY)
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    link = tmp_path / "link"
    link.symlink_to(foreign)
    res = run("phonons", PHONONS, "--out", link, "--overwrite", *TINY)
    assert res.exit_code == 2 and "symbolic link" in res.output
    assert (foreign / "thesis.tex").read_text() == "precious"
    for command, config, extra in (("phonons", PHONONS, TINY), ("melt", HOLE, [
            "--set", "sweep={}", "--set", "melt.mesh.start=4", "--set", "melt.mesh.max=4", "--set", "output.plot=false"])):
        res = run(command, config, "--out", foreign, "--overwrite", *extra)
        assert res.exit_code == 2 and "not written by moire" in res.output
        out = tmp_path / command
        assert run(command, config, "--out", out, *extra).exit_code == 0
        marker = json.loads((out / output.MARKER).read_text())
        assert marker["tool"] == "moire" and marker["command"] == command
        assert run(command, config, "--out", out, "--overwrite", *extra).exit_code == 0
    assert (foreign / "thesis.tex").read_text() == "precious"


# ---------------------------------------------------------------- item 10: signals and swaps
SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from moire_cli import output
    with output.atomic_output_dir(Path(sys.argv[1]), overwrite=True) as tmp:
        (tmp / "big.bin").write_bytes(b"x" * 1000)
        print("ready", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_leaves_no_temporary_folder(tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "ready"
    assert any(p.name.startswith(".run.tmp-") for p in tmp_path.iterdir())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig
    assert err.strip() == f"moire: stopped by {signal.Signals(sig).name}"
    assert list(tmp_path.iterdir()) == []


def _earlier_output(out: Path, text: str) -> None:
    with output.atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "data.txt").write_text(text)


def test_replace_is_an_atomic_exchange(tmp_path):
    out = tmp_path / "run"
    _earlier_output(out, "old")
    _earlier_output(out, "new")
    assert (out / "data.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_fallback_swap_killed_between_renames_is_recovered(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _earlier_output(out, "old")
    monkeypatch.setattr(output, "_exchange", lambda a, b: False)  # a filesystem without renameat2
    _earlier_output(out, "new")  # the fallback path works
    assert (out / "data.txt").read_text() == "new"
    real_replace = os.replace
    calls = []

    def killed_after_first_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the "kill": after old → .run.old-*, before new → run
        real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        _earlier_output(out, "newer")
    monkeypatch.setattr(output.os, "replace", real_replace)
    assert not out.exists() and any(p.name.startswith(".run.old-") for p in tmp_path.iterdir())
    monkeypatch.setattr(output, "_pid_alive", lambda pid: False)  # as seen by the next run
    output.check_output_dir(out, overwrite=True)
    assert (out / "data.txt").read_text() == "new"  # the old output is back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_recovery_never_touches_folders_without_the_marker(tmp_path, monkeypatch):
    stranger = tmp_path / ".run.tmp-1-abc"
    stranger.mkdir()
    (stranger / "mine.txt").write_text("x")
    monkeypatch.setattr(output, "_pid_alive", lambda pid: False)
    output.recover_output_dir(tmp_path / "run")
    assert (stranger / "mine.txt").exists()
    time.sleep(0)


# ---------------------------------------------------------------- item 12: sizes bounded, one line
@pytest.mark.parametrize(("command", "override", "message"), [
    ("phonons", "moire_potential.a_M=1e308", "a_M: Input should be less than or equal to 100000"),
    ("phonons", "moire_potential.a_M=1e-300", "a_M: Input should be greater than or equal to 0.01"),
    ("phonons", "moire_potential.V=1e308", "V: Input should be less than or equal to 10000"),
    ("phonons", "interaction.r0=1e308", "r0: Input should be less than or equal to 10000"),
    ("phonons", "interaction.r0=1e-300", "r0: Input should be greater than or equal to 0.001"),
    ("phonons", "mass=1e308", "mass: Input should be less than or equal to 1000"),
    ("phonons", "dielectric.epsilon_top=1e308", "epsilon_top: Input should be less than or equal to 1000"),
    ("phonons", "moire_potential.trap_scale=[1e308]", "trap_scale entries must be between 0 and 1000"),
    ("phonons", "path.points=[{label: A, frac: [0, 0]}, {label: B, frac: [1e300, 0]}]", "within ±100"),
    ("phonons", "path.n_per_segment=100000", "q-points with 1 site(s) per cell is too large"),
    ("phonons", "moire_potential.a_M=0.01", "short-range lattice sum would need"),
    ("melt", "melt.temperatures=[1e308]", "between 0 and 1e+06 K"),
    ("melt", "melt.t_max=1e308", "t_max: Input should be less than or equal to 1000000"),
    ("melt", "interaction.d=1e308", "interaction.d: Input should be less than or equal to 10000"),
    ("melt", "melt.temperatures={start: 0, stop: 100, num: 100000}", "rows of lindemann.csv"),
])
def test_extreme_magnitudes_are_refused_naming_the_limit(command, override, message):
    config = PHONONS if command == "phonons" else (EXCITON if "interaction.d" in override else HOLE)
    res = run(command, config, "--out", "/nonexistent/never-written", "--set", override)
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_basis_site_far_away_is_wrapped(tmp_path):
    crystal = "crystal={name: far, cell: [[1, 0], [0.5, 0.8660254037844386]], basis: [[1000, 0]]}"
    res = run("phonons", PHONONS, "--out", tmp_path / "far", *TINY, "--set", crystal)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "far" / "summary.json").read_text())
    assert summary["crystal"]["basis_initial_nm"] == [[0.0, 0.0]]
    assert summary["crystal"]["nearest_neighbour_distance_nm"] == pytest.approx(8.0)


# ---------------------------------------------------------------- items 15, 16
def test_runtime_warnings_are_one_line(capsys):
    import numpy as np

    from moire_cli.cli import user_errors

    @user_errors
    def noisy():
        return np.float64(1.0) / np.float64(0.0)

    assert noisy() == float("inf")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moire: warning: RuntimeWarning: divide by zero"), err


def test_non_finite_values_are_empty_in_csv_and_null_in_json(tmp_path):
    import numpy as np

    output.write_csv(tmp_path / "x.csv", {"a": [1.0, np.nan, np.inf, -np.inf], "b": ["s", "", "t", "u"]})
    assert (tmp_path / "x.csv").read_text().splitlines() == ["a,b", "1,s", ",", ",t", ",u"]
    out = tmp_path / "melt"
    res = run("melt", HOLE, "--out", out, "--set", "sweep={}", "--set", "melt.mesh.start=4", "--set",
              "melt.mesh.max=4", "--set", "output.plot=false", "--set", "melt.t_max=1", "--set",
              "melt.temperatures=[0, 0.5]", "--set", "moire_potential.a_M=30")
    assert res.exit_code == 0, res.output
    with open(out / "melt.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["melting_temperature_K"] == "" and row["above_t_max"] == "True" and row["quantum_melted"] == "False"
    point = json.loads((out / "summary.json").read_text())["points"][0]
    assert point["melting_temperature_K"] is None and point["above_t_max"] is True
    assert "inf" not in (out / "melt.csv").read_text() and "nan" not in (out / "lindemann.csv").read_text()
