"""The comparison shell scripts of bench/: they parse, refuse bad settings in one line with exit 2
before any run starts, and the helpers every comparison's choices go through (compare_lib.sh) do what
their comments say: ties keep the earlier choice, absolute and relative ROOTs, the -lr suffix."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "bench").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_bench_script_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def _run(script: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    # ALTER=false: should a refusal be missed, the first alter call fails instead of training
    full = {**os.environ, "ALTER": "false", "ROOT": str(tmp_path / "out"), **env}
    return subprocess.run(["bash", str(ROOT / "bench" / script)], capture_output=True, text=True, env=full,
                          timeout=60, cwd=ROOT)


@pytest.mark.parametrize(("script", "env", "message"), [
    ("compare_budget.sh", {"MIX": "squad"}, "error: MIX must be bbc or lexicon, got 'squad'"),
    ("compare_budget.sh", {"K": "0"}, "error: K must be a positive integer, got '0'"),
    ("compare_budget.sh", {"K": "1.5"}, "error: K must be a positive integer, got '1.5'"),
    ("compare_lora_total.sh", {"MIX": "squad"}, "error: MIX must be bbc or lexicon, got 'squad'"),
    ("compare_stage2_variants.sh", {"MIX": "squad"}, "error: MIX must be bbc or lexicon, got 'squad'"),
    ("compare_gate_input.sh", {"MIX": "squad"}, "error: MIX must be bbc or lexicon, got 'squad'"),
    ("compare_gate_input.sh", {"K": "x"}, "error: K must be a positive integer, got 'x'"),
])
def test_bad_settings_are_refused_in_one_line(tmp_path, script, env, message):
    proc = _run(script, tmp_path, **env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == message + "\n"
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_budget_refuses_a_choices_file_without_a_choice(tmp_path):
    choices = tmp_path / "choices.txt"
    choices.write_text("expert=hydra_lora\nmta_learning_rate=6.0e-3\nlora_learning_rate=6.0e-3\n")  # no gate_task
    proc = _run("compare_budget.sh", tmp_path, CHOICES=str(choices))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (f"error: {choices} lacks one of expert, mta_learning_rate, "
                                            "lora_learning_rate, gate_task")
    assert not (tmp_path / "out" / "data").exists()


def test_gate_input_needs_the_finished_comparison_runs(tmp_path):
    proc = _run("compare_gate_input.sh", tmp_path, SEEDS="1")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: {tmp_path / 'out'} lacks the finished stage-1/stage-2 runs of seed 1 "
                           "(run bench/compare_budget.sh first)\n")
    assert list((tmp_path / "out").iterdir()) == []  # no stage-2 run was started


def _lib(tmp_path: Path, root: str, body: str) -> str:
    script = f'set -euo pipefail; PY=python3; LR0=2.0e-3; ROOT="{root}"; D=$ROOT/data\n' \
             f'. "{ROOT}/bench/compare_lib.sh"\n{body}'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_compare_lib_pick_keeps_the_earlier_choice_on_ties(tmp_path):
    out = _lib(tmp_path, "r", 'pick 0.554760 0.554760 bias none; pick 0.5 0.5001 bias none; '
                              'pick 0.6 0.2 a b')
    assert out.split() == ["bias", "none", "a"]


def test_compare_lib_paths_and_suffixes(tmp_path):
    out = _lib(tmp_path, "rel/x", 'echo "$R"; abspath /abs/y; sfx 2.0e-3; echo "[$(sfx 2.0e-3)]"; sfx 6.0e-3')
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path}/rel/x"  # a relative ROOT is joined to the working folder ...
    assert lines[1] == "/abs/y"  # ... an absolute one is kept
    assert lines[2:] == ["", "[]", "-lr6.0e-3"]  # LR0's runs carry no suffix
    assert (tmp_path / "rel" / "x").is_dir()


def test_compare_lib_choice_and_macro_read_their_files(tmp_path):
    (tmp_path / "c.txt").write_text("# comment\nexpert=hydra_lora\nexpert_lora=0.499734\n")
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "comparison.csv").write_text("task,kind,a,b\ntopic,classify,0.9,0.8\nmacro_average,,0.531343,0.5\n")
    out = _lib(tmp_path, "r", f'CHOICES={tmp_path}/c.txt; choice expert; choice expert_lora; '
                              f'echo "[$(choice gate_task)]"; macro {ev} a; macro {ev} b')
    assert out.splitlines() == ["hydra_lora", "0.499734", "[]", "0.531343", "0.5"]
