"""`alter train-stage1`: end-to-end on a tiny model, user errors (exit 2, one line), DDP with 2 processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alter_cli.cli import app
from alter_cli.config import AlterConfig, resolve_config

from .conftest import one_line_error as _one_line_error
from .conftest import stage1_dict

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _write_cfg(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


def test_train_stage1_end_to_end_and_output_folder_rules(tiny_llama_dir, synthetic_jsonl, tmp_path):
    cfg = _write_cfg(tmp_path / "c.yaml", stage1_dict(tiny_llama_dir, synthetic_jsonl))
    out = tmp_path / "run"
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out), "--set", "train.max_steps=4"])
    assert res.exit_code == 0, res.output
    assert "step 2/4 loss=" in res.stdout and "alpha_own[copy=" in res.stdout
    for name in ("adapter_model.safetensors", "adapter_config.json", "resolved_config.yaml", "provenance.json",
                 "train_log.jsonl"):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["train"]["max_steps"] == 4
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [2, 4]
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out), "--set", "train.max_steps=4"])
    _one_line_error(res, "exists", "--overwrite")
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(out), "--max-steps", "6", "--resume"])
    assert res.exit_code == 0, res.output
    assert "6 steps" in res.stdout and json.loads((out / "adapter_config.json").read_text())["step"] == 6
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [2, 4, 6]


@pytest.mark.parametrize(
    "mutate,needles",
    [
        (lambda d: d["train"].update(learning_rate=-1), ["train.learning_rate", "greater than 0"]),
        (lambda d: d["mta"].update(expert="mystery"), ["mta.expert"]),
        (lambda d: d.update(bogus=1), ["bogus", "unknown key"]),
        (lambda d: d["mta"].update(task_to_experts={"copy": [9]}), ["expert index 9"]),
        (lambda d: d["tasks"].append({"name": "x", "kind": "classify"}), ["labels"]),
        (lambda d: d["data"].update(train="/nonexistent/train.jsonl"), ["data.train", "not found"]),
        (lambda d: d["model"].update(name="/nonexistent/model"), ["no such directory"]),
        (lambda d: d["mta"].update(layers=[7]), ["out of range"]),
    ],
)
def test_bad_config_values_exit_2_with_one_line(mutate, needles, tiny_llama_dir, synthetic_jsonl, tmp_path):
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl)
    mutate(d)
    cfg = _write_cfg(tmp_path / "c.yaml", d)
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(tmp_path / "o")])
    _one_line_error(res, *needles)


def test_data_and_file_errors_exit_2(tiny_llama_dir, synthetic_jsonl, tmp_path):
    out = str(tmp_path / "o")
    res = runner.invoke(app, ["train-stage1", str(tmp_path / "missing.yaml"), "--out", out])
    _one_line_error(res, "missing.yaml", "not found")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    _one_line_error(runner.invoke(app, ["train-stage1", str(tmp_path / "bad.yaml"), "--out", out]), "malformed YAML")
    lines = synthetic_jsonl.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:3] + ['{"input": "x", "target": "y"'] + lines[3:]) + "\n")
    cfg = _write_cfg(tmp_path / "c.yaml", stage1_dict(tiny_llama_dir, bad))
    _one_line_error(runner.invoke(app, ["train-stage1", str(cfg), "--out", out]), "bad.jsonl:4:", "malformed JSON")
    bad.write_text("\n".join(lines[:5] + ['{"input": "x", "target": "y", "type": "summarise"}']) + "\n")
    _one_line_error(runner.invoke(app, ["train-stage1", str(cfg), "--out", out]), "bad.jsonl:6:", "unknown task 'summarise'")
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", out, "--set", "train.max_steps"])
    _one_line_error(res, "--set expects key=value")
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl)
    d["mta"]["task_to_experts"] = {"nope": [0]}
    _one_line_error(runner.invoke(app, ["train-stage1", str(_write_cfg(tmp_path / "c2.yaml", d)), "--out", out]),
                    "unknown task 'nope'")
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl)
    res = runner.invoke(app, ["train-stage1", str(_write_cfg(tmp_path / "c3.yaml", d)), "--out", out, "--resume"])
    _one_line_error(res, "--resume")
    assert not Path(out).exists()


def test_shipped_configs_load():
    paths = sorted((ROOT / "configs" / "alter").glob("stage1*.yaml"))
    assert paths
    for p in paths:
        cfg = resolve_config(p.read_text(), str(p))
        assert isinstance(cfg, AlterConfig)
    from alter_cli.cli import load_config
    from alter_cli.data import TaskRegistry, parse_jsonl

    cfg = load_config(ROOT / "configs" / "alter" / "stage1.yaml", [])
    examples = parse_jsonl(Path(cfg.data.train).read_text(), cfg.data.train, TaskRegistry.from_config(cfg.tasks))
    assert {e.task for e in examples} == {t.name for t in cfg.tasks}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_run_with_batches_missing_tasks(tiny_llama_dir, synthetic_jsonl, tmp_path):
    # batch_size 2 with 4 tasks: every micro-batch lacks at least two tasks
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=3, batch_size=2, gradient_accumulation_steps=2,
                    log_every=1)
    cfg = _write_cfg(tmp_path / "c.yaml", d)
    out = tmp_path / "ddp"
    # accelerate 1.x starts a single process for `--cpu --num_processes 2` unless mpirun is set up;
    # `--multi_gpu` with no visible GPU starts 2 processes of DistributedType.MULTI_CPU (gloo DDP).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "alter_cli", "train-stage1", str(cfg), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 3/3" in proc.stdout and proc.stdout.count("stage 1: 3 steps") == 1
    assert "on 2 process(es)" in proc.stdout
    assert {p.name for p in (out / "state").glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert json.loads((out / "adapter_config.json").read_text())["step"] == 3


def test_training_survives_a_closed_stdout_pipe(tiny_llama_dir, synthetic_jsonl, tmp_path):
    """`alter train-stage1 ... | head -1`: the reader goes away after the first line; training goes
    on to the end and writes its checkpoint (exit 0), printing nothing more."""
    cfg = _write_cfg(tmp_path / "c.yaml", stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=6, log_every=1))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "alter_cli", "train-stage1", str(cfg), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    first = proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=240)
    assert first.startswith("step 1/6"), first
    assert proc.returncode == 0, err[-2000:]
    assert "BrokenPipe" not in err
    assert json.loads((out / "adapter_config.json").read_text())["step"] == 6
