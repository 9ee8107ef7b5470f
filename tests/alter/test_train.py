"""The accelerate training loop: checkpoints, reload in a fresh process, resume, selector dynamics, stage 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alter_cli.checkpoint import ADAPTER_WEIGHTS, CheckpointError, load_checkpoint
from alter_cli.config import AlterConfig
from alter_cli.data import Collator, TaskRegistry, encode_dataset, parse_jsonl
from alter_cli.inject import add_shared_experts, is_mta_param
from alter_cli.sources.synthetic import make_jsonl
from alter_cli.train import ModelBundle, TrainingError, build_stage1, run_training

from .conftest import stage1_dict

ROOT = Path(__file__).resolve().parents[2]


def _cfg(model_dir, data, mta=None, **train):
    d = stage1_dict(model_dir, data, **train)
    if mta:
        d["mta"].update(mta)
    return AlterConfig.model_validate(d)


def _examples(cfg):
    return parse_jsonl(Path(cfg.data.train).read_text(), cfg.data.train, TaskRegistry.from_config(cfg.tasks))


def _fixed_batch(tokenizer, registry, is_seq2seq):
    ex = parse_jsonl(make_jsonl(2, seed=5), "fixed", registry)
    ds = encode_dataset(tokenizer, ex, registry, is_seq2seq, max_length=48, max_target_length=12)
    return Collator(tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])


LOGITS_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from alter_cli.mta import task_context
from alter_cli.checkpoint import load_checkpoint
ck = load_checkpoint({ckpt!r})
batch = torch.load({batch!r})
ids = batch.pop("task_ids")
with torch.no_grad(), task_context(ck.model, ids):
    torch.save(ck.model(**batch).logits, {out!r})
"""


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_save_then_load_in_fresh_process_gives_identical_logits(arch, tiny_llama_dir, tiny_t5_dir, synthetic_jsonl,
                                                                 tmp_path):
    model_dir = tiny_llama_dir if arch == "llama" else tiny_t5_dir
    cfg = _cfg(model_dir, synthetic_jsonl, max_steps=5, learning_rate=1e-2)
    captured = {}

    def setup(c):
        captured["b"] = build_stage1(c)
        return captured["b"]

    out = tmp_path / "ckpt"
    res = run_training(cfg, 1, train_examples=_examples(cfg), out_dir=out, setup_model=setup)
    assert res.steps == 5 and res.final_loss is not None
    bundle: ModelBundle = captured["b"]
    model = bundle.model.eval()
    batch = _fixed_batch(bundle.tokenizer, bundle.registry, bundle.is_seq2seq)
    torch.save(dict(batch), tmp_path / "batch.pt")
    ids = batch.pop("task_ids")
    from alter_cli.mta import task_context

    with torch.no_grad(), task_context(model, ids):
        ref = model(**batch).logits
    saved = load_file(str(out / ADAPTER_WEIGHTS))
    assert saved and all(is_mta_param(k) for k in saved)
    assert any(torch.count_nonzero(v) for k, v in saved.items() if k.endswith("experts.up"))
    meta = json.loads((out / "adapter_config.json").read_text())
    assert list(meta) == sorted(meta) and meta["format_version"] == 1 and meta["stage"] == 1
    script = LOGITS_SCRIPT.format(root=str(ROOT), ckpt=str(out), batch=str(tmp_path / "batch.pt"),
                                  out=str(tmp_path / "logits.pt"))
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    assert torch.equal(torch.load(tmp_path / "logits.pt"), ref)


def test_resumed_run_ends_with_same_weights_as_uninterrupted(tiny_llama_dir, synthetic_jsonl, tmp_path):
    cfg = _cfg(tiny_llama_dir, synthetic_jsonl, max_steps=6, gradient_accumulation_steps=2, learning_rate=1e-2)
    ex = _examples(cfg)
    run_training(cfg, 1, train_examples=ex, out_dir=tmp_path / "full")
    part = run_training(cfg, 1, train_examples=ex, out_dir=tmp_path / "part", stop_after=3)
    assert part.steps == 3
    mid = load_file(str(tmp_path / "part" / ADAPTER_WEIGHTS))
    # a checkpoint written before an MTA config field existed (gate_combine), and before checkpoints
    # had a manifest, still resumes
    meta_file = tmp_path / "part" / "adapter_config.json"
    meta = json.loads(meta_file.read_text())
    del meta["mta_config"]["gate_combine"]
    meta_file.write_text(json.dumps(meta))
    (tmp_path / "part" / "checkpoint_manifest.json").unlink()
    res = run_training(cfg, 1, train_examples=ex, out_dir=tmp_path / "part", resume=True)
    assert res.steps == 6
    full, resumed = load_file(str(tmp_path / "full" / ADAPTER_WEIGHTS)), load_file(str(tmp_path / "part" / ADAPTER_WEIGHTS))
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    assert any(not torch.equal(mid[k], full[k]) for k in full)  # the resumed half did train


