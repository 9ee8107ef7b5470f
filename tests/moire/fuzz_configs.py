"""Hostile-input generator for `moire` configs (issue 15): mutations of the shipped configs given as
``--set key=<raw YAML>`` overrides, and :func:`prepare`, which runs every step the CLI takes before
the heavy computation (read + validate the config, build each sweep point's model, the band path
and mesh, the harmonic check, one dynamical matrix) behind the CLI's own ``user_errors`` wrapper, so
a user error becomes the same one line + exit code 2.

Used by tests/moire/test_fuzz_configs.py (≥ 1,000 inputs, in-process) and, as a script, for a
bigger run through the real command line:
``python -m tests.moire.fuzz_configs N OUT_DIR`` (N full runs with small meshes; prints the counts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from hypothesis import strategies as st

from moire_cli import cli, crystals, dynamics
from moire_cli.band_path import band_path
from moire_cli.config import SWEEP_ALIASES, ConfigError, MeltConfig, PhononsConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
PHONON_CONFIGS = sorted((ROOT / "configs" / "moire").glob("*.yaml"))
MELT_CONFIGS = sorted((ROOT / "configs" / "moire" / "melt").glob("*.yaml"))

KEYS = [
    "crystal.name", "crystal.cell", "crystal.basis", "moire_potential.a_M", "moire_potential.V",
    "moire_potential.psi_deg", "moire_potential.carrier", "moire_potential.harmonic_only",
    "moire_potential.hbar_omega_M", "moire_potential.trap_scale", "mass", "dielectric.epsilon_top",
    "dielectric.epsilon_bottom", "interaction.kind", "interaction.r0", "interaction.d_g", "ewald.eta",
    "ewald.tolerance", "ewald.short_range_tolerance", "ewald.short_range_cutoff", "moire_potential",
    "crystal", "interaction", "nonsense", "moire_potential.depth",
]
PHONON_KEYS = ["relax", "path.points", "path.n_per_segment", "mesh.size", "mesh.smearing_meV", "mesh.n_energies",
               "output.frequency_unit", "output.plot", "chirality.magnetic_field_T", "chirality.charge_sign",
               "chirality.temperature_K", "chirality.berry_band", "path", "mesh"]
MELT_KEYS = ["interaction.d", "interaction.r0_1", "interaction.r0_2", "exciton.m_e", "exciton.m_h", "exciton",
             "melt.temperatures", "melt.lindemann_critical", "melt.mesh.start", "melt.mesh.max",
             "melt.mesh.tolerance", "melt.relax", "melt.t_max", "output.phase_temperature", "output.plot",
             "sweep", *(f"sweep.{k}" for k in SWEEP_ALIASES),
             "sweep.melt.t_max", "sweep.melt.mesh.max", "sweep.crystal.name", "sweep.moire_potential.trap_scale",
             "sweep.ewald.eta", "sweep.unknown", "sweep.sweep.a_M"]
VALUES = [
    # numbers at and past every edge
    "0", "-1", "1", "2", "3.5", "12", "0.3", "1e5", "1e-5", "1e300", "-1e300", "1e308", "1e-308", "5e-324",
    ".nan", ".inf", "-.inf", "100000", "1000000000000", "9" * 5000, "0x1f", "0o17", "010", "1_000",
    # YAML 1.1 forms and other scalars
    "true", "false", "yes", "no", "on", "off", "~", "null", "''", "abc", "1:30", "2020-01-01", "G",
    # lists, ranges, nesting
    "[]", "[true, 6]", "[1, 2]", "[6, 6]", "[2, 3]", "[1e300, 0]", "[0]", "[0, 0]", "[1, 0, 0]", "[1.0, 0.5]",
    "[[0, 0]]", "[[0, 0], [1000, 0]]", "[[0, 0], [0.5, 0.8660254037844386]]", "[[1, 0], [0, 1]]",
    "[[7.0, 3.4641016151377544], [8.5, 4.330127018922193]]", "[[1, 0], [2, 0]]", "[[1.5, 0.8660254037844386], [0, 1.7320508075688772]]",
    "[G, M, K, G]", "[G, '|', K, G]", "[{label: A, frac: [0, 0]}, {label: B, frac: [1e300, 0]}]",
    "[{label: A, frac: [0, 0]}, {label: B, frac: [0.5, 0]}]", "[1, 10000]", "[true]", "[coulomb, keldysh]",
    "[triangular, honeycomb_gwc]", "[4.0, 8.0]", "[0.5, 12.0]",
    "{}", "{a: 1}", "{start: 0, stop: 1e308, num: 100000}", "{start: 1, stop: 10, num: 3, log: true}",
    "{start: 0, stop: 30, num: 4}", "{start: -1, stop: 1, num: 3, log: true}",
    "[" * 80 + "]" * 80, "&a [1, *a]",
    # names
    "triangular", "honeycomb_gwc", "zigzag_stripe", "linear_stripe", "triangular_gwc", "kagome",
    "coulomb", "keldysh", "dual-gate", "dipole-bare", "dipole-twosheet", "dipole-lumped", "hole", "electron",
    "THz", "cm-1", "meV", "furlongs",
]


#: Plausible values per key (half of the mutations), so that many mutated configs are valid.
BENIGN = {
    "moire_potential.a_M": ["6", "10", "20.5"], "moire_potential.V": ["0", "5", "20"],
    "moire_potential.psi_deg": ["0", "45", "60", "180", "-30"], "moire_potential.carrier": ["electron", "hole"],
    "moire_potential.hbar_omega_M": ["3", "10"], "mass": ["0.4", "1.0"], "dielectric.epsilon_top": ["3", "10"],
    "dielectric.epsilon_bottom": ["1", "7"], "interaction.kind": ["coulomb", "keldysh", "dual-gate"],
    "interaction.r0": ["2", "5"], "interaction.d_g": ["5", "20"], "ewald.eta": ["0.2"],
    "path.n_per_segment": ["5", "8"], "mesh.size": ["[4, 4]", "[5, 3]"], "chirality.magnetic_field_T": ["10", "-5"],
    "chirality.temperature_K": ["10"], "output.frequency_unit": ["THz", "cm-1"], "relax": ["false"],
    "interaction.d": ["0.5", "1.0"], "interaction.r0_1": ["0", "3"], "interaction.r0_2": ["4"],
    "exciton.m_e": ["0.4"], "exciton.m_h": ["0.5"], "melt.temperatures": ["[0, 5, 10]", "{start: 0, stop: 50, num: 6}"],
    "melt.lindemann_critical": ["0.2", "0.15"], "melt.t_max": ["500"], "melt.relax": ["false"],
    "sweep.a_M": ["[6, 12]", "{start: 5, stop: 9, num: 3}"], "sweep.V": ["[1, 10]", "[0, 5]"],
    "sweep.mass": ["[0.4, 0.8]"], "sweep.epsilon": ["[3, 6]"], "sweep.lindemann_critical": ["[0.2, 0.3]"],
    "sweep.psi_deg": ["[0, 90]"], "sweep": ["{}", "{a_M: [7, 9]}"],
}


@st.composite
def hostile_input(draw) -> tuple[str, Path, list[str]]:
    """(command, shipped config, overrides): 1–4 ``--set key=<raw YAML>`` mutations."""
    command = draw(st.sampled_from(["phonons", "melt"]))
    config = draw(st.sampled_from(PHONON_CONFIGS if command == "phonons" else MELT_CONFIGS))
    keys = KEYS + (PHONON_KEYS if command == "phonons" else MELT_KEYS)
    n = draw(st.integers(1, 3))
    sets = []
    for _ in range(n):
        key = draw(st.sampled_from(keys))
        pool = BENIGN.get(key, []) if draw(st.booleans()) else []
        sets.append(f"{key}={draw(st.sampled_from(pool or VALUES))}")
    return command, config, sets


CHEAP = {"phonons": ["mesh.size=[3,3]", "path.n_per_segment=3", "output.plot=false"],
         "melt": ["melt.mesh.start=4", "melt.mesh.max=4", "output.plot=false"]}


def _check_model(model) -> None:
    """One Ewald-summed dynamical matrix and the nearest-neighbour distance: finite, or a bug."""
    d = dynamics.dynamical_matrix(model, np.array([[0.01, 0.02]]) / model.crystal.nearest_neighbour_distance)
    if not np.all(np.isfinite(d)):
        raise FloatingPointError("non-finite dynamical matrix")


@cli.user_errors
def _prepare(command: str, config: Path, sets: list[str]) -> None:
    if command == "phonons":
        cfg = load_config(config, PhononsConfig, sets)
        model = cfg.build_model()
        if model.potential is not None:
            model.potential.harmonic_warning(cfg.mass)
        try:
            band_path(model.crystal, cfg.path.spec(), cfg.path.n_per_segment)
        except ValueError as err:  # as phonon_run.run_phonons turns it into a user error
            raise ConfigError(f"config: path.points: {err}") from None
        crystals.monkhorst_pack(model.crystal, cfg.mesh.size)
        _check_model(model)
    else:
        cfg = load_config(config, MeltConfig, sets)
        points = cfg.sweep_points()
        for _, p in (points[0], points[-1]):
            model = p.build_model()
            if model.potential is not None:
                model.potential.harmonic_warning(p.effective_mass)
            _check_model(model)


def prepare(command: str, config: Path, sets: list[str]) -> tuple[int, str]:
    """(exit code, message) of the pre-computation steps: 0 and '' when the input is accepted,
    2 and the one-line error otherwise. Any other exception propagates (a bug: a traceback)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            _prepare(command, config, sets)
        except typer.Exit as exit_:
            return exit_.exit_code, err.getvalue()
    return 0, err.getvalue()


