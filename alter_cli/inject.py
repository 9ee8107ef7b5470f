"""Find each supported architecture's FFN, attach MTA layers to it, and freeze/unfreeze by stage.

The model's code is not edited: each MTA layer becomes a child `alter_mta` of the block's FFN module,
and either a forward hook adds its output to the FFN output (`parallel`), or the FFN module's
`forward` is replaced on the instance by the MTA layer (`replace`, and always for `lora` and
`hydra_lora` experts, whose mixture already contains the adapted FFN). Base parameter names are unchanged.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .config import MTAConfig
from .data import TaskRegistry
from .mta import REPLACES_FFN, FFNWeights, MTALayer, mta_layers

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gpt2", "t5")
MTA_PREFIX = "alter_mta"


class InjectError(ValueError):
    """The model or the MTA placement cannot be used (unsupported architecture, bad layer index)."""


@dataclass(frozen=True)
class _Arch:
    stacks: tuple[tuple[str, str], ...]  # (config stack name, dotted path to the block list)
    ffn_path: str  # dotted path from a block to its FFN module
    ffn_weights: Callable[[nn.Module], FFNWeights]


def _llama_ffn(m: nn.Module) -> FFNWeights:
    return FFNWeights(
        w_in=m.up_proj.weight, w_gate=m.gate_proj.weight, w_out=m.down_proj.weight, act=m.act_fn,
        b_in=m.up_proj.bias, b_gate=m.gate_proj.bias, b_out=m.down_proj.bias,
    )


def _gpt2_ffn(m: nn.Module) -> FFNWeights:  # Conv1D stores (in, out)
    return FFNWeights(w_in=m.c_fc.weight.t(), w_out=m.c_proj.weight.t(), act=m.act, b_in=m.c_fc.bias, b_out=m.c_proj.bias)


def _t5_ffn(m: nn.Module) -> FFNWeights:
    if hasattr(m, "wi_0"):
        return FFNWeights(w_in=m.wi_1.weight, w_gate=m.wi_0.weight, w_out=m.wo.weight, act=m.act)
    return FFNWeights(w_in=m.wi.weight, w_out=m.wo.weight, act=m.act)


ARCHITECTURES: dict[str, _Arch] = {
    "llama": _Arch((("layers", "model.layers"),), "mlp", _llama_ffn),
    "qwen2": _Arch((("layers", "model.layers"),), "mlp", _llama_ffn),
    "gpt2": _Arch((("layers", "transformer.h"),), "mlp", _gpt2_ffn),
    "t5": _Arch(
        (("encoder_layers", "encoder.block"), ("decoder_layers", "decoder.block")), "layer.-1.DenseReluDense", _t5_ffn
    ),
}


def architecture_of(model: nn.Module) -> str:
    """The model's architecture key in ARCHITECTURES; InjectError naming the supported ones otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise InjectError(
            f"unsupported architecture {model_type!r}: supported are Llama/SmolLM2 (llama), Qwen2 (qwen2), "
            "GPT-2 (gpt2) and T5 (t5)"
        )
    return model_type


def _get(root: nn.Module, dotted: str) -> nn.Module:
    node = root
    for part in dotted.split("."):
        node = node[int(part)] if part.lstrip("-").isdigit() else getattr(node, part)
    return node


def default_task_to_experts(registry: TaskRegistry, num_experts: int, mapping: dict[str, list[int]] | None):
    """Task id -> own expert indices: the configured map, else task i owns expert i mod E."""
    mapping = mapping or {}
    for name in mapping:
        registry.id(name)  # unknown task names raise UnknownTaskError
    return [list(mapping.get(name, [i % num_experts])) for i, name in enumerate(registry.names)]


def _selected(indices: list[int] | None, n: int, default: list[int], key: str) -> list[int]:
    chosen = default if indices is None else indices
    out = []
    for i in chosen:
        if not -n <= i < n:
            raise InjectError(f"mta.{key}: layer index {i} out of range for a model with {n} blocks")
        out.append(i % n)
    if len(set(out)) != len(out):
        raise InjectError(f"mta.{key}: a layer is listed twice")
    return sorted(out)


def _parallel_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + getattr(module, MTA_PREFIX)(args[0]).to(output.dtype)


def _replace_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return getattr(self, MTA_PREFIX)(hidden_states)


def ffn_modules(model: nn.Module, mta_config: MTAConfig) -> list[nn.Module]:
    """The FFN modules of the blocks MTA layers go to, in model order (`attach_mta`; the LoRA
    baseline adapts the same ones). Layer defaults: the last 4 blocks of a decoder-only model; the
    last block of the encoder and of the decoder of a T5 model. Raises InjectError."""
    arch = ARCHITECTURES[architecture_of(model)]
    out = []
    for key, path in arch.stacks:
        blocks = _get(model, path)
        n = len(blocks)
        default = list(range(max(0, n - 4), n)) if key == "layers" else [n - 1]
        out += [_get(blocks[i], arch.ffn_path) for i in _selected(getattr(mta_config, key), n, default, key)]
    return out


