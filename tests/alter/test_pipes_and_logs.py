"""alter in shell pipelines and cron jobs (issue 15 item 15, issue 12 §5), as real processes:
only alter's own lines off a terminal (no FutureWarning, no progress bar), `predict` streams and ends
quietly with exit 0 when its reader goes away, Ctrl-C during start-up is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import stage1_dict

ROOT = Path(__file__).resolve().parents[2]
ALTER = [sys.executable, "-m", "alter_cli"]
OWN_PREFIXES = ("lora baseline", "step ", "stage ", "eval", "wrote ")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default"}  # warnings as a user sees them


@pytest.fixture(scope="module")
def baseline(tiny_llama_dir, synthetic_jsonl, tmp_path_factory) -> Path:
    """A LoRA-baseline run in a subprocess with stdout/stderr to pipes (as under cron)."""
    root = tmp_path_factory.mktemp("cron")
    cfg = root / "c.yaml"
    cfg.write_text(yaml.safe_dump(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=2, log_every=1)))
    res = subprocess.run([*ALTER, "train-baseline", str(cfg), "--out", str(root / "lora")], capture_output=True,
                         text=True, cwd=root, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr
    return root / "lora", res


def test_a_cron_mail_holds_only_alters_own_lines(baseline):
    _, res = baseline
    assert res.stderr == "", res.stderr  # no FutureWarning (is_gradient_checkpointing), no bar, no logging
    lines = res.stdout.splitlines()
    assert lines and all(line.startswith(OWN_PREFIXES) for line in lines), lines
    assert "\r" not in res.stdout


def test_predict_streams_and_a_closed_pipe_is_a_normal_end(baseline):
    ck, _ = baseline
    proc = subprocess.Popen([*ALTER, "predict", str(ck), "--task", "copy", "--batch-size", "1",
                             "--max-new-tokens", "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    try:
        proc.stdin.write(b"abc\n")
        proc.stdin.flush()
        first = proc.stdout.readline()  # arrives while stdin is still open: predictions stream
        assert json.loads(first)["input"] == "abc"
        proc.stdout.close()  # `| head -1`: the reader goes away
        for _ in range(20):
            proc.stdin.write(b"more input\n")
        proc.stdin.close()
        assert proc.wait(timeout=300) == 0
        err = proc.stderr.read().decode()
        assert err == "", err  # no BrokenPipeError, no "Exception ignored", no warning
    finally:
        proc.kill()


def test_ctrl_c_during_start_up_is_one_line(baseline):
    ck, _ = baseline
    # A shell without job control (CI under nohup, `cmd &`, cron) starts us with SIGINT ignored, and the
    # child would inherit that (a user's deliberate choice that alter respects): start it with the default.
    proc = subprocess.Popen([*ALTER, "predict", str(ck), "--task", "copy"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.0)  # importing torch / transformers, or loading the checkpoint
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    text = err.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and text.strip().splitlines() == ["alter: interrupted"], text
