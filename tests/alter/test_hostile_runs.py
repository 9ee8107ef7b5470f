"""Issue 15 items 12 and 15 for alter, through the CLI on the tiny Llama model: hand-edited checkpoint
JSON in eval / predict / stage 2 / resume, non-UTF-8 stdin, `eval --out` under a regular file, model
positions, `predict` streaming and a closed stdout pipe."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alter_cli.cli import app

from .conftest import one_line_error, save_tiny, stage1_dict

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def trained(tiny_llama_dir, synthetic_jsonl, tmp_path_factory) -> dict[str, Path]:
    """A 2-step stage-1 run (with its state/ for --resume) through the CLI."""
    root = tmp_path_factory.mktemp("hostile")
    cfg = root / "s1.yaml"
    cfg.write_text(yaml.safe_dump(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=2, save_every=1)))
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(root / "s1")])
    assert res.exit_code == 0, res.output
    return {"root": root, "cfg": cfg, "s1": root / "s1", "data": synthetic_jsonl}


EDITS = [
    ("data", None, "data: must be an object"),
    ("data", {"max_length": "long"}, "data.max_length"),
    ("data", {"max_length": 10**9}, "data.max_length"),
    ("step", "two", "step"),
    ("stage", 5, "stage"),
    ("registry", {"tasks": [{"name": 3, "kind": "generate"}]}, "registry.tasks.0.name"),
    ("registry", None, "registry"),
    ("base_model", {"name": ["x"]}, "base_model.name"),
    ("base_model", "default", "base_model"),
    ("has_shared_experts", "yes", "has_shared_experts"),
    ("mta_config", [1], "mta_config"),
]


def _edited(trained, tmp_path, key, value) -> Path:
    ck = tmp_path / "ck"
    shutil.copytree(trained["s1"], ck)
    meta = json.loads((ck / "adapter_config.json").read_text())
    meta[key] = copy.deepcopy(value)
    (ck / "adapter_config.json").write_text(json.dumps(meta))
    return ck


@pytest.mark.parametrize("key,value,needle", EDITS, ids=[f"{k}={v!r}"[:40] for k, v, _ in EDITS])
def test_hand_edited_checkpoint_json_is_one_line_everywhere(trained, tmp_path, key, value, needle):
    ck = _edited(trained, tmp_path, key, value)
    data = str(trained["data"])
    one_line_error(runner.invoke(app, ["eval", "--checkpoint", str(ck), "--data", data, "--out",
                                       str(tmp_path / "e")]), "adapter_config.json", needle)
    one_line_error(runner.invoke(app, ["predict", str(ck), "--task", "copy"], input="abc\n"),
                   "adapter_config.json", needle)
    s2 = tmp_path / "s2.yaml"
    s2.write_text(yaml.safe_dump({"stage1": str(ck), "data": {"train": data, "max_length": 48}}))
    one_line_error(runner.invoke(app, ["train-stage2", str(s2), "--out", str(tmp_path / "o2")]),
                   "adapter_config.json", needle)
    one_line_error(runner.invoke(app, ["train-stage1", str(trained["cfg"]), "--out", str(ck), "--resume",
                                       "--max-steps", "3"]), "adapter_config.json", needle)


@pytest.mark.parametrize("text", ['{"format_version": 1, "x": ' + "[" * 5000 + "]" * 5000 + "}",
                                  '{"format_version": 1, "step": ' + "7" * 5000 + "}", "{\"a\": NaN}", "\xff"])
def test_unreadable_checkpoint_json_is_one_line(trained, tmp_path, text):
    ck = tmp_path / "ck"
    shutil.copytree(trained["s1"], ck)
    (ck / "adapter_config.json").write_bytes(b"\xff" if text == "\xff" else text.encode())
    one_line_error(runner.invoke(app, ["predict", str(ck), "--task", "copy"], input="abc\n"), "adapter_config.json")


def test_non_utf8_stdin_to_predict_is_one_line(trained):
    res = runner.invoke(app, ["predict", str(trained["s1"]), "--task", "copy"], input=b"abc\n\xff\xfe zz\n")
    one_line_error(res, "<stdin>:2", "not UTF-8")
    assert [json.loads(x)["input"] for x in res.stdout.splitlines()] == []  # batch of 16: nothing written yet


def test_predict_streams_batch_by_batch_and_keeps_line_separators(trained):
    res = runner.invoke(app, ["predict", str(trained["s1"]), "--task", "copy", "--batch-size", "1",
                              "--max-new-tokens", "2"], input="ab\u2028cd\nxy\n".encode() + b"\xff\n")
    # two outputs written (one per batch) before the third line's error
    assert res.exit_code == 2
    assert [json.loads(x)["input"] for x in res.stdout.split("\n") if x] == ["ab\u2028cd", "xy"]


def test_predict_sizes_are_bounded(trained):
    one_line_error(runner.invoke(app, ["predict", str(trained["s1"]), "--task", "copy", "--batch-size",
                                       "1000000000000"], input="ab\n"), "--batch-size", "65536")
    res = runner.invoke(app, ["predict", str(trained["s1"]), "--task", "copy", "--max-new-tokens", "1000"],
                        input="ab\n")
    one_line_error(res, "longest prompt + max_new_tokens", "256 positions")


def test_eval_out_under_a_regular_file_fails_before_evaluating(trained, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = runner.invoke(app, ["eval", "--checkpoint", str(trained["s1"]), "--data", str(trained["data"]),
                              "--out", str(blocker / "e")])
    one_line_error(res, "cannot write")
    assert "samples in" not in res.stdout  # no evaluation ran


def test_training_past_the_model_positions_is_refused(trained, tiny_gpt2_dir, tmp_path):
    d = stage1_dict(tiny_gpt2_dir, trained["data"], max_steps=1)
    d["data"]["max_length"] = 4096  # tiny GPT-2: n_positions 256
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump(d))
    one_line_error(runner.invoke(app, ["train-stage1", str(cfg), "--out", str(tmp_path / "o")]),
                   "data.max_length = 4096", "256 positions")
