#!/usr/bin/env bash
# A prepared GPU check of alter (issue 12 §4): on a CUDA machine, in a few minutes, bf16 stage 1 ->
# stage 2 -> eval on SmolLM2-135M (the embedded default) for a few steps, then DDP and FSDP on 2 GPUs
# when there are 2, printing tokens/s, peak memory and the achieved fraction of the GPU's dense bf16 peak.
#
#   bench/gpu_check.sh [STEPS]        # default 20 optimizer steps per stage; PYTHON=... to pick python
#
# Without CUDA it prints one line and exits 2. CPU CI never runs it (tests only check that refusal).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python}"
STEPS="${1:-20}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    echo "gpu_check: error: no CUDA device (torch.cuda.is_available() is False with $PY); this check needs a GPU" >&2
    exit 2
fi
case "$STEPS" in ''|*[!0-9]*) echo "gpu_check: error: STEPS must be a positive integer, got '$STEPS'" >&2; exit 2;; esac
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/alter-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
"$PY" "$HERE/gpu_check.py" peak
"$PY" - "$WORK" "$STEPS" <<'PYEOF'
import sys, yaml
from pathlib import Path
from alter_cli.sources.synthetic import make_jsonl, task_configs
work, steps = Path(sys.argv[1]), int(sys.argv[2])
(work / "train.jsonl").write_text(make_jsonl(256, seed=1))
(work / "eval.jsonl").write_text(make_jsonl(16, seed=2))
train = {"max_steps": steps, "batch_size": 16, "learning_rate": 2e-3, "warmup_steps": 2, "log_every": steps,
         "mixed_precision": "bf16", "seed": 0}
data = {"train": str(work / "train.jsonl"), "max_length": 128, "max_target_length": 24}
s1 = {"model": {"name": "default"}, "tasks": task_configs(), "data": data,
      "mta": {"expert": "hydra_lora", "num_experts": 4, "rank": 16, "lora_alpha": 32.0}, "train": train}
(work / "stage1.yaml").write_text(yaml.safe_dump(s1))
s2 = {"stage1": str(work / "s1"), "data": data, "train": train,
      "mta": {"num_shared_experts": 2, "gate_combine": "residual", "gate_task": "bias"}}
(work / "stage2.yaml").write_text(yaml.safe_dump(s2))
PYEOF
row() { "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(f"{sys.argv[1]:<22} {r[\"steps\"]:>5} {r[\"tokens_per_s\"]:>12,.0f} {r[\"peak_mem_gib\"]:>10.2f} {r[\"achieved_tflops\"]:>9.1f} {str(r[\"bf16_peak_fraction\"]):>12}")' "$1"; }
echo "run                    steps     tokens/s  peak GiB  TFLOP/s  bf16 peak frac"
"$PY" "$HERE/gpu_check.py" train 1 "$WORK/stage1.yaml" "$WORK/s1" | row "stage 1 (1 GPU)"
"$PY" "$HERE/gpu_check.py" train 2 "$WORK/stage2.yaml" "$WORK/s2" | row "stage 2 (1 GPU)"
t0=$(date +%s.%N)
"$PY" -m alter_cli eval --checkpoint "$WORK/s2" --data "$WORK/eval.jsonl" --out "$WORK/eval" >/dev/null
t1=$(date +%s.%N)
"$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); t=float(sys.argv[3])-float(sys.argv[2]); print(f"eval (1 GPU): 64 examples in {t:.1f} s (model load included); macro average {m.get(\"macro_average\", m.get(\"macro\", \"?\"))}")' "$WORK/eval/metrics.json" "$t0" "$t1" 2>/dev/null || echo "eval (1 GPU): done in $(echo "$t1 - $t0" | bc) s"
if [ "$NGPU" -ge 2 ]; then
    PORT=$(( 29500 + RANDOM % 1000 ))
    CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0,1}" "$PY" -m accelerate.commands.launch --multi_gpu --num_processes 2 \
        --num_machines 1 --mixed_precision bf16 --dynamo_backend no --main_process_port "$PORT" \
        "$HERE/gpu_check.py" train 1 "$WORK/stage1.yaml" "$WORK/s1-ddp" 2>"$WORK/ddp.err" | row "stage 1 DDP (2 GPUs)" \
        || { echo "stage 1 DDP (2 GPUs): failed:"; tail -5 "$WORK/ddp.err"; }
    CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0,1}" "$PY" -m accelerate.commands.launch --use_fsdp --fsdp_version 2 \
        --num_processes 2 --num_machines 1 --mixed_precision bf16 --dynamo_backend no --main_process_port $(( PORT + 1 )) \
        "$HERE/gpu_check.py" train 1 "$WORK/stage1.yaml" "$WORK/s1-fsdp" 2>"$WORK/fsdp.err" | row "stage 1 FSDP (2 GPUs)" \
        || { echo "stage 1 FSDP (2 GPUs): failed:"; tail -5 "$WORK/fsdp.err"; }
else
    echo "DDP / FSDP on 2 GPUs: skipped ($NGPU GPU visible)"
fi
