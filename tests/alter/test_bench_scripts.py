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
    ("compare_stage1_steps.sh", {"MIX": "squad"}, "error: MIX must be bbc or lexicon, got 'squad'"),
    ("compare_gate_input.sh", {"VARIANT": "hidden"},
     "error: VARIANT must read name:key=value[,key=value], got 'hidden'"),
    ("compare_gate_input.sh", {"VARIANT": "a/b:mta.gate=pooled"},
     "error: VARIANT's name must be letters, digits, '.' or '_', got 'a/b'"),
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


_FAKE_ALTER = """#!/usr/bin/env python3
# records its arguments; an eval writes a comparison.csv with one macro average per compare source
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(args) + "\\n")
out = args[args.index("--out") + 1]
os.makedirs(out, exist_ok=True)
if args[0] == "eval":
    sets = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("--"))
    names = [os.path.basename(sets["checkpoint"])]
    names += [os.path.basename(x.strip()) for x in sets["compare"].strip("[]").split(",")]
    with open(os.path.join(out, "comparison.csv"), "w") as f:
        f.write("task,kind," + ",".join(names) + "\\n")
        f.write("macro_average,," + ",".join(str((i + 1) / 10) for i in range(len(names))) + "\\n")
"""


def _fake_alter(tmp_path: Path, finished: tuple[str, ...]) -> tuple[Path, dict]:
    """Finished run folders (.done) under ROOT and a fake alter recording its calls: (ROOT, env)."""
    root = tmp_path / "out"
    for run in finished:
        (root / run).mkdir(parents=True)
        (root / run / ".done").touch()
    fake = tmp_path / "alter"
    fake.write_text(_FAKE_ALTER)
    fake.chmod(0o755)
    return root, dict(SEEDS="1", ALTER=str(fake), PY="python3", FAKE_LOG=str(tmp_path / "calls.txt"))


def test_gate_input_variant_overrides_reach_stage2_and_scale_with_the_learning_rate(tmp_path):
    root, env = _fake_alter(tmp_path, ("stage1-hydra_lora-lr6.0e-3-seed1", "stage2-hydra_lora-lr6.0e-3-bias-seed1"))
    log = Path(env["FAKE_LOG"])
    proc = _run("compare_gate_input.sh", tmp_path, **env, VARIANT="glr10:mta.gate_input=hidden,mta.gate_learning_rate=10x")
    assert proc.returncode == 0, proc.stderr
    train, ev = log.read_text().splitlines()
    assert train.startswith(f"train-stage2 configs/alter/lexicon-compare-stage2.yaml "
                            f"--out {root}/stage2-hydra_lora-lr6.0e-3-bias-glr10-seed1 ")
    assert f"stage1={root}/stage1-hydra_lora-lr6.0e-3-seed1" in train.split()
    assert "mta.gate_input=hidden" in train.split() and "mta.gate_learning_rate=0.06" in train.split()
    assert "train.max_steps=80" in train.split()  # K=2: 2 x 40 stage-2 steps
    assert f"--out {root}/val-glr10 " in ev and f"data.eval={root}/data/validation.jsonl" in ev.split()
    assert (root / "val-glr10" / "macro.txt").read_text().splitlines()[1:] == [
        "shipped_seed1=0.1", "glr10_seed1=0.2"]


def test_stage1_steps_trains_stage1_for_the_whole_budget_and_scores_validation(tmp_path):
    root, env = _fake_alter(tmp_path, ("stage2-hydra_lora-lr6.0e-3-bias-seed1",
                                       "stage2-hydra_lora-lr6.0e-3-bias-tune_experts-seed1"))
    log = Path(env["FAKE_LOG"])
    missing = _run("compare_stage1_steps.sh", tmp_path, SEEDS="1", VARIANTS="nope")
    assert missing.returncode == 2
    assert missing.stderr == (f"error: {root}/stage2-hydra_lora-lr6.0e-3-bias-nope-seed1 is not finished (run "
                              "bench/compare_budget.sh and bench/compare_gate_input.sh first)\n")
    proc = _run("compare_stage1_steps.sh", tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    train, ev = log.read_text().splitlines()
    assert train.startswith(f"train-stage1 configs/alter/lexicon-compare-train.yaml "
                            f"--out {root}/stage1-hydra_lora-lr6.0e-3-steps240-seed1 ")
    assert "train.max_steps=240" in train.split()  # K=2: 160 + 80, the whole stage-1 + stage-2 budget
    assert "mta.selector_learning_rate=0.03" in train.split()  # as every stage 1 of the comparison
    assert f"--out {root}/val-stage1-steps240 " in ev and f"data.eval={root}/data/validation.jsonl" in ev.split()
    assert (root / "val-stage1-steps240" / "macro.txt").read_text().splitlines()[1:] == [
        "shipped_seed1=0.1", "stage1_steps240_seed1=0.2", "tune_experts_seed1=0.3"]
    assert _run("compare_stage1_steps.sh", tmp_path, **env).returncode == 0  # resumes: nothing is rerun
    assert len(log.read_text().splitlines()) == 2


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
