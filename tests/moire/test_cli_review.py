"""Regressions from a new-user review of the `moire` CLI: file modes, strict JSON, output-path
checks, user errors versus internal errors, NaN/inf and unphysical inputs, the terminal table."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moire_cli import output
from moire_cli.cli import app
from moire_cli.config import ConfigError, MeltConfig, PhononsConfig, config_from_dict
from moire_cli.crystals import build_crystal
from moire_cli.units import convert_frequency

ROOT = Path(__file__).resolve().parents[2]
TRIANGULAR = ROOT / "configs" / "moire" / "wse2_ws2_triangular.yaml"
FIELD = ROOT / "configs" / "moire" / "wse2_ws2_honeycomb_gwc_field.yaml"
TINY = ["--set", "mesh.size=[4,4]", "--set", "path.n_per_segment=4", "--set", "output.plot=false"]
BASE = {"moire_potential": {"a_M": 8.0, "V": 15.0}}
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(res, needle: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("moire: error: ") and needle in lines[0], lines
    assert "Traceback" not in res.output


# ------------------------------------------------------------------ output files
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_output_files_and_folder_honour_the_umask(tmp_path, umask_022):
    out = tmp_path / "run"
    with output.atomic_output_dir(out) as tmp:
        output.write_json(tmp / "summary.json", {"a": 1})
        output.write_csv(tmp / "t.csv", {"x": [1.0, 2.0]})
        output.write_npz(tmp / "a.npz", x=np.arange(3))
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for name in ("summary.json", "t.csv", "a.npz"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_umask_077_still_private(tmp_path):
    old = os.umask(0o077)
    try:
        output.write_json(tmp_path / "s.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o600


def _strict(text: str):
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=bad)


def test_summary_json_is_strict_json_with_numpy_nan(tmp_path):
    obj = {"T_m": np.float64("nan"), "inf": np.float32("inf"), "ok": np.float64(2.5), "arr": np.array([1.0, np.nan])}
    output.write_json(tmp_path / "s.json", obj)
    assert _strict((tmp_path / "s.json").read_text()) == {"T_m": None, "inf": None, "ok": 2.5, "arr": [1.0, None]}


def test_out_is_an_existing_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep")
    for extra in ([], ["--overwrite"]):
        one_error_line(run("phonons", TRIANGULAR, "--out", f, *TINY, *extra), "is not a folder")
    assert f.read_text() == "keep"


def test_out_below_a_file_fails_before_computing(tmp_path, monkeypatch):
    from moire_cli import dynamics

    def must_not_run(*a, **k):
        raise AssertionError("computed before checking the output path")

    monkeypatch.setattr(dynamics, "compute_phonons", must_not_run)
    (tmp_path / "file").write_text("")
    one_error_line(run("phonons", TRIANGULAR, "--out", tmp_path / "file" / "sub" / "run", *TINY), "is not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_out_in_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error_line(run("phonons", TRIANGULAR, "--out", ro / "run", *TINY), "not writable")
    finally:
        ro.chmod(0o755)


def test_interrupt_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "write_json", interrupted)
    out = tmp_path / "run"
    res = run("phonons", TRIANGULAR, "--out", out, *TINY)
    assert res.exit_code != 0
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ user errors vs bugs
def test_internal_error_is_not_disguised_as_user_error(tmp_path, monkeypatch):
    from moire_cli import dynamics

    def bug(*a, **k):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(dynamics, "compute_phonons", bug)
    res = run("phonons", TRIANGULAR, "--out", tmp_path / "run", *TINY)
    assert res.exit_code != 2
    assert isinstance(res.exception, ValueError) and "broadcast" in str(res.exception)
    assert not (tmp_path / "run").exists()


def test_unknown_path_label_names_the_key(tmp_path):
    one_error_line(run("phonons", TRIANGULAR, "--out", tmp_path / "o", *TINY, "--set", "path.points=[G, X]"),
                   "path.points: unknown high-symmetry point 'X'")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("moire_potential.V=.inf", "moire_potential.V: Input should be a finite number"),
        ("moire_potential.a_M=.nan", "moire_potential.a_M"),
        ("mass=.inf", "mass: Input should be a finite number"),
        ("dielectric.epsilon_top=0.5", "dielectric.epsilon_top: Input should be greater than or equal to 1"),
        ("path.points=[G, {label: Q, frac: [0.5, .nan]}]", "path.points.1.frac.1"),
        ("ewald.eta=1e-9", "ewald.eta"),
        ("ewald.short_range_cutoff=1e6", "lattice vectors"),
        ("crystal={name: mine, cell: [[1, 0], [0, 1]], basis: [[0, 0], [1, 0]]}", "basis sites 0 and 1 coincide"),
    ],
)
def test_bad_values_via_set_exit_2(tmp_path, override, needle):
    one_error_line(run("phonons", TRIANGULAR, "--out", tmp_path / "o", *TINY, "--set", override), needle)
    assert not (tmp_path / "o").exists()


def test_coinciding_sites_modulo_an_oblique_cell():
    cell = [[1.0, 0.0], [0.5, np.sqrt(3) / 2]]
    with pytest.raises(ConfigError, match="coincide"):  # (1.5, √3/2) = a1 + a2 + (0, 0)
        config_from_dict({**BASE, "crystal": {"name": "mine", "cell": cell, "basis": [[0, 0], [1.5, np.sqrt(3) / 2]]}})
    cfg = config_from_dict({**BASE, "crystal": {"name": "mine", "cell": cell, "basis": [[0, 0], [0.5, 0.3]]}})
    assert cfg.n_sites == 2


def test_eta_range_and_default_lattice_sums_accepted():
    area = build_crystal("triangular", 8.0).area
    eta0 = np.sqrt(np.pi / area)
    for factor in (0.06, 1.0, 19.0):
        config_from_dict({**BASE, "ewald": {"eta": factor * eta0}})
    for factor in (0.04, 21.0):
        with pytest.raises(ConfigError, match="ewald.eta"):
            config_from_dict({**BASE, "ewald": {"eta": factor * eta0}})
    huge_r0 = {**BASE, "moire_potential": {"a_M": 2.0, "V": 15.0}, "interaction": {"kind": "keldysh", "r0": 1000.0}}
    with pytest.raises(ConfigError, match="short-range lattice sum"):
        config_from_dict(huge_r0)
    with pytest.raises(ConfigError, match="finite"):
        config_from_dict({**BASE, "sweep": {"a_M": [8.0, float("nan")]}}, MeltConfig).sweep_points()


def test_cell_degeneracy_check_is_relative():
    cr = build_crystal("triangular", 1e-6)  # tiny but not degenerate
    assert cr.area == pytest.approx(np.sqrt(3) / 2 * 1e-12)
    small = {**BASE, "crystal": {"name": "mine", "cell": [[1e-5, 0], [0, 1e-5]], "basis": [[0, 0]]},
             "moire_potential": {**BASE["moire_potential"], "V": 0.0}}  # unpinned: any cell (a square one is no moiré superlattice)
    assert config_from_dict(small, PhononsConfig).crystal.cell == [[1e-5, 0], [0, 1e-5]]


# ------------------------------------------------------------------ terminal table
def test_plain_table_off_tty_in_output_unit(tmp_path):
    out = tmp_path / "thz"
    res = run("phonons", TRIANGULAR, "--out", out, *TINY, "--set", "output.frequency_unit=THz")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("| point"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["point", "q (fractional)", "mode", "ħω (THz)"]
    summary = json.loads((out / "summary.json").read_text())
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("| ") and ln != header]
    assert [r[0] for r in rows if r[0]] == ["Γ", "M", "K"]
    table = np.array([float(r[3]) for r in rows])
    expected = np.concatenate([convert_frequency(np.asarray(v["frequencies_meV"]), "THz")
                               for v in summary["frequencies_at_labels"].values()])
    np.testing.assert_allclose(table, expected, atol=1e-4)
    assert any(ln.startswith("stable; min ħω") and "THz" in ln for ln in lines)
    assert lines[-1] == f"wrote {out}"


def test_rich_table_on_a_terminal_with_l_z(tmp_path, monkeypatch):
    import rich.console

    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    out = tmp_path / "field"
    res = run("phonons", FIELD, "--out", out, "--set", "mesh.size=[6,6]", "--set", "path.n_per_segment=4",
              "--set", "output.plot=false")
    assert res.exit_code == 0, res.output
    assert "| point" not in res.stdout  # not the ASCII box
    head = next(ln for ln in res.stdout.splitlines() if "point" in ln and "mode" in ln)
    assert "ħω (meV)" in head and "l_z (ħ)" in head
    summary = json.loads((out / "summary.json").read_text())
    l_z_gamma = summary["chirality"]["at_labels"]["G"]["l_z_hbar"]
    assert f"{l_z_gamma[0]:+.3f}" in res.stdout
    assert "wrote" not in res.stdout  # the title names the folder on a terminal


def test_melt_plain_table_has_a_header(tmp_path):
    cfg = tmp_path / "melt.yaml"
    cfg.write_text("moire_potential: {a_M: 10.0, V: 10.0}\nmass: 0.5\n"
                   "melt: {temperatures: [0, 50, 100], mesh: {start: 4, max: 4}}\n"
                   "sweep: {a_M: [8.0, 10.0]}\noutput: {plot: false}\n")
    res = run("melt", cfg, "--out", tmp_path / "m")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("| sweep_a_M"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["sweep_a_M", "L(0)", "result"]
    body = [ln for ln in lines if ln.startswith("| ") and ln != header]
    assert [ln.split("|")[1].strip() for ln in body] == ["8.0", "10.0"]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"a_M": {"start": -5.0, "stop": 10.0, "num": 3, "log": True}}, "config: sweep.a_M: a log sweep needs start and stop > 0"),
        ({"a_M": {"start": 5.0, "stop": 10.0, "num": 0}}, "config: sweep.a_M.num: Input should be greater than or equal to 1"),
        ({"a_M": ["x", None]}, "config: sweep.a_M.1: Input should be a valid number"),
    ],
)
def test_melt_sweep_errors_name_the_key_without_type_tags(sweep, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**BASE, "sweep": sweep}, MeltConfig)
    assert str(err.value) == message


def test_melt_unstable_point_shows_a_dash_not_nan(tmp_path):
    cfg = tmp_path / "melt.yaml"
    cfg.write_text("crystal: {name: zigzag_stripe}\nmoire_potential: {a_M: 10.0, V: 0.1}\nmass: 0.5\n"
                   "melt: {temperatures: [0, 50], mesh: {start: 4, max: 4}}\noutput: {plot: false}\n")
    res = run("melt", cfg, "--out", tmp_path / "m")
    assert res.exit_code == 0, res.output
    row = next(ln for ln in res.stdout.splitlines() if "unstable" in ln and ln.startswith("| "))
    assert [c.strip() for c in row.strip("|").split("|")] == ["—", "unstable"]
    assert "nan" not in res.stdout


def test_huge_meshes_rejected_before_any_work():
    from moire_cli.config import MAX_MELT_WORK, MAX_MESH_WORK

    honeycomb = {**BASE, "crystal": {"name": "honeycomb_gwc"}}
    config_from_dict({**honeycomb, "mesh": {"size": [256, 256]}})  # 256² × 2² = the limit
    with pytest.raises(ConfigError, match=r"mesh.size 257×256 with 2 site\(s\)"):
        config_from_dict({**honeycomb, "mesh": {"size": [257, 256]}})
    assert MAX_MESH_WORK == 256 * 256 * 4
    n_points = MAX_MELT_WORK // 48**2 + 1
    cfg = config_from_dict({**BASE, "melt": {"mesh": {"max": 48}},
                            "sweep": {"a_M": {"start": 5.0, "stop": 10.0, "num": n_points}}}, MeltConfig)
    with pytest.raises(ConfigError, match="too large"):
        cfg.sweep_points()


def test_duplicate_yaml_keys_rejected_merge_keys_kept(tmp_path):
    from moire_cli.config import load_config

    dup = tmp_path / "dup.yaml"
    dup.write_text("moire_potential: {a_M: 8, V: 15}\nmass: 0.5\nmoire_potential: {a_M: 9}\n")
    with pytest.raises(ConfigError, match=r"\(line 3\): duplicate key 'moire_potential'"):
        load_config(dup)
    nested = tmp_path / "nested.yaml"
    nested.write_text("moire_potential: {a_M: 8, V: 15, V: 3}\n")
    with pytest.raises(ConfigError, match="duplicate key 'V'"):
        load_config(nested)
    merge = tmp_path / "merge.yaml"
    merge.write_text("moire_potential:\n  <<: {a_M: 8, V: 15}\n  V: 12\n")
    assert load_config(merge).moire_potential.V == 12


def test_yaml_booleans_are_not_numbers():
    with pytest.raises(ConfigError, match="config: mass: the boolean true is not a valid value here"):
        config_from_dict({**BASE, "mass": True})
    with pytest.raises(ConfigError, match="chirality.charge_sign: the boolean true"):
        config_from_dict({**BASE, "chirality": {"charge_sign": True}})
    cfg = config_from_dict({**BASE, "relax": False, "output": {"plot": False}})
    assert cfg.relax is False and cfg.output.plot is False


def test_terminal_log_lines_are_not_rich_markup():
    import io

    import rich.console

    from moire_cli import cli

    con = rich.console.Console(file=io.StringIO(), force_terminal=True, no_color=True, width=120)
    cli._log(con, "crystal [bold]mine: 2 site(s)/cell")
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m|\x1b\]8;[^\x1b]*\x1b\\", "", con.file.getvalue())  # drop styles, links
    assert "crystal [bold]mine: 2 site(s)/cell" in plain
