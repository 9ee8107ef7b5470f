"""`alter export`: a trained checkpoint out to PEFT LoRA adapters or a merged Hugging Face model.

What is exact and what is not (spec section 1, `experts.py`):
- `hydra_lora` experts (HydraLoRA, arXiv:2404.19245) compute, on every FFN projection W (out, in),
      proj(x) = W x + b + s · (Σ_k α_{t,k} B_k) A x,        s = lora_alpha / r
  so task t's stage-1 mixture *is* one rank-r LoRA per projection: A' = A, B' = Σ_k α_{t,k} B_k,
  with α_t = softmax(w_t / τ) from the trained selector of that MTA layer. PEFT computes
  W x + (lora_alpha / r) · B A x (Hu et al. 2021, eq. 3), so the adapter keeps r and lora_alpha = s · r.
- `lora` experts mix E *adapted FFNs* at the output, Σ_k α_{t,k} FFN_{W + s B_k A_k}(x); through the
  FFN's activation (and the gate ⊙ up product) that is not one FFN with one LoRA, neither with the
  deltas summed nor with the ranks concatenated. It is exactly expert k's LoRA only when α_t is
  one-hot; such a checkpoint (every MTA layer with 1 − max_k α_{t,k} ≤ ONE_HOT_TOL, e.g. E = 1)
  is exported, any other is refused.
- `bottleneck` / `ffn_copy` experts (non-linear modules beside or instead of the FFN) and stage-2
  checkpoints (bottleneck shared experts and an input-dependent gate) have no LoRA or merged-weight
  form: refused (ExportError), naming what can be exported instead.
- A LoRA baseline checkpoint (`alter train-baseline`) already is a PEFT adapter: `peft` copies its
  adapter files as they are (one copy per task; per task its own adapter for `--per-task`), `merged`
  merges it with PEFT's own `merge_and_unload`.

Outputs (`--out DIR`, a new folder, or an earlier `alter export` output with `--overwrite`):
- peft: DIR/<task>/adapter_config.json + adapter_model.safetensors (PEFT's format: keys
  `base_model.model.<module>.lora_{A,B}.weight`, config written by peft's LoraConfig), loadable
  with `PeftModel.from_pretrained(base, DIR/<task>)`, and alter_export.json (source, step, α, base
  model record). The base must be the checkpoint's base model (for `default`: alter's dequantised
  SmolLM2 folder, named in base_model_name_or_path).
- merged: DIR = config.json, model.safetensors, generation config and tokenizer (save_pretrained)
  of the base model with W ← W + s · B' A on every adapted projection and no MTA module, loadable with
  `AutoModelForCausalLM.from_pretrained(DIR)` (T5: AutoModelForSeq2SeqLM).
The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BASELINE_CONFIG,
    CheckpointError,
    LoadedCheckpoint,
    is_baseline_checkpoint,
    load_checkpoint,
    load_checkpoint_base,
    read_baseline_meta,
    read_checkpoint_meta,
    verify_checkpoint,
)
from .data import TaskRegistry
from .inject import MTA_PREFIX
from .mta import MTALayer
from .outdir import check_replaceable, write_marker

FORMATS = ("peft", "merged")
KIND = "export"
EXPORT_RECORD = "alter_export.json"
ONE_HOT_TOL = 1e-7  # `lora` experts: the weight left on the other experts (float32 resolution)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# projection of experts.py ("in", "gate", "out") -> child module of the architecture's FFN
PROJECTIONS = {
    "llama": {"in": "up_proj", "gate": "gate_proj", "out": "down_proj"},
    "qwen2": {"in": "up_proj", "gate": "gate_proj", "out": "down_proj"},
    "gpt2": {"in": "c_fc", "out": "c_proj"},
    "t5": {"in": "wi_1", "gate": "wi_0", "out": "wo"},
    "t5-plain": {"in": "wi", "out": "wo"},
}


class ExportError(ValueError):
    """A checkpoint, task or output folder that cannot be exported exactly (one line)."""


@dataclass
class TaskLoRA:
    """Task t's stage-1 mixture as one LoRA: for every adapted projection (full module name)
    A (r, in) and B (out, r), with PEFT's lora_alpha (scaling lora_alpha / r = the experts' s)."""

    task: str
    rank: int
    lora_alpha: float
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]
    alpha: list[list[float]] = field(default_factory=list)  # α_t per MTA layer (model order)
    conv1d: bool = False  # GPT-2 Conv1D projections (weights stored (in, out))


def _ffn_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, MTALayer]]:
    """(FFN module name, FFN module, its MTA layer) for every MTA layer, in model order."""
    out = []
    for name, module in model.named_modules():
        layer = module._modules.get(MTA_PREFIX) if hasattr(module, "_modules") else None
        if isinstance(layer, MTALayer):
            out.append((name, module, layer))
    return out


def _projection_children(model: torch.nn.Module, ffn: torch.nn.Module) -> dict[str, str]:
    arch = model.config.model_type
    if arch == "t5" and not hasattr(ffn, "wi_0"):
        arch = "t5-plain"
    return PROJECTIONS[arch]


def check_exportable(meta: dict[str, Any], where: str, fmt: str) -> None:
    """Refuse (ExportError) an MTA checkpoint (its adapter_config.json record `meta`) whose task
    mixtures are no LoRA: stage 2, bottleneck / ffn_copy experts; for `peft` also a trained
    backbone (the adapter alone would miss it). Nothing is loaded."""
    if meta.get("stage") == 2 or meta.get("has_shared_experts"):
        raise ExportError(
            f"{where}: a stage-2 checkpoint cannot be exported exactly: its bottleneck shared experts and "
            "input-dependent gate are neither a LoRA nor a weight change; export the stage-1 checkpoint it "
            "was trained from (hydra_lora or lora experts)")
    kind = (meta.get("mta_config") or {}).get("expert", "bottleneck")
    if kind in ("bottleneck", "ffn_copy"):
        raise ExportError(
            f"{where}: {kind} experts cannot be exported exactly: they are non-linear modules "
            f"{'beside' if kind == 'bottleneck' else 'instead of'} the FFN, not a change of its weights; "
            "train with mta.expert=hydra_lora (each task's mixture is one LoRA) to export, or serve it with alter")
    if fmt == "peft" and meta.get("backbone_weights"):
        raise ExportError(f"{where}: the backbone was trained (train.unfreeze_backbone): a PEFT adapter "
                          "alone would miss those weights; use --format merged")


def task_lora(ck: LoadedCheckpoint, task: str) -> TaskLoRA:
    """Task `task`'s stage-1 mixture of every MTA layer as one LoRA (module docstring).
    Raises ExportError for `lora` experts whose α_t is not one-hot."""
    tid = ck.registry.id(task)
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    alphas, rank, scaling, conv1d = [], None, None, False
    from transformers.pytorch_utils import Conv1D

    with torch.no_grad():
        for name, ffn, layer in _ffn_modules(ck.model):
            a = layer.alpha()[tid]  # (E,), in the selector dtype, as MTALayer.task_mixture computes it
            alphas.append([float(v) for v in a])
            experts = layer.experts
            rank, scaling = experts.rank, experts.scaling
            if layer.expert_kind == "lora":
                k = int(a.argmax())
                if float(1.0 - a[k]) > ONE_HOT_TOL:
                    raise ExportError(
                        f"task {task!r}: lora experts mix {layer.num_experts} adapted FFNs at the output "
                        f"(α = {', '.join(f'{v:.3g}' for v in a.tolist())} in {name}), which is one LoRA only when α "
                        "is one-hot; train with mta.expert=hydra_lora (exportable for any α), or serve it with alter")
            for proj, child in _projection_children(ck.model, ffn).items():
                if not hasattr(experts, f"lora_A_{proj}"):
                    continue
                A, B = getattr(experts, f"lora_A_{proj}"), getattr(experts, f"lora_B_{proj}")
                if layer.expert_kind == "lora":
                    A_t, B_t = A[k], B[k]
                else:  # Σ_k α_k B_k computed as HydraLoRAExperts.mixed_b does
                    A_t, B_t = A, (a[None].to(B.dtype) @ B.flatten(1)).unflatten(1, B.shape[1:])[0]
                weights[f"{name}.{child}"] = (A_t.detach().cpu().clone(), B_t.detach().cpu().clone())
                conv1d = conv1d or isinstance(getattr(ffn, child), Conv1D)
    if rank is None:
        raise ExportError(f"task {task!r}: the checkpoint has no MTA layers")
    cfg = ck.mta_config
    lora_alpha = float(cfg.lora_alpha) if cfg is not None and cfg.lora_alpha is not None else float(rank)
    if abs(lora_alpha / rank - scaling) > 1e-12 * max(1.0, scaling):
        raise ExportError(f"task {task!r}: LoRA scale {scaling} does not match mta.lora_alpha / rank")
    return TaskLoRA(task, rank, lora_alpha, weights, alphas, conv1d)


def peft_files(lora: TaskLoRA, base_name: str, seq2seq: bool) -> tuple[Any, dict[str, torch.Tensor]]:
    """PEFT's LoraConfig and adapter state dict (keys base_model.model.<module>.lora_{A,B}.weight) of
    one TaskLoRA."""
    from peft import LoraConfig

    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.lora_alpha, lora_dropout=0.0, bias="none", fan_in_fan_out=lora.conv1d,
        target_modules=sorted(lora.weights), task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
        base_model_name_or_path=base_name,
    )
    state = {}
    for module, (A, B) in lora.weights.items():
        state[f"base_model.model.{module}.lora_A.weight"] = A.float().contiguous()
        state[f"base_model.model.{module}.lora_B.weight"] = B.float().contiguous()
    return config, state


def merge_into_base(ck: LoadedCheckpoint, lora: TaskLoRA) -> torch.nn.Module:
    """The checkpoint's model with task `lora.task` merged: W ← W + (lora_alpha / r) B A on every
    adapted projection, and the MTA layers removed (the FFN's own forward restored). In place."""
    from transformers.pytorch_utils import Conv1D

    model = ck.model
    modules = dict(model.named_modules())
    s = lora.lora_alpha / lora.rank
    with torch.no_grad():
        for name, (A, B) in lora.weights.items():
            lin = modules[name]
            delta = (B.double() @ A.double()) * s  # (out, in)
            if isinstance(lin, Conv1D):
                delta = delta.t()
            lin.weight.copy_((lin.weight.double() + delta).to(lin.weight.dtype))
        for _name, ffn, _layer in _ffn_modules(model):
            del ffn._modules[MTA_PREFIX]
            ffn.__dict__.pop("forward", None)  # inject.attach_mta replaced it on the instance
    return model


def _base_name(ck: LoadedCheckpoint) -> str:
    """base_model_name_or_path for the adapter: the folder the base model was loaded from."""
    name = ck.base.name if ck.base is not None else ""
    if name == "default":
        from .models import DEFAULT_CACHE_NAME, cache_root

        return str(cache_root() / DEFAULT_CACHE_NAME)
    return name


def _record(path: Path, ck_meta: dict[str, Any], fmt: str, task: str, extra: dict[str, Any]) -> str:
    return json.dumps({
        "format_version": 1, "alter_version": __version__, "kind": KIND, "format": fmt, "task": task,
        "source_checkpoint": str(path.resolve()), "step": ck_meta.get("step"), "stage": ck_meta.get("stage"),
        "base_model": ck_meta.get("base_model"), **extra,
    }, sort_keys=True, indent=2) + "\n"


def _folder_name(task: str) -> str:
    if not SAFE_NAME.match(task):
        raise ExportError(f"task {task!r} is not a usable folder name (letters, digits, _ . -)")
    return task


def _tasks(registry_names: list[str], task: str | None, fmt: str) -> list[str]:
    if task is not None:
        if task not in registry_names:
            raise ExportError(f"--task {task!r}: unknown task (the checkpoint has {', '.join(registry_names)})")
        return [task]
    if fmt == "merged" and len(registry_names) > 1:
        raise ExportError(f"--format merged merges one task: give --task ({', '.join(registry_names)})")
    return list(registry_names)


def _check_out(out: Path, overwrite: bool) -> None:
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise ExportError(f"output folder {str(out)!r} exists (use --overwrite to replace it)")
    if overwrite:
        check_replaceable(out, KIND)
    if not out.parent.is_dir():
        raise ExportError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder `tmp` to `out`, replacing an earlier export there (already checked)."""
    old = out.parent / f".{out.name}.export-old-{os.getpid()}"
    if out.exists() or out.is_symlink():
        os.rename(out, old)
    os.rename(tmp, out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _export_baseline(path: Path, tmp: Path, fmt: str, task: str | None) -> list[str]:
    """A PEFT LoRA baseline: its adapter(s) as they are (peft), or merged by PEFT (merged)."""
    from .per_task import METHOD

    meta = read_baseline_meta(path)
    verify_checkpoint(path)
    names = TaskRegistry.from_dict(meta["registry"]).names
    shared = meta.get("method") != METHOD  # one adapter for all tasks: merging it needs no --task
    tasks = _tasks(names, task, "peft" if shared else fmt)
    folders = {t: path if shared else path / meta["adapters"][t] for t in tasks}
    if fmt == "peft":
        lines = []
        for t in tasks:
            dst = tmp / _folder_name(t)
            dst.mkdir()
            for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
                shutil.copyfile(folders[t] / name, dst / name)
            (dst / EXPORT_RECORD).write_text(_record(path, meta, fmt, t, {"method": meta.get("method")}))
            lines.append(f"task {t}: PEFT adapter of the LoRA baseline, copied as it is")
        return lines
    from peft import PeftModel

    from .quiet import peft_quietly

    loaded = load_checkpoint_base(path, meta["base_model"])
    source = folders[tasks[0]]
    with peft_quietly():
        model = PeftModel.from_pretrained(loaded.model, str(source), is_trainable=False).merge_and_unload()
    what = "all tasks (one shared adapter)" if shared else tasks[0]
    _save_merged(model, loaded.tokenizer, tmp)
    (tmp / EXPORT_RECORD).write_text(_record(path, meta, fmt, what, {"method": meta.get("method")}))
    return [f"merged the LoRA baseline adapter ({what}) into the base model"]


def _save_merged(model: torch.nn.Module, tokenizer: Any, folder: Path) -> None:
    if hasattr(model.config, "quantization_config"):  # dequantised weights: not a quantised model
        del model.config.quantization_config
    model.requires_grad_(False)
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"cannot save the merged model ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def export_checkpoint(path: str | Path, out: str | Path, fmt: str, task: str | None = None,
                      overwrite: bool = False) -> list[str]:
    """Export the checkpoint folder `path` to `out` in format `fmt` (peft | merged); returns one
    line per exported task. Raises ExportError / CheckpointError (one line each); nothing is left at
    `out` when it fails."""
    path, out = Path(path), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: use peft or merged")
    _check_out(out, overwrite)
    tmp = out.parent / f".{out.name}.export-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        if is_baseline_checkpoint(path):
            lines = _export_baseline(path, tmp, fmt, task)
        else:
            meta = read_checkpoint_meta(path)
            tasks = _tasks(TaskRegistry.from_dict(meta["registry"]).names, task, fmt)
            check_exportable(meta, f"checkpoint {str(path)!r}", fmt)
            ck = load_checkpoint(path)
            if any(layer.shared is not None for _, _, layer in _ffn_modules(ck.model)):
                check_exportable({"stage": 2}, f"checkpoint {str(path)!r}", fmt)
            lines = _export_mta(ck, path, tmp, fmt, tasks)
        write_marker(tmp, KIND)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return lines + [f"wrote {out}"]


def _export_mta(ck: LoadedCheckpoint, path: Path, tmp: Path, fmt: str, tasks: list[str]) -> list[str]:
    loras = [task_lora(ck, t) for t in tasks]  # every task checked before anything is written
    lines = []
    if fmt == "merged":
        lora = loras[0]
        _save_merged(merge_into_base(ck, lora), ck.tokenizer, tmp)
        (tmp / EXPORT_RECORD).write_text(_record(path, ck.meta, fmt, lora.task, _lora_info(lora)))
        return [f"task {lora.task}: merged {len(lora.weights)} projections (rank {lora.rank}) into the base model"]
    from safetensors.torch import save_file

    for lora in loras:
        dst = tmp / _folder_name(lora.task)
        config, state = peft_files(lora, _base_name(ck), ck.is_seq2seq)
        config.save_pretrained(str(dst))
        save_file(state, str(dst / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (dst / EXPORT_RECORD).write_text(_record(path, ck.meta, fmt, lora.task, _lora_info(lora)))
        lines.append(f"task {lora.task}: PEFT LoRA adapter, rank {lora.rank}, {len(lora.weights)} projections")
    return lines


def _lora_info(lora: TaskLoRA) -> dict[str, Any]:
    return {"rank": lora.rank, "lora_alpha": lora.lora_alpha, "alpha_per_layer": lora.alpha,
            "target_modules": sorted(lora.weights)}


__all__ = ["BASELINE_CONFIG", "CheckpointError", "ExportError", "FORMATS", "TaskLoRA", "check_exportable",
           "export_checkpoint", "merge_into_base", "peft_files", "task_lora"]