def attach_mta(model: nn.Module, mta_config: MTAConfig, registry: TaskRegistry) -> list[MTALayer]:
    """Attach one MTA layer to the FFN of each configured block; returns the layers in model order.

    Layer defaults: the last 4 blocks of a decoder-only model; the last block of the encoder and of
    the decoder of a T5 model. Raises InjectError (unsupported architecture, bad layer list, MTA
    already attached) and data.UnknownTaskError (task_to_experts naming an unknown task).
    """
    arch = ARCHITECTURES[architecture_of(model)]
    if mta_layers(model):
        raise InjectError("the model already has MTA layers")
    cfg = mta_config
    keys = {k for k, _ in arch.stacks}
    for key in ("layers", "encoder_layers", "decoder_layers"):
        if key not in keys and getattr(cfg, key) is not None:
            raise InjectError(f"mta.{key} does not apply to a {model.config.model_type} model (use {sorted(keys)})")
    task_to_experts = default_task_to_experts(registry, cfg.num_experts, cfg.task_to_experts)
    d_model = model.config.d_model if hasattr(model.config, "d_model") else model.config.hidden_size
    layers = []
    names = {id(m): n for n, m in model.named_modules()}
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    for ffn_module in ffn_modules(model, cfg):
        ref = ffn_module  # closure keeps the live module, so lora reads current (moved) weights

        def get_ffn(ref: nn.Module = ref) -> FFNWeights:
            return arch.ffn_weights(ref)

        p = next(ffn_module.parameters())
        layer = MTALayer(
            d_model, len(registry), cfg.num_experts, task_to_experts, expert=cfg.expert, rank=cfg.rank,
            activation=cfg.activation, temperature=cfg.temperature, own_init=cfg.own_init,
            other_init=cfg.other_init, ffn=get_ffn(), get_ffn=get_ffn, lora_alpha=cfg.lora_alpha,
        ).to(device=p.device)
        layer.reads_attention_mask = not (encoder_decoder and names[id(ffn_module)].startswith("decoder."))
        ffn_module.add_module(MTA_PREFIX, layer)
        if cfg.placement == "replace" or cfg.expert in REPLACES_FFN:
            ffn_module.forward = types.MethodType(_replace_forward, ffn_module)
            layer.replaces_ffn = True
        else:
            ffn_module.register_forward_hook(_parallel_hook)
            layer.replaces_ffn = False
        layers.append(layer)
    if not layers:
        raise InjectError(f"mta: the layer lists ({', '.join(sorted(keys))}) select no block")
    return layers


def add_shared_experts(model: nn.Module, mta_config: MTAConfig) -> list[MTALayer]:
    """Stage 2: add `mta_config.num_shared_experts` shared experts + gate to every MTA layer."""
    layers = mta_layers(model)
    if not layers:
        raise InjectError("the model has no MTA layers to add shared experts to")
    for layer in layers:
        layer.add_shared_experts(
            mta_config.num_shared_experts, gate=mta_config.gate, hidden=mta_config.gate_hidden,
            init_bias=mta_config.gate_init_bias, combine=mta_config.gate_combine, task=mta_config.gate_task,
            logit_cap=mta_config.gate_logit_cap, inputs=mta_config.gate_input, kind=mta_config.shared_expert,
            rank=mta_config.shared_rank,
        )
    return layers


def is_mta_param(name: str) -> bool:
    """True for the parameter/buffer names that belong to MTA layers."""
    return f"{MTA_PREFIX}." in name


def mta_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """MTA parameters only (task experts, selector, shared experts, gate), as contiguous CPU tensors."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if is_mta_param(k)}


def set_trainable(model: nn.Module, stage: int, unfreeze_backbone: bool = False, tune_selector: bool = False,
                  tune_task_experts: bool = False) -> int:
    """Freeze/unfreeze by stage; returns the number of trainable parameters.

    stage 1: task experts + selector (backbone too if unfreeze_backbone, except FFNs an MTA layer
    replaces, which would get no gradient). stage 2: shared experts + gate (+ selector if
    tune_selector, + task experts if tune_task_experts); the backbone frozen. Raises ValueError for another stage or a
    stage 2 without shared experts.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    layers = mta_layers(model)
    for p in model.parameters():
        p.requires_grad_(False)
    if stage == 1 and unfreeze_backbone:
        replaced = {id(p) for layer in layers if layer.replaces_ffn for p in _ffn_owner_params(model, layer)}
        for name, p in model.named_parameters():
            if not is_mta_param(name) and id(p) not in replaced:
                p.requires_grad_(True)
    for layer in layers:
        if stage == 1:
            layer.experts.requires_grad_(True)
            layer.selector.requires_grad_(True)
        else:
            if layer.shared is None or layer.gate_net is None:
                raise ValueError("stage 2 needs shared experts: call inject.add_shared_experts first")
            layer.shared.requires_grad_(True)
            layer.gate_net.requires_grad_(True)
            layer.selector.requires_grad_(tune_selector)
            layer.experts.requires_grad_(tune_task_experts)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _ffn_owner_params(model: nn.Module, layer: MTALayer) -> list[nn.Parameter]:
    for module in model.modules():
        if getattr(module, MTA_PREFIX, None) is layer:
            return [p for n, p in module.named_parameters() if not n.startswith(MTA_PREFIX)]
    return []


def optimizer_param_groups(model: nn.Module, learning_rate: float, mta_config: MTAConfig | None) -> list[dict]:
    """AdamW parameter groups of the trainable parameters: the selector logits at
    `mta.selector_learning_rate`, the gate networks at `mta.gate_learning_rate` (each None: the
    shared `learning_rate`), everything else at `learning_rate`. Empty groups are left out."""
    sel_lr = getattr(mta_config, "selector_learning_rate", None) or learning_rate
    gate_lr = getattr(mta_config, "gate_learning_rate", None) or learning_rate
    selector, gate = set(), set()
    for layer in mta_layers(model):
        selector.add(id(layer.selector))
        if layer.gate_net is not None:
            gate.update(id(p) for p in layer.gate_net.parameters())
    groups: dict[str, list[nn.Parameter]] = {"other": [], "selector": [], "gate": []}
    for p in model.parameters():
        if p.requires_grad:
            groups["selector" if id(p) in selector else "gate" if id(p) in gate else "other"].append(p)
    lrs = {"other": learning_rate, "selector": sel_lr, "gate": gate_lr}
    return [{"params": ps, "lr": lrs[k], "name": k} for k, ps in groups.items() if ps]
