"""FSDP (torch FSDP2 through accelerate) on 2 CPU processes with gloo: the same trained weights and
optimizer state as DDP, resume, checkpoints that the other commands read unchanged, and the
set-ups that are refused in one line (exit 2). One `accelerate launch --use_fsdp --fsdp_version 2`
runs every training (tests/alter/fsdp_worker.py): starting 2 processes costs more than the training."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from alter_cli.cli import app

from .conftest import one_line_error, stage1_dict

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fsdp_worker.py")
TOL = 1e-5  # observed: 0 (bit-identical), the reduce-scatter and all-reduce sum the same 2 values
runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fsdp_runs(tiny_llama_dir, synthetic_jsonl, tmp_path_factory) -> Path:
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    from alter_cli.sources.synthetic import make_jsonl

    root = tmp_path_factory.mktemp("fsdp")
    (root / "eval.jsonl").write_text(make_jsonl(1, seed=2))
    # batch_size 2 with 4 tasks (every micro-batch lacks tasks), 2 micro-batches per step (no_sync)
    s1 = stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=3, batch_size=2, gradient_accumulation_steps=2,
                     log_every=1)
    s1["mta"]["expert"] = "hydra_lora"  # reads the FFN weights of the block's unit from inside its own unit
    s1["generation"] = {"max_new_tokens": 2, "batch_size": 4}
    s2 = {"stage1": "-", "data": s1["data"], "train": {**s1["train"], "max_steps": 2},
          "mta": {"num_shared_experts": 2, "gate_hidden": 8}}
    spec = root / "spec.json"
    spec.write_text(json.dumps({"stage1": s1, "stage2": s2, "out": str(root / "out"), "k": 1, "ub_steps": 2,
                                "eval": str(root / "eval.jsonl")}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for attempt in (1, 2):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2",
               "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_transformer_layer_cls_to_wrap",
               "LlamaDecoderLayer", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(WORKER), str(spec)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env, cwd=root)
        # One relaunch, only when a rank died by SIGABRT (a native abort; seen once in a full CI run on
        # the 2-core machine, never in isolation): a Python exception (exit code 1) is never retried.
        if proc.returncode == 0 or attempt == 2 or "(SIGABRT)" not in proc.stderr:
            break
        print(f"FSDP launch attempt {attempt} aborted (SIGABRT); relaunching once:\n{proc.stderr[-2000:]}")
        shutil.rmtree(root / "out", ignore_errors=True)
    head = "\n".join(line for line in proc.stderr.splitlines() if "[rank0]" in line)[-3000:]
    assert proc.returncode == 0, head + "\n...\n" + proc.stderr[-4000:]
    assert "Warning" not in proc.stderr, proc.stderr[-4000:]  # e.g. FSDP2's view-output warning
    return root / "out"


def _weights(folder: Path, name: str = "adapter_model.safetensors") -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in load_file(str(folder / name)).items()}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:3]
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _optimizer(folder: Path) -> dict:
    return torch.load(folder / "state" / "optimizer.bin", weights_only=False)


def _optimizer_diff(a: dict, b: dict) -> float:
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    return max(float((a["state"][i][k].double() - b["state"][i][k].double()).abs().max())
               for i in a["state"] for k in a["state"][i])


def test_fsdp_trains_the_same_mta_weights_and_optimizer_state_as_ddp(fsdp_runs):
    facts = json.loads((fsdp_runs / "facts.json").read_text())["fsdp"]
    # the wrap units: each MTA layer and each block its own, besides accelerate's embedding/tail/root
    assert {"FSDPMTALayer", "FSDPLlamaDecoderLayer", "FSDPLlamaForCausalLM"} <= set(facts["units"]), facts
    assert facts["selector"] == [4, 4] and facts["selector_local"] == [2, 4]  # sharded: 2 of 4 task rows each
    ddp, fsdp = _weights(fsdp_runs / "ddp"), _weights(fsdp_runs / "fsdp")
    assert len(ddp) == 14 and _max_diff(ddp, fsdp) <= TOL  # 2 layers × (selector, A, B of 3 projections)
    assert min(float(v.abs().max()) for k, v in fsdp.items() if "lora_B" in k) > 1e-4  # B started at 0: trained
    assert _optimizer_diff(_optimizer(fsdp_runs / "ddp"), _optimizer(fsdp_runs / "fsdp")) <= TOL
    assert _max_diff(_weights(fsdp_runs / "ddp", "state/model.safetensors"),
                     _weights(fsdp_runs / "fsdp", "state/model.safetensors")) <= TOL
    assert sorted(p.name for p in (fsdp_runs / "fsdp" / "state").iterdir()) == sorted(
        p.name for p in (fsdp_runs / "ddp" / "state").iterdir())
    ddp_log = [json.loads(x) for x in (fsdp_runs / "ddp" / "train_log.jsonl").read_text().splitlines()]
    fsdp_log = [json.loads(x) for x in (fsdp_runs / "fsdp" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in fsdp_log] == [1, 2, 3]
    assert [r["loss"] for r in fsdp_log] == pytest.approx([r["loss"] for r in ddp_log], abs=TOL)
    assert fsdp_log[-1]["alpha"] == pytest.approx(ddp_log[-1]["alpha"], abs=TOL)  # gathered selectors
    # stage 2: frozen task experts beside the trainable shared experts + gate in one MTA unit, and
    # train.gradient_checkpointing under FSDP
    s2_ddp, s2_fsdp = _weights(fsdp_runs / "s2-ddp"), _weights(fsdp_runs / "s2-fsdp")
    assert len(s2_ddp) == 32 and _max_diff(s2_ddp, s2_fsdp) <= TOL
    frozen = [k for k in s2_fsdp if ".experts." in k or k.endswith("selector")]
    assert frozen and _max_diff({k: s2_fsdp[k] for k in frozen}, {k: ddp[k] for k in frozen}) == 0.0
    assert _optimizer_diff(_optimizer(fsdp_runs / "s2-ddp"), _optimizer(fsdp_runs / "s2-fsdp")) <= TOL


def test_fsdp_resume_restores_weights_optimizer_schedule_and_step(fsdp_runs):
    """3 steps straight (`fsdp`) = 1 step, stop, --resume to 3 (`resumed`, under the launcher's FSDP)."""
    straight, resumed = fsdp_runs / "fsdp", fsdp_runs / "resumed"
    assert json.loads((resumed / "adapter_config.json").read_text())["step"] == 3
    assert _max_diff(_weights(straight), _weights(resumed)) <= TOL
    assert _optimizer_diff(_optimizer(straight), _optimizer(resumed)) <= TOL
    sched = [torch.load(f / "state" / "custom_checkpoint_0.pkl", weights_only=False) for f in (straight, resumed)]
    assert sched[0]["last_epoch"] == sched[1]["last_epoch"] == 3 and sched[0] == sched[1]
    progress = [torch.load(f / "state" / "custom_checkpoint_1.pkl", weights_only=False) for f in (straight, resumed)]
    assert progress[0] == progress[1] == {"step": 3, "micro_batches": 6}


def test_trained_backbone_under_fsdp_and_resume_across_ddp_and_fsdp(fsdp_runs, tiny_llama_dir):
    """train.unfreeze_backbone: the trained backbone is gathered like the MTA weights; a checkpoint of
    DDP resumes under FSDP and one of FSDP under DDP, to the weights of a straight run."""
    base = load_file(str(tiny_llama_dir / "model.safetensors"))
    names = ("adapter_model.safetensors", "backbone_model.safetensors")
    ddp, fsdp = ({n: _weights(fsdp_runs / run, n) for n in names} for run in ("ub-ddp", "ub-fsdp"))
    assert len(fsdp["backbone_model.safetensors"]) == 21  # every base tensor (bottleneck experts replace no FFN)
    assert max(float((v - base[k]).abs().max()) for k, v in fsdp["backbone_model.safetensors"].items()) > 1e-4
    for n in names:
        assert _max_diff(ddp[n], fsdp[n]) <= TOL, n
        assert _max_diff(_weights(fsdp_runs / "ub-ddp-fsdp", n), fsdp[n]) <= TOL, n
        assert _max_diff(_weights(fsdp_runs / "ub-fsdp-ddp", n), ddp[n]) <= TOL, n
    for crossed, straight in (("ub-ddp-fsdp", "ub-fsdp"), ("ub-fsdp-ddp", "ub-ddp")):
        assert _optimizer_diff(_optimizer(fsdp_runs / crossed), _optimizer(fsdp_runs / straight)) <= TOL


def test_fsdp_checkpoint_is_read_by_eval_and_export_unchanged(fsdp_runs, tmp_path):
    from alter_cli.checkpoint import load_checkpoint
    from alter_cli.mta import mta_layers

    metrics = json.loads((fsdp_runs / "fsdp" / "eval" / "metrics.json").read_text())  # scored after FSDP training
    assert metrics
    ck = load_checkpoint(fsdp_runs / "fsdp")
    fsdp = _weights(fsdp_runs / "fsdp")
    state = ck.model.state_dict()
    assert len(mta_layers(ck.model)) == 2 and max(float((state[k] - v).abs().max()) for k, v in fsdp.items()) == 0
    res = runner.invoke(app, ["export", str(fsdp_runs / "fsdp"), "--out", str(tmp_path / "peft"), "--format", "peft"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "peft" / "copy" / "adapter_model.safetensors").is_file(), sorted(
        str(p.relative_to(tmp_path)) for p in (tmp_path / "peft").rglob("*"))


@pytest.mark.parametrize(
    "env,sets,needles",
    [
        ({}, ["train.distributed=fsdp"], ["on 1 process shards nothing", "--num_processes"]),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, [], ["accelerate launch with FSDP on 1 process"]),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, ["train.distributed=ddp"],
         ["train.distributed is ddp", "--use_fsdp"]),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, [], ["FSDP version 1 is not supported",
                                                                   "--fsdp_version 2"]),
        ({}, ["train.distributed=zero3"], ["train.distributed"]),
    ],
)
def test_fsdp_set_ups_that_cannot_work_exit_2_in_one_line(env, sets, needles, tiny_llama_dir, synthetic_jsonl,
                                                          tmp_path, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(stage1_dict(tiny_llama_dir, synthetic_jsonl)))
    args = ["train-stage1", str(cfg), "--out", str(tmp_path / "o")] + [a for s in sets for a in ("--set", s)]
    one_line_error(runner.invoke(app, args), *needles)
    assert not (tmp_path / "o").exists()
    assert os.environ.get("ACCELERATE_USE_FSDP") == env.get("ACCELERATE_USE_FSDP")


def test_fsdp_is_refused_for_the_peft_lora_baseline(tiny_llama_dir, synthetic_jsonl, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(stage1_dict(tiny_llama_dir, synthetic_jsonl)))
    res = runner.invoke(app, ["train-baseline", str(cfg), "--out", str(tmp_path / "o"), "--set",
                              "train.distributed=fsdp"])
    one_line_error(res, "PEFT LoRA baseline", "train.distributed: ddp")