def _full_run(command: str, config: Path, sets: list[str], out: Path) -> tuple[int, bool, str]:
    """One real CLI run in a subprocess with cheap numerics: (exit code, traceback seen, stderr)."""
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "moire_cli", command, str(config), "--out", str(out)]
    for s in CHEAP[command] + sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.returncode, "Traceback" in proc.stderr or "Error" in proc.stderr.split("moire: error:")[0], proc.stderr


def main() -> None:  # pragma: no cover - the bigger fuzz run of the note
    import collections
    import random
    import sys
    import tempfile

    n, where = int(sys.argv[1]), Path(sys.argv[2])
    where.mkdir(parents=True, exist_ok=True)
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 15)
    counts = collections.Counter()
    for i in range(n):
        command = rng.choice(["phonons", "melt"])
        config = rng.choice(PHONON_CONFIGS if command == "phonons" else MELT_CONFIGS)
        keys = KEYS + (PHONON_KEYS if command == "phonons" else MELT_KEYS)
        sets = []
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(keys)
            pool = BENIGN.get(key, []) if rng.random() < 0.5 else []
            sets.append(f"{key}={rng.choice(pool or VALUES)}")
        with tempfile.TemporaryDirectory(dir=where) as tmp:
            rc, tb, err = _full_run(command, config, sets, Path(tmp) / "out")
            leftovers = [p.name for p in Path(tmp).iterdir() if p.name != "out"]
        counts["inputs"] += 1
        counts[f"exit {rc}" if rc in (0, 2) else "other"] += 1
        counts["tracebacks"] += tb
        multi = rc == 2 and len(err.strip().splitlines()) > 1
        counts["multi-line errors"] += multi
        counts["leftover tmp"] += bool(leftovers)
        if tb or rc not in (0, 2) or multi or leftovers:
            print(f"[{i}] rc={rc} {command} {config.name} {sets}\n{err[-1500:]}", flush=True)
    print(dict(counts), flush=True)


if __name__ == "__main__":
    main()
