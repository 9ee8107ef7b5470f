#!/usr/bin/env bash
# The multi-task LoRA matched to MTA stage 1 + 2 (issue 11 §6), not to stage 1 alone.
#
# The baselines of bench/compare_bbc.sh / compare_lexicon.sh match MTA *stage 1*'s trainable count
# (lora.rank: null). Stage 2 then adds its shared experts and gate (BBC: 170,640 + 443,440 = 614,080
# parameters, so stage 1 + 2 holds 2,120,956 against the baseline's 1,495,296). This script trains the
# LoRA whose count is closest to the whole stage-2 checkpoint (rank = total / (count of rank-59 LoRA /
# 59), rounded), same learning rate (the validation choice), data, steps and seeds, and scores it on the
# test split once ($ROOT/eval-lora-total; lexicon also the fresh slice). The other methods were scored
# before on the same examples; bench/compare_subset.py --with joins them (lora-total-test.md).
#   MIX=bbc (default) | lexicon; needs the finished comparison of the mixture in $ROOT. Resumable.
set -euo pipefail
ALTER=${ALTER:-.venv/bin/alter}
PY=${PY:-.venv/bin/python}
MIX=${MIX:-bbc}
S1=${STAGE1_STEPS:-80}
S2=${STAGE2_STEPS:-40}
SEEDS=${SEEDS:-"1 2 3"}
CHOICES=${CHOICES:-docs/results/bbc/choices.txt}
LR0=2.0e-3
case "$MIX" in
    bbc) ROOT=${ROOT:-runs/compare} ;;
    lexicon) ROOT=${ROOT:-runs/lexicon} ;;
    *) echo "error: MIX must be bbc or lexicon, got '$MIX'" >&2; exit 2 ;;
esac
TRAIN=configs/alter/$MIX-compare-train.yaml
EVAL=configs/alter/$MIX-compare-eval.yaml
D=$ROOT/data
first_seed=${SEEDS%% *}
. "$(dirname "$0")/compare_lib.sh"

LORA_LR=$(choice lora_learning_rate)
for f in "$ROOT/stage2-seed$first_seed" "$ROOT/lora-seed$first_seed" "$ROOT/eval"; do
    [ -e "$f" ] || { echo "error: $f not found (run bench/compare_$MIX.sh first)" >&2; exit 2; }
done
RANK=$($PY - "$ROOT/stage2-seed$first_seed" "$ROOT/lora-seed$first_seed" <<'PY'
import json, sys
from pathlib import Path
from safetensors.torch import load_file
def count(d):
    return sum(v.numel() for v in load_file(str(Path(d) / "adapter_model.safetensors")).values())
total, lora = count(sys.argv[1]), count(sys.argv[2])
rank = json.loads((Path(sys.argv[2]) / "adapter_config.json").read_text())["r"]
print(round(total / (lora / rank)))
PY
)
log "MTA stage 1 + 2 total -> LoRA rank $RANK"
for s in $SEEDS; do lora "$LORA_LR" "$s" "$RANK"; ln -sfn "lora-lr$LORA_LR-r$RANK-seed$s" "$ROOT/lora-total-seed$s"; done
list=""
for s in $SEEDS; do [ "$s" = "$first_seed" ] || list+="$R/lora-total-seed$s, "; done
score() {  # $1 out folder, $2 examples
    [ -e "$1/.done" ] && return 0
    log "test: $1"
    $ALTER eval $EVAL --out "$1" --set "checkpoint=$R/lora-total-seed$first_seed" --set "compare=[${list%, }]" \
        --set "data.eval=$(abspath "$2")" --overwrite
    touch "$1/.done"
}
score "$ROOT/eval-lora-total" "$D/test.jsonl"
$PY bench/compare_subset.py "$ROOT/eval" --with "$ROOT/eval-lora-total" > "$ROOT/eval-lora-total/lora-total-test.md"
if [ "$MIX" = lexicon ]; then
    score "$ROOT/eval-lora-total-fresh" "$ROOT/data-fresh/test.jsonl"
    $PY bench/compare_subset.py "$ROOT/eval-fresh" --with "$ROOT/eval-lora-total-fresh" \
        > "$ROOT/eval-lora-total-fresh/lora-total-test.md"
fi
log done
