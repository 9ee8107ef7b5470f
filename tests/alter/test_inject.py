"""Attaching MTA to tiny Llama/Qwen2/GPT-2/T5 models: exact base logits at init, trainability, routing."""

import pytest
import torch

from alter_cli.config import MTAConfig
from alter_cli.data import TaskRegistry, TaskSpec, UnknownTaskError
from alter_cli.inject import InjectError, add_shared_experts, attach_mta, is_mta_param, set_trainable
from alter_cli.mta import mta_layers, task_context

from .conftest import make_model

REG = TaskRegistry([TaskSpec("a", "generate"), TaskSpec("b", "classify", ("x", "y")), TaskSpec("c", "generate")])


def _batch(arch, B=3, L=6):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 40, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[0, :2] = 0 if arch != "t5" else 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if arch == "t5":
        batch["decoder_input_ids"] = torch.randint(5, 40, (B, 4), generator=g)
    return batch


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "t5"])
def test_zero_init_logits_equal_base_exactly(arch):
    model = make_model(arch, layers=3)
    batch = _batch(arch)
    with torch.no_grad():
        base = model(**batch).logits
    layers = attach_mta(model, MTAConfig(num_experts=5, rank=4), REG)
    assert len(layers) == (3 if arch != "t5" else 2)  # last 4 (of 3) blocks; last encoder + decoder block
    with torch.no_grad(), task_context(model, torch.tensor([0, 2, 1])):
        out = model(**batch).logits
    assert torch.equal(out, base)


@pytest.mark.parametrize("arch", ["llama", "t5"])
@pytest.mark.parametrize("expert", ["ffn_copy", "lora"])
def test_replace_with_copy_or_lora_starts_at_base_model(arch, expert):
    model = make_model(arch)
    batch = _batch(arch)
    with torch.no_grad():
        base = model(**batch).logits
    attach_mta(model, MTAConfig(expert=expert, placement="replace", num_experts=3, rank=2), REG)
    with torch.no_grad(), task_context(model, torch.tensor([0, 1, 2])):
        out = model(**batch).logits
    torch.testing.assert_close(out, base, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_after_backward_only_mta_params_have_grads(arch):
    model = make_model(arch)
    attach_mta(model, MTAConfig(num_experts=3, rank=4), REG)
    n = set_trainable(model, 1)
    assert n == sum(p.numel() for name, p in model.named_parameters() if is_mta_param(name))
    model.train()
    batch = _batch(arch)
    batch["labels"] = batch["input_ids"] if arch != "t5" else batch.pop("decoder_input_ids")
    with task_context(model, torch.tensor([0, 0, 1])):  # task c absent from the batch
        model(**batch).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == is_mta_param(name), name
    for layer in mta_layers(model):
        assert torch.count_nonzero(layer.selector.grad[2]) == 0
        assert torch.count_nonzero(layer.experts.up.grad) > 0  # zero-init up: only it moves first


def test_stage2_trainability_and_unfreeze_backbone():
    model = make_model("llama")
    attach_mta(model, MTAConfig(num_experts=3, rank=4, num_shared_experts=2), REG)
    with pytest.raises(ValueError, match="shared experts"):
        set_trainable(model, 2)
    add_shared_experts(model, MTAConfig(num_shared_experts=2, rank=4))
    set_trainable(model, 2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".shared." in n or ".gate_net." in n for n in trainable)
    set_trainable(model, 2, tune_selector=True)
    assert any(n.endswith("selector") for n, p in model.named_parameters() if p.requires_grad)
    set_trainable(model, 1, unfreeze_backbone=True)
    assert model.model.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".shared." in n)


def test_layer_selection_errors_and_unknown_task_map():
    with pytest.raises(InjectError, match="out of range"):
        attach_mta(make_model("llama"), MTAConfig(layers=[5]), REG)
    with pytest.raises(InjectError, match="does not apply"):
        attach_mta(make_model("llama"), MTAConfig(encoder_layers=[0]), REG)
    with pytest.raises(UnknownTaskError, match="zzz"):
        attach_mta(make_model("llama"), MTAConfig(task_to_experts={"zzz": [0]}), REG)
    model = make_model("t5")
    layers = attach_mta(model, MTAConfig(encoder_layers=[0, 1], decoder_layers=[0]), REG)
    assert len(layers) == 3
    with pytest.raises(InjectError, match="already"):
        attach_mta(model, MTAConfig(), REG)


def test_unsupported_architecture_names_the_supported_ones():
    model = make_model("llama")
    model.config.model_type = "bert"
    with pytest.raises(InjectError, match="llama.*qwen2.*gpt2.*t5"):
        attach_mta(model, MTAConfig(), REG)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_generate_with_beams_uses_per_sample_tasks(arch):
    model = make_model(arch)
    attach_mta(model, MTAConfig(num_experts=3, rank=4), REG)
    for layer in mta_layers(model):
        torch.nn.init.normal_(layer.experts.up, std=0.5)
    batch = _batch(arch, B=2)
    batch.pop("decoder_input_ids", None)
    kw = dict(max_new_tokens=4, num_beams=3, do_sample=False, pad_token_id=0)
    with torch.no_grad(), task_context(model, torch.tensor([0, 2])):
        both = model.generate(**batch, **kw)
    with torch.no_grad(), task_context(model, torch.tensor([2])):
        second = model.generate(**{k: v[1:] for k, v in batch.items()}, **kw)
    assert torch.equal(both[1, : second.shape[1]], second[0])
    with pytest.raises(RuntimeError, match="task_context"):
        model(**_batch(arch, B=2))


def test_bf16_backbone_without_autocast_runs_fp32_mta():
    model = make_model("llama")
    attach_mta(model, MTAConfig(num_experts=2, rank=4), REG)
    model.to(torch.bfloat16)
    for layer in mta_layers(model):
        layer.float()
    with torch.no_grad(), task_context(model, torch.tensor([0, 1, 2])):
        out = model(**_batch("llama")).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
