"""`alter train-baseline --per-task`: one PEFT LoRA adapter per task on the tiny Llama, routed by task.

Exact identities: a mixed-task batch routed through the per-task adapters equals each sample run
alone with its task's adapter active (PEFT's set_adapter); adapter t is trained on task t only (its
LoRA B moved, the other tasks' examples never reached it: a run on task t alone gives the same
weights); a fresh process scores the checkpoint exactly as this one; counts are T x one adapter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from alter_cli.checkpoint import load_checkpoint
from alter_cli.cli import app
from alter_cli.generation import default_task_context
from alter_cli.per_task import adapter_name
from alter_cli.sources.synthetic import make_jsonl

from .conftest import stage1_dict

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
TASKS = ["copy", "reverse", "parity", "match"]


@pytest.fixture(scope="module")
def per_task_run(tiny_llama_dir, synthetic_jsonl, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("per-task")
    (root / "eval.jsonl").write_text(make_jsonl(2, seed=11))
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=3, learning_rate=3e-2)
    (root / "cfg.yaml").write_text(yaml.safe_dump(d))
    res = runner.invoke(app, ["train-baseline", str(root / "cfg.yaml"), "--out", str(root / "pt"), "--per-task"])
    assert res.exit_code == 0, res.output
    return {"root": root, "pt": root / "pt", "cfg": root / "cfg.yaml", "eval": root / "eval.jsonl",
            "output": res.stdout}


def test_layout_and_parameter_count(per_task_run):
    meta = json.loads((per_task_run["pt"] / "alter_baseline.json").read_text())
    assert meta["method"] == "lora_per_task" and meta["stage"] == 0
    assert set(meta["adapters"]) == set(TASKS) and meta["step"] == {t: 3 for t in TASKS}
    assert [t["name"] for t in meta["registry"]["tasks"]] == TASKS
    per = meta["lora_parameters_per_adapter"]
    assert per == meta["lora"]["rank"] * meta["lora"]["per_rank"]
    assert meta["lora_parameters"] == 4 * per
    assert f"4 adapters x {per:,} = {4 * per:,} trainable parameters" in per_task_run["output"]
    for t in TASKS:
        sub = per_task_run["pt"] / meta["adapters"][t]
        weights = load_file(str(sub / "adapter_model.safetensors"))
        assert sum(v.numel() for v in weights.values()) == per
        assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in weights.items())  # trained
        assert json.loads((sub / "provenance.json").read_text())["task"] == t


def test_each_adapter_saw_only_its_task(per_task_run, synthetic_jsonl, tmp_path):
    """Training `reverse` alone on a file holding only its examples gives bitwise the same adapter."""
    only = tmp_path / "reverse.jsonl"
    only.write_text("".join(ln + "\n" for ln in synthetic_jsonl.read_text().splitlines()
                            if json.loads(ln)["type"] == "reverse"))
    d = yaml.safe_load(per_task_run["cfg"].read_text())
    d["data"]["train"] = str(only)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(d))
    res = runner.invoke(app, ["train-baseline", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    a = load_file(str(tmp_path / "r" / "adapter_model.safetensors"))
    b = load_file(str(per_task_run["pt"] / "adapters" / adapter_name("reverse") / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mixed_batch_routing_equals_one_adapter_at_a_time(per_task_run):
    ck = load_checkpoint(per_task_run["pt"])
    assert ck.stage == 0 and ck.registry.names == TASKS and all(not p.requires_grad for p in ck.model.parameters())
    ids = torch.tensor([[5, 9, 12, 7, 30, 8], [6, 6, 10, 11, 12, 13], [7, 20, 21, 22, 9, 9], [8, 8, 8, 5, 5, 5]])
    task_ids = torch.tensor([2, 0, 3, 1])
    with torch.no_grad(), default_task_context(ck.model)(ck.model, task_ids):
        mixed = ck.model(input_ids=ids).logits
    singles = []
    with torch.no_grad():
        for row, t in zip(ids, task_ids.tolist(), strict=True):
            ck.model.set_adapter(adapter_name(TASKS[t]))
            singles.append(ck.model(input_ids=row[None]).logits[0])
    assert torch.allclose(mixed, torch.stack(singles), atol=1e-6)
    assert not torch.allclose(singles[0], singles[1])  # different adapters, different outputs


def test_eval_in_fresh_process_equals_in_process_and_beams_route(per_task_run, tmp_path):
    args = ["eval", "--checkpoint", str(per_task_run["pt"]), "--data", str(per_task_run["eval"]),
            "--max-new-tokens", "5", "--batch-size", "4"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    proc = subprocess.run([sys.executable, "-m", "alter_cli", *args, "--out", str(tmp_path / "b")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a" / "predictions.jsonl").read_text() == (tmp_path / "b" / "predictions.jsonl").read_text()
    res = runner.invoke(app, [*args, "--num-beams", "2", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output


def test_resume_and_errors(per_task_run, tmp_path):
    res = runner.invoke(app, ["train-baseline", str(per_task_run["cfg"]), "--out", str(per_task_run["pt"]),
                              "--per-task"])
    assert res.exit_code == 2 and "exists" in res.output
    res = runner.invoke(app, ["train-baseline", str(per_task_run["cfg"]), "--out", str(tmp_path / "none"),
                              "--per-task", "--resume"])
    assert res.exit_code == 2 and "holds no per-task LoRA run" in res.output
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(per_task_run["pt"], broken)
    shutil.rmtree(broken / "adapters" / adapter_name("match"))
    res = runner.invoke(app, ["eval", "--checkpoint", str(broken), "--data", str(per_task_run["eval"]),
                              "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "malformed alter_baseline.json" in res.output


def test_eval_folders_are_reused_as_sources(per_task_run, tiny_llama_dir, tmp_path):
    """Sources scored in separate `alter eval` runs join one comparison without being evaluated again."""
    from alter_cli.sources.synthetic import task_configs

    gen = ["--max-new-tokens", "5", "--batch-size", "4"]
    data = ["--data", str(per_task_run["eval"])]
    (tmp_path / "zs.yaml").write_text(yaml.safe_dump({"tasks": task_configs(), "zero_shot": True}))
    for name, src in (("pt", ["--checkpoint", str(per_task_run["pt"])]),
                      ("zs", [str(tmp_path / "zs.yaml"), "--model", str(tiny_llama_dir)])):
        res = runner.invoke(app, ["eval", *src, *data, "--out", str(tmp_path / name), *gen])
        assert res.exit_code == 0, res.output
    direct = tmp_path / "direct"
    res = runner.invoke(app, ["eval", "--checkpoint", str(per_task_run["pt"]), "--zero-shot", "--model",
                              str(tiny_llama_dir), *data, "--out", str(direct), *gen])
    assert res.exit_code == 0, res.output
    joined = tmp_path / "joined"
    res = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "pt"), "--compare", str(tmp_path / "zs"),
                              *data, "--out", str(joined), *gen])
    assert res.exit_code == 0, res.output
    for name in ("comparison_ci.csv", "comparison.csv"):  # the same numbers; the reused folder is labelled zs
        assert (joined / name).read_text().replace(",zs", ",zero-shot") == (direct / name).read_text()
    assert (joined / "comparison.png").read_bytes().startswith(b"\x89PNG")
    other = tmp_path / "other.jsonl"
    other.write_text(per_task_run["eval"].read_text().replace('"input": "', '"input": "x', 1))
    res = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "pt"), "--data", str(other),
                              "--out", str(tmp_path / "bad"), *gen])
    assert res.exit_code == 2 and "scored other samples" in res.output and not (tmp_path / "bad").exists()
