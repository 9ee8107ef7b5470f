"""The base model is identified by its weights too (issue 15 item 11): a model with the same config
and other weights is refused by eval, predict, --resume and stage 2; backbone_weights stays inside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from alter_cli.checkpoint import CheckpointError, CheckpointWarning, load_checkpoint
from alter_cli.cli import app
from alter_cli.config import AlterConfig
from alter_cli.data import TaskRegistry, parse_jsonl
from alter_cli.models import load_base_model, weights_fingerprint
from alter_cli.train import run_training

from .conftest import make_model, one_line_error, save_tiny, stage1_dict

runner = CliRunner()


def _train(model_dir: Path, data: Path, out: Path, **train) -> AlterConfig:
    cfg = AlterConfig.model_validate(stage1_dict(model_dir, data, **({"max_steps": 2} | train)))
    ex = parse_jsonl(data.read_text(), str(data), TaskRegistry.from_config(cfg.tasks))
    run_training(cfg, 1, train_examples=ex, out_dir=out)
    return cfg


def test_weights_fingerprint_is_deterministic_and_sees_other_weights(tiny_llama_dir):
    a = load_base_model(str(tiny_llama_dir))
    assert a.ref.weights_fingerprint == load_base_model(str(tiny_llama_dir)).ref.weights_fingerprint
    assert a.ref.weights_fingerprint == weights_fingerprint(make_model("llama"))  # seed 0, as saved
    other = make_model("llama", seed=1)
    assert weights_fingerprint(other) != a.ref.weights_fingerprint
    big = make_model("llama")  # one value changed inside a tensor small enough to be hashed whole
    with torch.no_grad():
        big.model.norm.weight[3] += 1e-3
    assert weights_fingerprint(big) != a.ref.weights_fingerprint


def test_same_config_other_weights_is_refused_everywhere(tmp_path, synthetic_jsonl):
    base = save_tiny("llama", tmp_path / "base")
    out = tmp_path / "s1"
    cfg = _train(base, synthetic_jsonl, out, save_every=1)
    assert json.loads((out / "adapter_config.json").read_text())["base_model"]["weights_fingerprint"]
    make_model("llama", seed=1).save_pretrained(base)  # same config, other weights, same folder
    data = str(synthetic_jsonl)
    one_line_error(runner.invoke(app, ["eval", "-c", str(out), "--data", data, "--out", str(tmp_path / "e")]),
                   "has other weights than the one it was trained on")
    one_line_error(runner.invoke(app, ["predict", str(out), "--task", "copy"], input="abc\n"), "has other weights")
    s2 = tmp_path / "s2.yaml"
    s2.write_text(yaml.safe_dump({"stage1": str(out), "data": {"train": data}, "train": {"max_steps": 1}}))
    one_line_error(runner.invoke(app, ["train-stage2", str(s2), "--out", str(tmp_path / "s2")]), "has other weights")
    c1 = tmp_path / "c1.yaml"
    c1.write_text(yaml.safe_dump(stage1_dict(base, synthetic_jsonl, max_steps=3)))
    one_line_error(runner.invoke(app, ["train-stage1", str(c1), "--out", str(out), "--resume"]),
                   "--resume:", "has other weights")
    assert cfg.train.max_steps == 2 and json.loads((out / "adapter_config.json").read_text())["step"] == 2


def test_checkpoint_without_fingerprint_loads_with_one_warning_line(tmp_path, tiny_llama_dir, synthetic_jsonl):
    out = tmp_path / "old"
    _train(tiny_llama_dir, synthetic_jsonl, out)
    meta = json.loads((out / "adapter_config.json").read_text())
    del meta["base_model"]["weights_fingerprint"]  # as written by an older alter (no manifest either)
    (out / "adapter_config.json").write_text(json.dumps(meta))
    (out / "checkpoint_manifest.json").unlink()
    with pytest.warns(CheckpointWarning, match="records no weights fingerprint"):
        load_checkpoint(out)
    res = runner.invoke(app, ["predict", str(out), "--task", "copy"], input="abc\n")
    assert res.exit_code == 0, res.output
    warning = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(warning) == 1 and warning[0].startswith("alter: warning: checkpoint ") and "not checked" in warning[0]


def test_backbone_weights_outside_the_checkpoint_is_refused(tmp_path, tiny_llama_dir, synthetic_jsonl):
    out = tmp_path / "bb"
    _train(tiny_llama_dir, synthetic_jsonl, out, unfreeze_backbone=True)
    (tmp_path / "outside.safetensors").write_bytes((out / "backbone_model.safetensors").read_bytes())
    (out / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["backbone_weights"] == "backbone_model.safetensors"
    (out / "checkpoint_manifest.json").unlink()  # hand-edited below
    for name in ("../outside.safetensors", "/etc/passwd", ".hidden", "sub/backbone.safetensors", "link.safetensors"):
        (out / "adapter_config.json").write_text(json.dumps({**meta, "backbone_weights": name}))
        with pytest.raises(CheckpointError, match="is not a file inside the checkpoint folder"):
            load_checkpoint(out)
    # not a string at all: the record schema refuses it first, also in one line
    (out / "adapter_config.json").write_text(json.dumps({**meta, "backbone_weights": ["backbone_model.safetensors"]}))
    with pytest.raises(CheckpointError, match="backbone_weights: Input should be a valid string"):
        load_checkpoint(out)
    (out / "adapter_config.json").write_text(json.dumps(meta))
    assert load_checkpoint(out).stage == 1
