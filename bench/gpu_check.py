"""The measuring half of bench/gpu_check.sh: one bf16 training stage of alter on SmolLM2-135M, timed.

    python bench/gpu_check.py train 1 CONFIG.yaml OUT        # stage 1 (or: accelerate launch ... bench/gpu_check.py)
    python bench/gpu_check.py train 2 CONFIG.yaml OUT        # stage 2 from the config's stage1 folder
    python bench/gpu_check.py peak                            # the known dense bf16 peak of this GPU, or unknown

Prints one JSON line (main process): steps, seconds of the training loop (model loading excluded),
tokens/s (non-padding tokens of the samples drawn: mean encoded length x samples, all processes),
peak memory (torch.cuda.max_memory_allocated, the largest over the processes), and the achieved
fraction of the GPUs' dense bf16 peak for the model FLOPs
    forward 2·N·tokens + backward 2·N_bwd·tokens
with N the parameters of the blocks and the LM head (embedding lookups cost no FLOPs) and N_bwd
those from the first block with an MTA layer up (the backbone is frozen: activation gradients only,
no weight gradients below; attention's L² terms are left out, so the fraction is a lower bound).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets; matched in order.
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0))


def bf16_peak(name: str) -> float | None:
    """Dense bf16 peak in TFLOP/s of a GPU from torch.cuda.get_device_name, or None when unknown."""
    for key, tflops in BF16_PEAK_TFLOPS:
        if key in name:
            return tflops
    return None


def _flops_per_token(model) -> tuple[float, float]:
    from alter_cli.inject import MTA_PREFIX

    blocks = model.model.layers
    block_params = [sum(p.numel() for n, p in b.named_parameters() if MTA_PREFIX not in n) for b in blocks]
    head = model.lm_head.weight.numel()
    first = min(i for i, b in enumerate(blocks) if any(MTA_PREFIX in n for n, _ in b.named_modules()))
    return 2.0 * (sum(block_params) + head), 2.0 * (sum(block_params[first:]) + head)


def train(stage: int, config: Path, out: Path) -> None:
    import torch
    from accelerate import PartialState

    from alter_cli.cli import load_config
    from alter_cli.config import AlterConfig, Stage2Config
    from alter_cli.data import encode_dataset, parse_jsonl
    from alter_cli.train import run_training

    cfg = load_config(config, [], Stage2Config if stage == 2 else AlterConfig)
    bundle_box: dict = {}
    if stage == 2:
        from alter_cli.checkpoint import read_checkpoint_meta
        from alter_cli.data import TaskRegistry
        from alter_cli.stage2 import Stage2Wiring

        registry = TaskRegistry.from_dict(read_checkpoint_meta(cfg.stage1)["registry"])
        wiring = Stage2Wiring(cfg)

        def setup(c):
            bundle_box["b"] = wiring.setup_model(c)
            return bundle_box["b"]

        extra = {"setup_model": setup, "extra_loss": wiring.extra_loss}
    else:
        from alter_cli.data import TaskRegistry
        from alter_cli.train import build_stage1

        registry = TaskRegistry.from_config(cfg.tasks)

        def setup(c):
            bundle_box["b"] = build_stage1(c)
            return bundle_box["b"]

        extra = {"setup_model": setup}
    examples = parse_jsonl(Path(cfg.data.train).read_text(), cfg.data.train, registry)
    result = run_training(cfg, stage, train_examples=examples, out_dir=out, **extra)
    bundle = bundle_box["b"]
    ds = encode_dataset(bundle.tokenizer, examples, registry, False, cfg.data.prompt_format, cfg.data.max_length,
                        cfg.data.max_target_length)
    mean_len = sum(len(ds[i]["input_ids"]) for i in range(len(ds))) / len(ds)
    tc = cfg.train
    tokens = mean_len * tc.max_steps * tc.gradient_accumulation_steps * tc.batch_size * result.num_processes
    peak = torch.tensor([float(torch.cuda.max_memory_allocated())], device="cuda")
    state = PartialState()
    if state.num_processes > 1:
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    if not state.is_main_process:
        return
    fwd, bwd = _flops_per_token(bundle.model)
    achieved = (fwd + bwd) * tokens / result.seconds / 1e12
    peak_tflops = bf16_peak(torch.cuda.get_device_name())
    print(json.dumps({
        "stage": stage, "processes": result.num_processes, "steps": result.steps, "seconds": round(result.seconds, 3),
        "tokens_per_s": round(tokens / result.seconds, 1), "peak_mem_gib": round(float(peak) / 2**30, 3),
        "achieved_tflops": round(achieved, 2), "device": torch.cuda.get_device_name(),
        "bf16_peak_fraction": (round(achieved / (peak_tflops * result.num_processes), 5) if peak_tflops else "unknown"),
        "final_loss": result.final_loss,
    }), flush=True)


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "peak":
        import torch

        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
        print(f"{name}: dense bf16 peak {bf16_peak(name) or 'unknown'} TFLOP/s")
        return
    if len(sys.argv) != 5 or sys.argv[1] != "train" or sys.argv[2] not in ("1", "2"):
        sys.stderr.write("usage: gpu_check.py train 1|2 CONFIG OUT | gpu_check.py peak\n")
        raise SystemExit(2)
    train(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))


if __name__ == "__main__":
    main()
