"""The multi-task PEFT LoRA baseline of `alter train-baseline` (issue 7).

LoRA (Hu et al. 2021, arXiv:2106.09685, eq. 3: h = W x + (alpha/r)·B A x, B zero-initialised) on
every linear projection of the FFN of the blocks MTA would use (`inject.ffn_modules` with the
config's `mta` section: SmolLM2's gate/up/down projections of the last 4 blocks by default), one
adapter shared by all tasks (no task routing: the multi-task baseline). Its rank is matched to the
trainable-parameter count of MTA stage 1 with the same `mta` section:
    r = max(1, round(n_MTA / Σ_m (d_in,m + d_out,m)))       (each projection m adds r·(d_in + d_out))
where n_MTA is counted on a meta-device copy of the model with the MTA layers attached (no memory,
exactly what `train-stage1` trains).

Training goes through `train.run_training` (same data, prompts, loss masking, task-balanced sampler,
optimizer, schedule and budget as stage 1) with an `AdapterIO` on the bundle: only `lora_` parameters
train; checkpoints are PEFT's own format (`adapter_model.safetensors` + `adapter_config.json`, written
by `save_pretrained`, loadable with `peft.PeftModel.from_pretrained`) plus `alter_baseline.json`
(format version, base model + config hash, task registry, LoRA plan, data settings), in a temporary
folder renamed into place by the loop. `checkpoint.load_checkpoint` recognises such a folder and returns
the PEFT model as stage 0, so `alter eval` / `alter predict` score it like any checkpoint.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .checkpoint import (
    ADAPTER_WEIGHTS,
    BASELINE_CONFIG,
    FORMAT_VERSION,
    CheckpointError,
    check_base_weights,
    is_lora_param,
    read_baseline_meta,
)
from .config import LoRABaselineConfig, MTAConfig
from .data import TaskRegistry
from .inject import attach_mta, ffn_modules, set_trainable
from .models import load_base_model
from .quiet import peft_quietly
from .train import AdapterIO, ModelBundle


@dataclass(frozen=True)
class LoRAPlan:
    """Where the baseline's LoRA goes and how large it is.

    target_modules: full module names of the adapted projections; per_rank: Σ (d_in + d_out) over
    them (trainable parameters per unit of rank); mta_parameters: what MTA stage 1 trains with the
    same `mta` section; rank, alpha, dropout: the LoRA hyper-parameters; lora_parameters = rank·per_rank.
    """

    target_modules: tuple[str, ...]
    per_rank: int
    mta_parameters: int
    rank: int
    alpha: float
    dropout: float

    @property
    def lora_parameters(self) -> int:
        return self.rank * self.per_rank

    @property
    def relative_difference(self) -> float:
        """(n_LoRA − n_MTA) / n_MTA."""
        return (self.lora_parameters - self.mta_parameters) / self.mta_parameters

    def describe(self) -> str:
        return (f"lora baseline: rank {self.rank} (alpha {self.alpha:g}) on {len(self.target_modules)} FFN "
                f"projections: {self.lora_parameters:,} trainable parameters; MTA stage 1 with the same mta "
                f"section: {self.mta_parameters:,} ({100 * self.relative_difference:+.1f}%)")


def mta_stage1_parameter_count(model: nn.Module, mta_config: MTAConfig, registry: TaskRegistry) -> int:
    """Number of parameters MTA stage 1 trains on `model` (backbone frozen), counted on a copy of the
    model built on the meta device (no weights allocated). Raises InjectError / UnknownTaskError."""
    with torch.device("meta"):
        skeleton = type(model)(copy.deepcopy(model.config))
    attach_mta(skeleton, mta_config, registry)
    return set_trainable(skeleton, 1)


def ffn_projection_names(model: nn.Module, mta_config: MTAConfig) -> list[str]:
    """Full names of the linear projections (nn.Linear, GPT-2 Conv1D) of the FFN modules MTA uses."""
    from transformers.pytorch_utils import Conv1D

    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for ffn in ffn_modules(model, mta_config):
        out += [f"{names[id(ffn)]}.{child}" for child, m in ffn.named_children() if isinstance(m, (nn.Linear, Conv1D))]
    return out


def plan_lora(model: nn.Module, mta_config: MTAConfig, registry: TaskRegistry,
              options: LoRABaselineConfig) -> LoRAPlan:
    """The LoRA plan for `model` (a bare base model): targets, rank (matched unless options.rank), alpha."""
    targets = ffn_projection_names(model, mta_config)
    modules = dict(model.named_modules())
    per_rank = sum(int(sum(modules[t].weight.shape)) for t in targets)
    n_mta = mta_stage1_parameter_count(model, mta_config, registry)
    rank = options.rank if options.rank is not None else max(1, round(n_mta / per_rank))
    alpha = options.alpha if options.alpha is not None else 2.0 * rank
    return LoRAPlan(tuple(targets), per_rank, n_mta, rank, float(alpha), options.dropout)


def _lora_set_trainable(model: nn.Module) -> int:
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_param(name))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _load_lora_weights(folder: Path, model: nn.Module) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / ADAPTER_WEIGHTS)))


def build_baseline(cfg: Any) -> tuple[ModelBundle, LoRAPlan]:
    """Load the base model (cfg.model) and wrap it with PEFT LoRA as planned by `plan_lora`
    (cfg.mta, cfg.lora). The bundle carries an AdapterIO, so `train.run_training` trains and saves
    the LoRA weights only. Raises ModelLoadError / InjectError."""
    from peft import LoraConfig, get_peft_model

    loaded = load_base_model(cfg.model.name, cfg.model.gguf_file)
    registry = TaskRegistry.from_config(cfg.tasks)
    plan = plan_lora(loaded.model, cfg.mta, registry, cfg.lora)
    lora_config = LoraConfig(
        r=plan.rank, lora_alpha=plan.alpha, lora_dropout=plan.dropout, target_modules=list(plan.target_modules),
        bias="none", task_type="SEQ_2_SEQ_LM" if loaded.is_seq2seq else "CAUSAL_LM",
        base_model_name_or_path=loaded.ref.name,
    )
    with peft_quietly():
        model = get_peft_model(loaded.model, lora_config)
    data_cfg = cfg.data

    def write(folder: Path, raw: Any, step: int) -> None:
        raw.save_pretrained(str(folder), safe_serialization=True)
        meta = {
            "format_version": FORMAT_VERSION, "alter_version": __version__, "method": "lora", "stage": 0,
            "step": step, "base_model": loaded.ref.to_dict(), "registry": registry.to_dict(),
            "lora": asdict(plan) | {"lora_parameters": plan.lora_parameters},
            "mta_config": cfg.mta.model_dump(mode="json"),
            "data": {k: getattr(data_cfg, k) for k in ("prompt_format", "max_length", "max_target_length")},
        }
        (folder / BASELINE_CONFIG).write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")

    def check_resumable(folder: Path) -> dict[str, Any]:
        meta = read_baseline_meta(folder)
        if meta.get("method") != "lora":
            raise CheckpointError(f"--resume: {str(folder)!r} is not a LoRA baseline checkpoint")
        if (meta.get("base_model") or {}).get("config_hash") != loaded.ref.config_hash:
            raise CheckpointError(f"--resume: {str(folder)!r} was trained on another base model "
                                  f"({(meta.get('base_model') or {}).get('name')!r})")
        check_base_weights(folder, meta.get("base_model"), loaded.ref, "--resume:")
        if meta.get("registry") != registry.to_dict():
            raise CheckpointError(f"--resume: {str(folder)!r} was trained with another task registry (tasks:)")
        saved = meta.get("lora") or {}
        for key in ("rank", "alpha", "dropout", "target_modules"):
            now = list(getattr(plan, key)) if key == "target_modules" else getattr(plan, key)
            if saved.get(key) != now:
                raise CheckpointError(f"--resume: {str(folder)!r} was trained with another LoRA setting: "
                                      f"{key} was {saved.get(key)!r}, now {now!r}")
        return meta

    adapter = AdapterIO(is_param=is_lora_param, set_trainable=_lora_set_trainable, write=write,
                        load=_load_lora_weights, check_resumable=check_resumable)
    return ModelBundle(model, loaded.tokenizer, registry, None, loaded.ref, adapter), plan


def write_per_task_meta(out: Path, registry: TaskRegistry) -> dict[str, Any]:
    """alter_baseline.json of a per-task LoRA folder (`train-baseline --per-task`, `per_task` module),
    from the adapters' own alter_baseline.json under adapters/: method lora_per_task, task → adapter
    folder, the LoRA plan of one adapter and the total count (T × one adapter). Written atomically;
    returns the meta. Raises CheckpointError when an adapter is missing or of another base model."""
    from .per_task import ADAPTERS_DIR, METHOD, adapter_name

    subs = {t: read_baseline_meta(out / ADAPTERS_DIR / adapter_name(t)) for t in registry.names}
    first = next(iter(subs.values()))
    for t, m in subs.items():
        if m["base_model"] != first["base_model"] or m["lora"]["rank"] != first["lora"]["rank"]:
            raise CheckpointError(f"per-task LoRA {str(out)!r}: adapter of task {t!r} has another base model or rank")
    per_adapter = int(first["lora"]["lora_parameters"])
    meta = {
        "format_version": FORMAT_VERSION, "alter_version": __version__, "method": METHOD, "stage": 0,
        "step": {t: m["step"] for t, m in subs.items()}, "base_model": first["base_model"],
        "registry": registry.to_dict(), "adapters": {t: f"{ADAPTERS_DIR}/{adapter_name(t)}" for t in registry.names},
        "lora": first["lora"], "lora_parameters_per_adapter": per_adapter,
        "lora_parameters": per_adapter * len(subs), "mta_parameters": int(first["lora"]["mta_parameters"]),
        "mta_config": first["mta_config"], "data": first["data"],
    }
    tmp = out / f".{BASELINE_CONFIG}.tmp"
    tmp.write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")
    tmp.replace(out / BASELINE_CONFIG)
    return meta
