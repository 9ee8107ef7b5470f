"""train.gradient_checkpointing: non-reentrant activation checkpointing with a frozen backbone gives the
same losses and MTA gradients as without it (and the same weights after training steps)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from alter_cli.config import AlterConfig
from alter_cli.data import Collator, TaskRegistry, encode_dataset, parse_jsonl
from alter_cli.inject import set_trainable
from alter_cli.mta import task_context
from alter_cli.train import build_stage1, enable_gradient_checkpointing, run_training

from .conftest import stage1_dict


def _loss_and_grads(cfg, data, checkpointing: bool):
    torch.manual_seed(0)
    bundle = build_stage1(cfg)
    set_trainable(bundle.model, 1)
    with torch.no_grad():  # non-zero B so every expert parameter gets a gradient
        for n, p in bundle.model.named_parameters():
            if "lora_B" in n or n.endswith(".up"):
                p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
    if checkpointing:
        enable_gradient_checkpointing(bundle.model)
    ex = parse_jsonl(data.read_text(), "d", bundle.registry)[:6]
    ds = encode_dataset(bundle.tokenizer, ex, bundle.registry, False, max_length=48, max_target_length=12)
    batch = Collator(bundle.tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])
    task_ids = batch.pop("task_ids")
    bundle.model.train()
    assert bundle.model.is_activation_checkpointing == checkpointing
    with task_context(bundle.model, task_ids):
        loss = bundle.model(**batch).loss
        loss.backward()
    grads = {n: p.grad.clone() for n, p in bundle.model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


@pytest.mark.parametrize("expert", ["hydra_lora", "bottleneck"])
def test_checkpointing_gives_the_same_loss_and_mta_gradients(expert, tiny_llama_dir, synthetic_jsonl):
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl)
    d["mta"]["expert"] = expert
    cfg = AlterConfig.model_validate(d)
    loss0, g0 = _loss_and_grads(cfg, synthetic_jsonl, False)
    loss1, g1 = _loss_and_grads(cfg, synthetic_jsonl, True)
    assert abs(loss0 - loss1) <= 1e-6 * abs(loss0)
    assert g0.keys() == g1.keys() and any("selector" in k for k in g0)
    for k in g0:
        assert float(g0[k].abs().max()) > 0 or "selector" in k, k
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-7)


def test_training_with_checkpointing_ends_with_the_same_weights(tiny_llama_dir, synthetic_jsonl, tmp_path):
    weights = []
    for flag in (False, True):
        cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=3,
                                                     gradient_checkpointing=flag))
        ex = parse_jsonl(synthetic_jsonl.read_text(), "d", TaskRegistry.from_config(cfg.tasks))
        run_training(cfg, 1, train_examples=ex, out_dir=tmp_path / str(flag))
        weights.append(load_file(str(tmp_path / str(flag) / "adapter_model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-5, atol=1e-6)