def test_selector_moves_toward_own_experts_when_tasks_conflict(tiny_llama_dir, tmp_path):
    """Two tasks read the same inputs and want opposite answers ("yes" vs "no"): only the task
    routing can tell them apart, so each task gains by weighting its own (specialising) expert."""
    import random

    rng = random.Random(0)
    rows = []
    for _ in range(40):
        w = "".join(rng.choice("abcde") for _ in range(4))
        rows += [{"input": w, "target": "yes", "type": "pos"}, {"input": w, "target": "no", "type": "neg"}]
    data = tmp_path / "conflict.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = stage1_dict(tiny_llama_dir, data, max_steps=30, learning_rate=1e-2, warmup_steps=2, batch_size=8)
    d["tasks"] = [{"name": "pos", "kind": "classify", "labels": ["yes", "no"]},
                  {"name": "neg", "kind": "classify", "labels": ["yes", "no"]}]
    d["mta"] = {"num_experts": 2, "rank": 8, "task_to_experts": {"pos": [0], "neg": [1]}}
    cfg = AlterConfig.model_validate(d)
    records = []
    res = run_training(cfg, 1, train_examples=_examples(cfg), out_dir=tmp_path / "o", on_step=records.append)
    init = float(torch.softmax(torch.tensor([2.2, 2.0]), 0)[0])
    assert records[0]["alpha"]["pos"] == pytest.approx(init, abs=2e-3)
    for task in ("pos", "neg"):
        assert res.alpha[task] > init + 0.05, (task, res.alpha)
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]


def test_stage2_through_setup_hook_trains_only_shared_and_gate(tiny_llama_dir, synthetic_jsonl, tmp_path):
    cfg = _cfg(tiny_llama_dir, synthetic_jsonl, {"num_shared_experts": 2}, max_steps=3, learning_rate=1e-2)
    ex = _examples(cfg)
    run_training(cfg, 1, train_examples=ex, out_dir=tmp_path / "s1")

    def setup_stage2(c):
        ck = load_checkpoint(tmp_path / "s1")
        add_shared_experts(ck.model, ck.mta_config)
        return ModelBundle(ck.model, ck.tokenizer, ck.registry, ck.mta_config, ck.base)

    records = []
    run_training(cfg, 2, train_examples=ex, out_dir=tmp_path / "s2", setup_model=setup_stage2,
                 on_step=records.append)
    assert abs(sum(records[-1][f"gate_{j}"] for j in range(3)) - 1) < 1e-5
    s1, s2 = load_file(str(tmp_path / "s1" / ADAPTER_WEIGHTS)), load_file(str(tmp_path / "s2" / ADAPTER_WEIGHTS))
    assert set(s1) < set(s2)
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k  # task experts and selector frozen in stage 2
    changed = [k for k in set(s2) - set(s1) if k.endswith("shared.up")]
    assert changed and all(torch.count_nonzero(s2[k]) for k in changed)
    ck = load_checkpoint(tmp_path / "s2")
    assert ck.stage == 2 and ck.meta["has_shared_experts"]
    with pytest.raises(TrainingError, match="stage 2"):
        run_training(cfg, 2, train_examples=ex, out_dir=tmp_path / "x")


def test_bf16_runs_and_fp16_is_refused_for_t5(tiny_llama_dir, tiny_t5_dir, synthetic_jsonl, tmp_path):
    cfg = _cfg(tiny_llama_dir, synthetic_jsonl, max_steps=2, mixed_precision="bf16")
    res = run_training(cfg, 1, train_examples=_examples(cfg), out_dir=tmp_path / "bf16")
    assert res.final_loss is not None and res.final_loss == res.final_loss
    cfg = _cfg(tiny_t5_dir, synthetic_jsonl, max_steps=2, mixed_precision="fp16")
    with pytest.raises(TrainingError, match="fp16"):
        run_training(cfg, 1, train_examples=_examples(cfg), out_dir=tmp_path / "fp16")


def test_corrupt_or_mismatched_checkpoints_raise_checkpoint_error(tiny_llama_dir, synthetic_jsonl, tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_checkpoint(tmp_path / "nothing")
    cfg = _cfg(tiny_llama_dir, synthetic_jsonl, max_steps=1)
    out = tmp_path / "c"
    run_training(cfg, 1, train_examples=_examples(cfg), out_dir=out)
    (out / "checkpoint_manifest.json").unlink()  # hand-edited files below: the manifest would name them first
    meta = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**meta, "base_model": {**meta["base_model"], "config_hash": "x"}}))
    with pytest.raises(CheckpointError, match="config hash"):
        load_checkpoint(out)
    (out / "adapter_config.json").write_text(json.dumps(meta))
    (out / ADAPTER_WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(out)
    (out / "adapter_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(out)
