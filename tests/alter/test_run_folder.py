"""The run folder under faults (issue 15 items 9, 10): train_log.jsonl as training goes, the lock on
--out, SIGTERM, the launcher's death."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from alter_cli import runs
from alter_cli.cli import app

from .conftest import stage1_dict

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
