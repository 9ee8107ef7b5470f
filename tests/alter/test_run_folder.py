"""The run folder under faults (issue 15 items 9, 10): train_log.jsonl as training goes, the lock on
--out, SIGTERM, the launcher's death."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alter_cli import runs
from alter_cli.cli import app

from .conftest import one_line_error, stage1_dict

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _config(tmp_path: Path, model_dir: Path, data: Path, **train) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(stage1_dict(model_dir, data, **train)))
    return p


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]


def test_train_log_is_written_as_training_goes_and_cut_back_on_resume(tiny_llama_dir, synthetic_jsonl, tmp_path,
                                                                        monkeypatch):
    """train_log.jsonl used to be written only at the end: after Ctrl-C plus --resume it started at the
    resume step."""
    cfg = _config(tmp_path, tiny_llama_dir, synthetic_jsonl, max_steps=6, log_every=1, save_every=2)
    out = tmp_path / "run"
    real_call = runs.StepReporter.__call__
    seen_on_disk = []

    def interrupt_at_5(self, rec):
        real_call(self, rec)
        if rec.get("log"):
            seen_on_disk.append(_steps(out))  # flushed as it goes: readable while training runs
        if rec["step"] == 5:
            raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(runs.StepReporter, "__call__", interrupt_at_5)
        res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out)])
    assert res.exit_code == 130, res.output
    assert "last checkpoint: step 4" in res.stderr
    assert seen_on_disk == [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4, 5]]
    assert _steps(out) == [1, 2, 3, 4, 5]
    with (out / "train_log.jsonl").open("a") as f:  # a kill in the middle of a line
        f.write('{"step": 6, "lo')
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert _steps(out) == [1, 2, 3, 4, 5, 6]  # step 5 trained again from the checkpoint of step 4: once
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out), "--resume"])  # nothing left to do
    assert res.exit_code == 0, res.output
    assert _steps(out) == [1, 2, 3, 4, 5, 6]


def test_a_second_run_on_the_same_folder_is_refused_in_one_line(tiny_llama_dir, synthetic_jsonl, tmp_path):
    """Two --resume runs on one folder used to race (one died with a traceback)."""
    from alter_cli.outdir import OutLock

    cfg = _config(tmp_path, tiny_llama_dir, synthetic_jsonl, max_steps=2)
    out = tmp_path / "run"
    assert runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    held = OutLock(out).acquire()  # what the other run holds while it trains
    try:
        for flags in (["--resume"], ["--overwrite"]):
            res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out), *flags, "--max-steps", "3"])
            one_line_error(res, "is in use by another alter run", f"pid {os.getpid()}")
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched
    finally:
        held.release()
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out), "--resume", "--max-steps", "3"])
    assert res.exit_code == 0, res.output


def test_sigterm_stops_like_ctrl_c_with_a_checkpoint_of_the_current_step(tiny_llama_dir, synthetic_jsonl, tmp_path,
                                                                        monkeypatch):
    cfg = _config(tmp_path, tiny_llama_dir, synthetic_jsonl, max_steps=6, log_every=1, save_every=0)
    out = tmp_path / "run"
    real_call = runs.StepReporter.__call__

    def term_at_3(self, rec):
        real_call(self, rec)
        if rec["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what a batch scheduler sends

    with monkeypatch.context() as mp:
        mp.setattr(runs.StepReporter, "__call__", term_at_3)
        res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out)])
    assert res.exit_code == 143, res.output
    assert res.stderr.strip() == f"alter: stopped by SIGTERM; last checkpoint: step 3 in {str(out)!r} (continue with --resume)"
    assert json.loads((out / "checkpoint_manifest.json").read_text())["step"] == 3  # written before stopping
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert _steps(out) == [1, 2, 3, 4, 5, 6]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_launcher_is_killed(tiny_llama_dir, synthetic_jsonl, tmp_path):
    """After SIGKILL of `accelerate launch` both workers used to keep running to the end."""
    cfg = _config(tmp_path, tiny_llama_dir, synthetic_jsonl, max_steps=100000, log_every=1, save_every=0)
    out = tmp_path / "ddp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "alter_cli", "train-stage1", str(cfg), "--out", str(out)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not ((out / "train_log.jsonl").is_file() and _steps(out)):
            assert launcher.poll() is None, "the launcher ended early"
            time.sleep(0.5)
        assert _steps(out), "training did not start"
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.5)
        assert not any(_alive(w) for w in workers), "workers outlived their launcher"
    finally:
        launcher.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_overwrite_refuses_what_alter_did_not_write_in_every_command(tmp_path):
    """`alter eval --out DIR --overwrite` used to delete a folder holding unrelated files; the one rule
    (outdir.check_replaceable, the .alter-output marker) now holds for eval, data and training."""
    from alter_cli.outdir import MARKER, OutputFolderError, check_replaceable, output_kind

    cfg = ROOT / "configs" / "alter" / "stage1.yaml"
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    a_link = tmp_path / "link"
    a_link.symlink_to(precious)
    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "a", "target": "a", "type": "copy"}\n')
    commands = {
        "eval": lambda out: ["eval", "--zero-shot", "--model", str(tmp_path / "no-model"), "--data", str(data),
                             "--out", str(out), "--overwrite"],
        "data": lambda out: ["data", "bbc", "--out", str(out), "--overwrite"],
        "train": lambda out: ["train-stage1", str(cfg), "--out", str(out), "--overwrite"],
    }
    for argv in commands.values():
        for target, needle in ((precious, "is not an alter output"), (a_file, "is not a folder"),
                               (a_link, "is not a folder")):
            one_line_error(runner.invoke(app, argv(target)), "--overwrite", needle)
        assert (precious / "thesis.tex").read_text() == "years of work" and a_file.read_text() == "keep"
        assert a_link.is_symlink()
    other = tmp_path / "an-eval"  # an alter output of another kind is not replaced by another command
    other.mkdir()
    (other / MARKER).write_text('{"tool": "alter", "kind": "eval"}')
    (other / "metrics.json").write_text("{}")
    assert output_kind(other) == "eval"
    check_replaceable(other, "eval")
    with pytest.raises(OutputFolderError, match="is an alter eval output, not train"):
        check_replaceable(other, "train")
    one_line_error(runner.invoke(app, commands["train"](other)), "an alter eval output, not train")
