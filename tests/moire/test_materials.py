"""The materials table (moire_cli/config/materials.py): `material:` resolves, overrides key by key,
bad names exit 2 in one line, the shipped configs keep their literature numbers, and the table's
moiré periods follow from its lattice constants."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from moire_cli.cli import app
from moire_cli.config import MATERIALS, ConfigError, MeltConfig, PhononsConfig, config_from_dict, load_config
from moire_cli.config.materials import (
    LATTICE_CONSTANT_NM,
    aligned_moire_period,
    material_defaults,
    twisted_moire_period,
)

ROOT = Path(__file__).resolve().parents[2]
PHONON_CONFIGS = sorted((ROOT / "configs" / "moire").glob("*.yaml"))
MELT_CONFIGS = sorted((ROOT / "configs" / "moire" / "melt").glob("*.yaml"))
runner = CliRunner()


def test_wse2_ws2_resolves_to_its_numbers():
    cfg = config_from_dict({"material": "wse2_ws2", "interaction": {"kind": "keldysh"}})
    mp = cfg.moire_potential
    assert (mp.a_M, mp.V, mp.psi_deg, mp.carrier) == (8.0, 15.0, 45.0, "hole")
    assert cfg.mass == 0.45 and cfg.dielectric.kappa == 5.1 and cfg.interaction.r0 == 4.511
    assert cfg.material == "wse2_ws2"


def test_mose2_wse2_exciton_fills_the_exciton_section():
    cfg = config_from_dict({"material": "mose2_wse2_exciton", "moire_potential": {"a_M": 10.0},
                            "interaction": {"kind": "dipole-twosheet"}}, MeltConfig)
    assert cfg.effective_mass == pytest.approx(0.86)  # M = m_e + m_h = 0.50 + 0.36
    assert cfg.interaction.d == 0.65 and cfg.interaction.screening_lengths() == (5.171, 4.511)
    assert (cfg.moire_potential.V, cfg.moire_potential.psi_deg, cfg.moire_potential.carrier) == (12.0, 0.0, "electron")


def test_config_and_set_override_key_by_key():
    data = {"material": "wse2_ws2", "moire_potential": {"V": 3.0}, "interaction": {"kind": "keldysh"}}
    cfg = config_from_dict(data, PhononsConfig, ["dielectric.epsilon_top=1.0"])
    assert cfg.moire_potential.V == 3.0  # the config's own key wins
    assert (cfg.moire_potential.a_M, cfg.moire_potential.psi_deg) == (8.0, 45.0)  # its siblings stay
    assert (cfg.dielectric.epsilon_top, cfg.dielectric.epsilon_bottom) == (1.0, 5.1)
    other = config_from_dict(data, PhononsConfig, ["material=mose2_wse2"])
    assert (other.moire_potential.a_M, other.moire_potential.psi_deg, other.mass) == (9.40, -94.0, 0.35)
    assert other.moire_potential.V == 3.0
    assert data == {"material": "wse2_ws2", "moire_potential": {"V": 3.0}, "interaction": {"kind": "keldysh"}}


@pytest.mark.parametrize("bad, needle", [
    ("graphene", "unknown material 'graphene'; use one of wse2_ws2, mose2_wse2, mose2_wse2_exciton"),
    ("[1, 2]", "unknown material [1, 2] (not a name)"),
])
def test_unknown_material_exits_2_in_one_line(tmp_path, bad, needle):
    p = tmp_path / "c.yaml"
    p.write_text(f"material: {bad}\n")
    res = runner.invoke(app, ["phonons", str(p), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moire: error: config: material: ") and needle in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_exciton_material_in_a_phonons_config_is_refused():
    with pytest.raises(ConfigError, match="'mose2_wse2_exciton' sets exciton, which this command"):
        config_from_dict({"material": "mose2_wse2_exciton"}, PhononsConfig)


def test_material_defaults_refuses_unknown():
    with pytest.raises(ConfigError, match="unknown material 'x'"):
        material_defaults("x")
    assert material_defaults("wse2_ws2")["moire_potential.a_M"] == 8.0


@pytest.mark.parametrize("config", PHONON_CONFIGS, ids=lambda p: p.stem)
def test_shipped_phonon_configs_keep_their_numbers(config):
    """The numbers the configs spelled out before the table (same literature values)."""
    cfg = load_config(config, PhononsConfig)
    mp = cfg.moire_potential
    if config.stem.startswith("wse2_ws2"):
        assert cfg.material == "wse2_ws2"
        expected_V = 1.0 if "weak_moire" in config.stem else 15.0  # the deliberately shallow config
        assert (mp.a_M, mp.V, mp.psi_deg, mp.carrier, cfg.mass) == (8.0, expected_V, 45.0, "hole", 0.45)
    else:
        assert cfg.material == "mose2_wse2"
        assert (mp.a_M, mp.V, mp.psi_deg, mp.carrier, cfg.mass) == (9.40, 6.6, -94.0, "hole", 0.35)
    assert (cfg.dielectric.epsilon_top, cfg.dielectric.epsilon_bottom) == (5.1, 5.1)
    if cfg.interaction.kind == "keldysh":
        assert cfg.interaction.r0 == 4.511
    if cfg.interaction.kind == "dual-gate":
        assert cfg.interaction.d_g == 20.0


def test_shipped_melt_configs_keep_their_numbers():
    hole, exciton = (load_config(p, MeltConfig) for p in sorted(MELT_CONFIGS, key=lambda p: "exciton" in p.name))
    assert (hole.moire_potential.a_M, hole.moire_potential.V, hole.mass, hole.interaction.r0) == (8.0, 15.0, 0.45, 4.511)
    assert exciton.exciton.m_e == 0.50 and exciton.exciton.m_h == 0.36 and exciton.interaction.d == 0.65
    assert exciton.moire_potential.a_M == 10.0 and exciton.dielectric.kappa == 5.1
    assert len(hole.sweep_points()) == 2 * 7 * 3 and len(exciton.sweep_points()) == 2 * 5 * 3


def test_moire_periods_follow_from_the_lattice_constants():
    a_wse2, a_ws2 = LATTICE_CONSTANT_NM["WSe2"], LATTICE_CONSTANT_NM["WS2"]
    assert aligned_moire_period(a_wse2, a_ws2) == pytest.approx(8.0218, abs=1e-3)
    assert MATERIALS["wse2_ws2"].values["moire_potential.a_M"].value == pytest.approx(
        aligned_moire_period(a_wse2, a_ws2), rel=5e-3)
    assert twisted_moire_period(a_wse2, 2.0) == pytest.approx(0.3282 / (2 * 3.141592653589793 / 180))
    assert MATERIALS["mose2_wse2"].values["moire_potential.a_M"].value == pytest.approx(
        twisted_moire_period(a_wse2, 2.0), rel=1e-3)
    # a 0.1 % mismatch at 2° barely moves it: a/√(δ² + θ²)
    assert twisted_moire_period(a_wse2, 2.0, 1e-3) == pytest.approx(twisted_moire_period(a_wse2, 2.0), rel=1e-3)
    with pytest.raises(ValueError):
        aligned_moire_period(0.3, 0.3)
    with pytest.raises(ValueError):
        twisted_moire_period(0.3, 0.0)


def test_every_value_has_a_source_and_a_check():
    for mat in MATERIALS.values():
        assert mat.values, mat.name
        for key, v in mat.values.items():
            assert v.source.strip() and v.checked.strip(), (mat.name, key)
