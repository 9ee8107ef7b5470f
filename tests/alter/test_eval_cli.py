"""`alter train-stage2`, `alter eval`, `alter predict` end to end on the tiny Llama-style model."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alter_cli.cli import app
from alter_cli.config import AlterConfig
from alter_cli.data import TaskRegistry, parse_jsonl
from alter_cli.sources.synthetic import make_jsonl
from alter_cli.train import run_training

from .conftest import one_line_error as _one_line_error
from .conftest import stage1_dict

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
GEN = ["--max-new-tokens", "5", "--batch-size", "4"]


@pytest.fixture(scope="module")
def runs(tiny_llama_dir, synthetic_jsonl, tmp_path_factory) -> dict[str, Path]:
    """A stage-1 checkpoint (trained in-process) and a stage-2 run through the CLI, with evaluation
    at the end of training."""
    root = tmp_path_factory.mktemp("runs")
    cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=4, learning_rate=3e-2))
    registry = TaskRegistry.from_config(cfg.tasks)
    run_training(cfg, 1, train_examples=parse_jsonl(synthetic_jsonl.read_text(), "t", registry),
                 out_dir=root / "s1")
    eval_data = root / "eval.jsonl"
    eval_data.write_text(make_jsonl(2, seed=11))
    s2 = {"stage1": "s1", "data": {"train": str(synthetic_jsonl), "eval": "eval.jsonl", "max_length": 48,
                                   "max_target_length": 12},
          "mta": {"num_shared_experts": 2, "gate": "token"},
          "train": {"max_steps": 2, "batch_size": 4, "learning_rate": 3e-2, "warmup_steps": 0, "log_every": 1},
          "generation": {"batch_size": 4, "max_new_tokens": 5}}
    (root / "s2.yaml").write_text(yaml.safe_dump(s2))  # relative paths: resolved against the YAML's folder
    res = runner.invoke(app, ["train-stage2", str(root / "s2.yaml"), "--out", str(root / "s2")])
    assert res.exit_code == 0, res.output
    assert "gate_0=" in res.stdout and "eval: macro average" in res.stdout
    return {"root": root, "s1": root / "s1", "s2": root / "s2", "eval": eval_data}


def test_train_stage2_outputs_and_gate_log(runs):
    s2 = runs["s2"]
    meta = json.loads((s2 / "adapter_config.json").read_text())
    assert meta["stage"] == 2 and meta["has_shared_experts"] and meta["mta_config"]["num_shared_experts"] == 2
    log = [json.loads(x) for x in (s2 / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    seen = set().union(*(r["task_gate"] for r in log))  # tasks of the batches in each log window
    assert seen and seen <= {"copy", "reverse", "parity", "match"}
    assert all(sum(w) == pytest.approx(1.0, abs=1e-5) for r in log for w in r["task_gate"].values())
    for name in ("metrics.json", "metrics.csv", "predictions.jsonl"):
        assert (s2 / "eval" / name).is_file()


def test_eval_in_fresh_process_equals_eval_at_end_of_training(runs, tmp_path):
    out = tmp_path / "e"
    proc = subprocess.run(
        [sys.executable, "-m", "alter_cli", "eval", "--checkpoint", str(runs["s2"]), "--data", str(runs["eval"]),
         "--out", str(out), *GEN],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    trained = json.loads((runs["s2"] / "eval" / "metrics.json").read_text())
    fresh = json.loads((out / "metrics.json").read_text())
    assert fresh["tasks"] == trained["tasks"] and fresh["macro_average"] == trained["macro_average"]
    assert (out / "predictions.jsonl").read_text() == (runs["s2"] / "eval" / "predictions.jsonl").read_text()
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and all(p["prediction"] for p in preds)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["task"] for r in rows] == ["copy", "reverse", "parity", "match", "macro_average"]
    assert float(rows[-1]["score"]) == pytest.approx(fresh["macro_average"], abs=1e-6)
    assert (out / "resolved_config.yaml").is_file() and "macro_average" in proc.stdout


def test_eval_compare_checkpoints_and_zero_shot(runs, tmp_path):
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["eval", "--checkpoint", str(runs["s1"]), "--compare", str(runs["s2"]), "--zero-shot",
                              "--data", str(runs["eval"]), "--out", str(out), *GEN])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert list(rows[0]) == ["task", "kind", "s1", "s2", "zero-shot"]
    assert [r["task"] for r in rows][-1] == "macro_average"
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary) == {"s1", "s2", "zero-shot"}
    for label in summary:
        assert float(rows[-1][label]) == pytest.approx(summary[label]["macro_average"], abs=1e-6)
        assert (out / label / "predictions.jsonl").is_file()
    assert summary["zero-shot"]["source"]["source"] == "zero-shot"
    ci = list(csv.DictReader((out / "comparison_ci.csv").open()))  # s1 minus each other source
    assert list(ci[0]) == ["source", "versus", "task", "difference", "ci_low", "ci_high"]
    assert [(r["source"], r["versus"]) for r in ci] == [("s1", "s2")] * 5 + [("s1", "zero-shot")] * 5
    for r in ci:
        if r["task"] == "macro_average":
            expected = summary["s1"]["macro_average"] - summary[r["versus"]]["macro_average"]
        else:
            expected = summary["s1"]["tasks"][r["task"]]["score"] - summary[r["versus"]]["tasks"][r["task"]]["score"]
        assert float(r["difference"]) == pytest.approx(expected, abs=1e-6)
        assert float(r["ci_low"]) <= float(r["difference"]) + 1e-9 and float(r["difference"]) <= float(r["ci_high"]) + 1e-9
    res = runner.invoke(app, ["eval", "--checkpoint", str(runs["s1"]), "--data", str(runs["eval"]), "--out", str(out)])
    _one_line_error(res, "exists", "--overwrite")


def test_predict_jsonl_and_plain_text(runs, tmp_path):
    lines = runs["eval"].read_text().splitlines()[:3]
    res = runner.invoke(app, ["predict", str(runs["s2"]), "--max-new-tokens", "4"], input="\n".join(lines) + "\n")
    assert res.exit_code == 0, res.output
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert [o["input"] for o in out] == [json.loads(x)["input"] for x in lines]
    assert all("prediction" in o for o in out) and "matched_label" in out[2]  # parity is a classify task
    src = tmp_path / "in.txt"
    src.write_text("abc\nbcd\n")
    res = runner.invoke(app, ["predict", str(runs["s2"]), str(src), "--task", "copy", "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["type"] for x in res.stdout.splitlines()] == ["copy", "copy"]
    _one_line_error(runner.invoke(app, ["predict", str(runs["s2"]), str(src)]), "malformed JSON", "--task")
    _one_line_error(runner.invoke(app, ["predict", str(runs["s2"]), str(src), "--task", "nope"]), "unknown task")


def test_corrupt_or_mismatched_checkpoints_exit_2(runs, tiny_t5_dir, tmp_path):
    data, out = str(runs["eval"]), str(tmp_path / "o")
    # other base model: the checkpoint names a model whose config differs from the one it was trained on
    other = tmp_path / "other-base"
    shutil.copytree(runs["s2"], other, ignore=shutil.ignore_patterns("state", "eval"))
    meta = json.loads((other / "adapter_config.json").read_text())
    meta["base_model"]["name"] = str(tiny_t5_dir)
    (other / "adapter_config.json").write_text(json.dumps(meta))
    _one_line_error(runner.invoke(app, ["eval", "-c", str(other), "--data", data, "--out", out]),
                    "adapter_config.json does not belong to step")  # the manifest names the edit first
    (other / "checkpoint_manifest.json").unlink()  # as a checkpoint of before manifests
    _one_line_error(runner.invoke(app, ["eval", "-c", str(other), "--data", data, "--out", out]), "config hash")
    # other task registry: data of tasks the checkpoint does not know, or a config declaring other tasks
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps({"input": "x", "target": "y", "type": "summarise"}) + "\n")
    _one_line_error(runner.invoke(app, ["eval", "-c", str(runs["s2"]), "--data", str(foreign), "--out", out]),
                    "unknown task 'summarise'")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"checkpoint": str(runs["s2"]), "data": {"eval": data},
                                   "tasks": [{"name": "copy", "kind": "generate"}]}))
    _one_line_error(runner.invoke(app, ["eval", str(cfg), "--out", out]), "task registry")
    # corrupt weights / config
    bad = tmp_path / "bad"
    shutil.copytree(runs["s2"], bad, ignore=shutil.ignore_patterns("state", "eval"))
    (bad / "adapter_model.safetensors").write_bytes(b"not safetensors")
    (bad / "checkpoint_manifest.json").unlink()  # the loader's own checks (a checkpoint of before manifests)
    _one_line_error(runner.invoke(app, ["eval", "-c", str(bad), "--data", data, "--out", out]), "safetensors")
    _one_line_error(runner.invoke(app, ["predict", str(bad), "--task", "copy"], input="abc\n"), "safetensors")
    (bad / "adapter_config.json").write_text("{oops")
    s2cfg = tmp_path / "s2.yaml"
    s2cfg.write_text(yaml.safe_dump({"stage1": str(bad), "data": {"train": data}}))
    _one_line_error(runner.invoke(app, ["train-stage2", str(s2cfg), "--out", out]), "not valid JSON")
    # stage 2 must start from a stage-1 checkpoint
    s2cfg.write_text(yaml.safe_dump({"stage1": str(runs["s2"]), "data": {"train": data}}))
    _one_line_error(runner.invoke(app, ["train-stage2", str(s2cfg), "--out", out]), "stage-1 checkpoint")
    s2cfg.write_text(yaml.safe_dump({"stage1": str(runs["s1"]), "data": {"train": data},
                                     "mta": {"num_experts": 3}}))
    _one_line_error(runner.invoke(app, ["train-stage2", str(s2cfg), "--out", out]), "mta.num_experts", "unknown key")
    assert not Path(out).exists()  # no half-written output


def test_shipped_stage2_and_eval_configs_load():
    from alter_cli.cli import _eval_config, load_config
    from alter_cli.config import EvalConfig, Stage2Config

    cfg_dir = ROOT / "configs" / "alter"
    s2 = load_config(cfg_dir / "stage2.yaml", [], Stage2Config)
    assert isinstance(s2, Stage2Config) and s2.mta.num_shared_experts == 2 and s2.mta.gate == "token"
    ev = _eval_config(cfg_dir / "eval.yaml", ["generation.num_beams=2"], {})
    assert isinstance(ev, EvalConfig) and ev.generation.num_beams == 2
    assert ev.checkpoint == str(cfg_dir / "../../runs/alter/stage2") and ev.compare[-1] == "zero-shot"
    s1 = load_config(cfg_dir / "stage1.yaml", [])
    examples = parse_jsonl(Path(ev.data.eval).read_text(), ev.data.eval, TaskRegistry.from_config(s1.tasks))
    assert {e.task for e in examples} == {t.name for t in s1.tasks}


@pytest.mark.slow
def test_two_process_eval_gathers_the_same_predictions(runs, tmp_path):
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # batch 3 over 8 samples and 2 processes: the last batch is padded, gather_for_metrics drops the repeats
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", "alter_cli", "eval", "-c", str(runs["s2"]), "--data", str(runs["eval"]), "--out", str(out),
           "--max-new-tokens", "5", "--batch-size", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # outputs written by the main process only
    assert (out / "predictions.jsonl").read_text() == (runs["s2"] / "eval" / "predictions.jsonl").read_text()
