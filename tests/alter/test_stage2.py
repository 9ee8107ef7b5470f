"""Stage 2 (shared experts + gate over a frozen stage-1 model) and per-sample task routing in generation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alter_cli import generation
from alter_cli.checkpoint import load_checkpoint
from alter_cli.config import AlterConfig, Stage2Config
from alter_cli.data import Collator, TaskRegistry, encode_dataset, parse_jsonl
from alter_cli.inject import add_shared_experts
from alter_cli.mta import mta_layers, task_context
from alter_cli.sources.synthetic import make_jsonl
from alter_cli.stage2 import GateMonitor, Stage2Wiring, build_stage2, stage2_mta_config
from alter_cli.train import run_training

from .conftest import stage1_dict


def _examples(path: Path, registry: TaskRegistry):
    return parse_jsonl(path.read_text(), str(path), registry)


@pytest.fixture(scope="module")
def stage1_ckpt(tiny_llama_dir, synthetic_jsonl, tmp_path_factory) -> Path:
    cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=4, learning_rate=3e-2))
    out = tmp_path_factory.mktemp("s1") / "ckpt"
    run_training(cfg, 1, train_examples=_examples(synthetic_jsonl, TaskRegistry.from_config(cfg.tasks)), out_dir=out)
    return out


def _stage2_cfg(stage1: Path, data: Path, mta: dict | None = None, **train) -> Stage2Config:
    return Stage2Config.model_validate({
        "stage1": str(stage1), "data": {"train": str(data), "max_length": 48, "max_target_length": 12},
        "mta": {"num_shared_experts": 2, **(mta or {})},
        "train": {"max_steps": 3, "batch_size": 4, "learning_rate": 3e-2, "warmup_steps": 0, "log_every": 1,
                  "seed": 3, **train},
    })


def _batch(tokenizer, registry):
    ex = parse_jsonl(make_jsonl(2, seed=5), "fixed", registry)
    ds = encode_dataset(tokenizer, ex, registry, False, max_length=48, max_target_length=12)
    return Collator(tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])


@pytest.mark.parametrize(("tune_selector", "tune_task_experts"), [(False, False), (True, False), (False, True)])
def test_stage2_changes_only_shared_experts_and_gate(tune_selector, tune_task_experts, stage1_ckpt, synthetic_jsonl,
                                                     tmp_path):
    cfg = _stage2_cfg(stage1_ckpt, synthetic_jsonl, {"gate_regularizer": "load_balancing"},
                      tune_selector=tune_selector, tune_task_experts=tune_task_experts)
    wiring = Stage2Wiring(cfg)
    records: list[dict] = []

    def on_step(rec):
        wiring.on_record(rec)
        records.append(rec)

    ex = _examples(synthetic_jsonl, load_checkpoint(stage1_ckpt).registry)
    run_training(cfg, 2, train_examples=ex, out_dir=tmp_path / "s2", setup_model=wiring.setup_model,
                 extra_loss=wiring.extra_loss, on_step=on_step)
    wiring.close()
    after = wiring.bundle.model.state_dict()
    before = build_stage2(cfg).model.state_dict()  # fresh: stage-1 weights + freshly initialised shared/gate
    assert before.keys() == after.keys()
    stage2_only = {k for k in after if ".shared." in k or ".gate_net." in k}
    selector = {k for k in after if k.endswith(".selector")}
    experts = {k for k in after if "alter_mta.experts." in k}
    assert stage2_only and selector and experts
    for k in after:
        if k in stage2_only or (tune_selector and k in selector) or (tune_task_experts and k in experts):
            continue
        assert torch.equal(before[k], after[k]), k  # backbone, task experts, selector bitwise unchanged unless tuned
    assert all(not torch.equal(before[k], after[k]) for k in stage2_only if k.endswith("shared.up"))
    assert any(not torch.equal(before[k], after[k]) for k in selector) == tune_selector
    assert any(not torch.equal(before[k], after[k]) for k in experts) == tune_task_experts
    # gate statistics logged on every log step: per path, per task, entropy
    rec = records[-1]
    assert sum(rec[f"gate_{j}"] for j in range(3)) == pytest.approx(1.0, abs=1e-6)
    assert set(rec["task_gate"]) == {"copy", "reverse", "parity", "match"}
    for weights in rec["task_gate"].values():
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < rec["gate_entropy"] < torch.log(torch.tensor(3.0)).item()


@pytest.mark.parametrize("gate", ["token", "pooled"])
def test_gate_weights_sum_to_one_per_token(gate, stage1_ckpt):
    ck = load_checkpoint(stage1_ckpt)
    mta_cfg = ck.mta_config.model_copy(update={"num_shared_experts": 3, "gate": gate})
    add_shared_experts(ck.model, mta_cfg)
    for layer in mta_layers(ck.model):  # a gate that is not constant: random W2
        torch.nn.init.normal_(layer.gate_net.w2.weight, std=1.0)
    batch = _batch(ck.tokenizer, ck.registry)
    ids = batch.pop("task_ids")
    with torch.no_grad(), task_context(ck.model, ids):
        ck.model(**batch)
    b, n = batch["input_ids"].shape
    for layer in mta_layers(ck.model):
        g = layer.last_gate
        assert g.shape == ((b, n, 4) if gate == "token" else (b, 1, 4))
        torch.testing.assert_close(g.sum(-1), torch.ones(g.shape[:-1]), rtol=0, atol=1e-6)
        assert g.std() > 0.01  # not the constant initial gate


def test_zero_init_shared_experts_with_gate_on_task_path_reproduce_stage1_logits(stage1_ckpt):
    ck = load_checkpoint(stage1_ckpt)
    batch = _batch(ck.tokenizer, ck.registry)
    ids = batch.pop("task_ids")
    with torch.no_grad(), task_context(ck.model, ids):
        stage1_logits = ck.model(**batch).logits
    add_shared_experts(ck.model, ck.mta_config.model_copy(update={"num_shared_experts": 2, "gate_init_bias": 30.0}))
    with torch.no_grad(), task_context(ck.model, ids):
        assert torch.equal(ck.model(**batch).logits, stage1_logits)
    # the default start (bias 2: g0 = e²/(e²+2) ≈ 0.79) scales the task path, so the logits move
    ck2 = load_checkpoint(stage1_ckpt)
    add_shared_experts(ck2.model, stage2_mta_config(ck2.mta_config, _stage2_cfg(stage1_ckpt, Path("x")).mta))
    with torch.no_grad(), task_context(ck2.model, ids):
        assert not torch.allclose(ck2.model(**batch).logits, stage1_logits, atol=1e-4)


def test_beam_search_with_mixed_tasks_uses_each_samples_task_weights(stage1_ckpt):
    ck = load_checkpoint(stage1_ckpt)
    torch.manual_seed(0)
    for layer in mta_layers(ck.model):  # make the tasks' experts strong and distinct
        torch.nn.init.normal_(layer.experts.up, std=2.0)
        with torch.no_grad():
            layer.selector.copy_(torch.eye(layer.num_tasks, layer.num_experts) * 5.0)
    prompts = generation.encode_prompts(ck.tokenizer, ["abcab", "abcab", "ddeea", "ddeea"], False)
    task_ids = [0, 2, 1, 3]
    kw = dict(max_new_tokens=6, num_beams=3)
    batched = generation.generate_texts(ck.model, ck.tokenizer, prompts, task_ids, batch_size=4, **kw)
    single = [generation.generate_texts(ck.model, ck.tokenizer, [p], [t], batch_size=1, **kw)[0]
              for p, t in zip(prompts, task_ids, strict=True)]
    assert batched == single
    assert batched[0] != batched[1] or batched[2] != batched[3]  # the task changes the output of a prompt


def test_gate_monitor_masks_padding_and_regularisers(stage1_ckpt):
    ck = load_checkpoint(stage1_ckpt)
    add_shared_experts(ck.model, ck.mta_config.model_copy(update={"num_shared_experts": 2}))
    ck.model.train()
    batch = _batch(ck.tokenizer, ck.registry)
    ids = batch.pop("task_ids")
    mon = GateMonitor(ck.model, ck.registry, "load_balancing", weight=0.5)
    with task_context(ck.model, ids):
        ck.model(**batch)
    reg = mon.after_forward(batch)
    # constant initial gate g = softmax(2, 0, 0): load balancing w·3·Σ g_j²
    g = torch.softmax(torch.tensor([2.0, 0.0, 0.0]), 0)
    assert reg.item() == pytest.approx(0.5 * 3 * float((g**2).sum()), rel=1e-5)
    n_layers = len(mta_layers(ck.model))
    assert float(mon._task_count.sum()) == n_layers * int(batch["attention_mask"].sum())  # padding excluded
    stats = mon.stats()
    assert stats["gate_0"] == pytest.approx(float(g[0]), rel=1e-5)
    assert stats["gate_entropy"] == pytest.approx(float(-(g * g.log()).sum()), rel=1e-5)
    assert float(mon._task_count.sum()) == 0.0  # a new window after stats()
    mon.regularizer = "entropy"
    with task_context(ck.model, ids):
        ck.model(**batch)
    assert mon.after_forward(batch).item() == pytest.approx(-0.5 * stats["gate_entropy"], rel=1e-5)
    mon.remove()


def test_stage2_resumed_run_ends_with_same_weights_as_uninterrupted(stage1_ckpt, synthetic_jsonl, tmp_path):
    from safetensors.torch import load_file

    cfg = _stage2_cfg(stage1_ckpt, synthetic_jsonl, {"gate_regularizer": "load_balancing"}, max_steps=4,
                      gradient_accumulation_steps=2)
    ex = _examples(synthetic_jsonl, load_checkpoint(stage1_ckpt).registry)

    def train(out, **kw):
        wiring = Stage2Wiring(cfg)
        res = run_training(cfg, 2, train_examples=ex, out_dir=out, setup_model=wiring.setup_model,
                           extra_loss=wiring.extra_loss, **kw)
        wiring.close()
        return res

    train(tmp_path / "full")
    assert train(tmp_path / "part", stop_after=2).steps == 2
    assert train(tmp_path / "part", resume=True).steps == 4
    full = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "part" / "adapter_model.safetensors"))
    assert full.keys() == resumed.keys() and any(".gate_net." in k for k in full)
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_residual_gate_combine_starts_at_stage1_and_mixes_paths(stage1_ckpt):
    """gate_combine residual: y = o₀ + Σ_j g_j o_j — exactly stage 1 at start for any gate bias, and
    the layer output matches that formula once the shared experts and gate are non-trivial."""
    ck = load_checkpoint(stage1_ckpt)
    batch = _batch(ck.tokenizer, ck.registry)
    ids = batch.pop("task_ids")
    with torch.no_grad(), task_context(ck.model, ids):
        stage1_logits = ck.model(**batch).logits
    add_shared_experts(ck.model, ck.mta_config.model_copy(
        update={"num_shared_experts": 2, "gate_init_bias": 0.0, "gate_combine": "residual"}))
    with torch.no_grad(), task_context(ck.model, ids):
        assert torch.equal(ck.model(**batch).logits, stage1_logits)  # g = (1/3, 1/3, 1/3), o_j = 0
    layer = mta_layers(ck.model)[0]
    torch.manual_seed(0)
    torch.nn.init.normal_(layer.shared.up, std=0.1)
    torch.nn.init.normal_(layer.gate_net.w2.weight, std=1.0)
    x = torch.randn(2, 5, layer.d_model)
    tids = ids[:2]
    with torch.no_grad(), task_context(ck.model, tids):
        y = layer(x)
        o0 = layer.task_mixture(x, tids)
        shared = layer.shared.expert_outputs(x)  # (2, 5, M, d)
        paths = torch.cat([o0.unsqueeze(-2), shared], dim=-2)
        g = layer.gate_net(paths)  # (2, 5, M+1)
    torch.testing.assert_close(y, o0 + (g[..., 1:, None] * shared).sum(-2), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(y, (g[..., None] * paths).sum(-2), atol=1e-4)  # not the convex mixture


@pytest.mark.parametrize("cap,gate_input,tune,shared", [(None, "paths", False, "bottleneck"),
                                                        (0.5, "paths", False, "bottleneck"),
                                                        (None, "hidden", False, "bottleneck"),
                                                        (None, "paths", True, "bottleneck"),
                                                        (None, "paths", False, "lora")])
def test_residual_stage2_trains_saves_and_reloads(cap, gate_input, tune, shared, stage1_ckpt, synthetic_jsonl,
                                                  tmp_path):
    cfg = _stage2_cfg(stage1_ckpt, synthetic_jsonl,
                      {"gate_combine": "residual", "gate_init_bias": 0.0, "gate_logit_cap": cap,
                       "gate_input": gate_input, "shared_expert": shared, "shared_rank": 3 if shared == "lora" else None},
                      tune_task_experts=tune)
    wiring = Stage2Wiring(cfg)
    ex = _examples(synthetic_jsonl, load_checkpoint(stage1_ckpt).registry)
    run_training(cfg, 2, train_examples=ex, out_dir=tmp_path / "s2", setup_model=wiring.setup_model,
                 extra_loss=wiring.extra_loss)
    wiring.close()
    trained = wiring.bundle.model
    learnt = [layer.shared.up if shared == "bottleneck" else layer.shared.lora_B_out for layer in mta_layers(trained)]
    assert all(w.abs().sum() > 0 for w in learnt)  # shared experts learnt
    ck = load_checkpoint(tmp_path / "s2")
    assert ck.mta_config.gate_combine == "residual"
    assert all(layer.gate_combine == "residual" for layer in mta_layers(ck.model))
    assert ck.mta_config.gate_logit_cap == cap
    assert all(layer.gate_net.logit_cap == cap for layer in mta_layers(ck.model))
    assert (ck.mta_config.shared_expert, type(mta_layers(ck.model)[0].shared).__name__) == (
        shared, "LoRAExperts" if shared == "lora" else "BottleneckExperts")
    assert ck.mta_config.gate_input == gate_input
    assert all(layer.gate_net.inputs == gate_input for layer in mta_layers(ck.model))
    batch = _batch(ck.tokenizer, ck.registry)
    ids = batch.pop("task_ids")
    trained.eval()
    with torch.no_grad(), task_context(ck.model, ids):
        reloaded = ck.model(**batch).logits
    with torch.no_grad(), task_context(trained, ids):
        assert torch.equal(reloaded, trained(**batch).logits)


def _pooled_stage2(model, mta_config, seed: int = 0):
    add_shared_experts(model, mta_config.model_copy(update={"num_shared_experts": 2, "gate": "pooled"}))
    torch.manual_seed(seed)
    for layer in mta_layers(model):  # a gate and shared experts that are far from their start
        torch.nn.init.normal_(layer.shared.up, std=1.0)
        torch.nn.init.normal_(layer.gate_net.w2.weight, std=3.0)
    return model


def test_pooled_gate_ignores_padding(stage1_ckpt):
    """The pooled gate averages over real tokens only: a padded batch gives each sample the gate and
    the output it gets alone (left padding in generation, right padding in training)."""
    ck = load_checkpoint(stage1_ckpt)
    model = _pooled_stage2(ck.model, ck.mta_config)
    prompts = generation.encode_prompts(ck.tokenizer, ["abcabcabca", "dd", "abc", "eeddaab"], False)
    task_ids = [0, 2, 1, 3]
    for left in (True, False):
        ids, mask = generation.pad_prompts(prompts, ck.tokenizer.pad_token_id, left=left)
        with torch.no_grad(), task_context(model, torch.tensor(task_ids)):
            model(input_ids=ids, attention_mask=mask)
            batched = [layer.last_gate.clone() for layer in mta_layers(model)]
        for i, (p, t) in enumerate(zip(prompts, task_ids, strict=True)):
            with torch.no_grad(), task_context(model, torch.tensor([t])):
                model(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long))
                for g_batch, layer in zip(batched, mta_layers(model), strict=True):
                    torch.testing.assert_close(g_batch[i], layer.last_gate[0], rtol=1e-5, atol=1e-6)
    kw = dict(max_new_tokens=5, num_beams=2)
    batched_text = generation.generate_texts(model, ck.tokenizer, prompts, task_ids, batch_size=4, **kw)
    single = [generation.generate_texts(model, ck.tokenizer, [p], [t], batch_size=1, **kw)[0]
              for p, t in zip(prompts, task_ids, strict=True)]
    assert batched_text == single


def test_pooled_gate_t5_encoder_ignores_padding(tiny_t5_dir, synthetic_jsonl):
    from alter_cli.inject import attach_mta
    from alter_cli.models import load_base_model

    cfg = AlterConfig.model_validate(stage1_dict(tiny_t5_dir, synthetic_jsonl))
    registry = TaskRegistry.from_config(cfg.tasks)
    loaded = load_base_model(str(tiny_t5_dir))
    model = loaded.model.eval()
    attach_mta(model, cfg.mta, registry)
    assert [layer.reads_attention_mask for layer in mta_layers(model)] == [True, False]  # encoder, decoder
    model = _pooled_stage2(model, cfg.mta)
    encoder_layer = mta_layers(model)[0]
    prompts = [[5, 6, 7, 8, 9, 1], [10, 11, 1]]
    ids, mask = generation.pad_prompts(prompts, 0, left=False)
    with torch.no_grad(), task_context(model, torch.tensor([0, 1])):
        model.get_encoder()(input_ids=ids, attention_mask=mask)  # as generate() calls it
        g_batch = encoder_layer.last_gate.clone()
    for i, p in enumerate(prompts):
        with torch.no_grad(), task_context(model, torch.tensor([i])):
            model.get_encoder()(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long))
            torch.testing.assert_close(g_batch[i], encoder_layer.last_gate[0], rtol=1e-5, atol=1e-6)
