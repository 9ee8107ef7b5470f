#!/usr/bin/env bash
# Issue 11: the stage-2 gate reading the layer input x (mta.gate_input: hidden) against the shipped gate
# reading the paths [o0; ...; oM], on the validation split only. For every seed, stage 2 is retrained
# with gate_input=hidden on the finished stage-1 checkpoint of bench/compare_budget.sh (or the 1x
# comparison: ROOT=runs/lexicon K=1), same steps, learning rate and gate_task; then one validation eval
# scores the shipped stage 2 and the variant of every seed (paired, the same examples). The test split
# is not touched: a variant that wins here is scored on it by a separate, single run.
#   MIX=lexicon (default) | bbc; K=2 (default); SEEDS="1 2 3"; ROOT as in compare_budget.sh.
#   TRAIN_MISSING=1: build the data and train the missing stage-1 and shipped stage-2 runs first (the
#   data, steps and choices of compare_budget.sh; no LoRA, no test split), e.g. MIX=bbc K=1 SEEDS=1.
set -euo pipefail
ALTER=${ALTER:-.venv/bin/alter}
PY=${PY:-.venv/bin/python}
MIX=${MIX:-lexicon}
K=${K:-2}
SEEDS=${SEEDS:-"1 2 3"}
LR0=2.0e-3
case "$K" in ''|*[!0-9]*|0) echo "error: K must be a positive integer, got '$K'" >&2; exit 2 ;; esac
case "$MIX" in
    bbc) ROOT=${ROOT:-runs/compare-${K}x}; CHOICES=${CHOICES:-docs/results/bbc/choices.txt}
         DATA_ARGS=(--max-body-chars 300 --max-validation 30 --max-test 200) ;;
    lexicon) ROOT=${ROOT:-runs/lexicon-${K}x}; CHOICES=${CHOICES:-docs/results/lexicon/choices.txt}
         DATA_ARGS=(--max-body-chars 200 --max-train 400 --max-validation 20 --max-test 30) ;;
    *) echo "error: MIX must be bbc or lexicon, got '$MIX'" >&2; exit 2 ;;
esac
S1=${STAGE1_STEPS:-$((K * 80))}
S2=${STAGE2_STEPS:-$((K * 40))}
TRAIN=configs/alter/$MIX-compare-train.yaml
STAGE2=configs/alter/$MIX-compare-stage2.yaml
EVAL=configs/alter/$MIX-compare-eval.yaml
D=$ROOT/data
. "$(dirname "$0")/compare_lib.sh"

KIND=$(choice expert); LR=$(choice mta_learning_rate); GATE=$(choice gate_task)
k=$KIND$(sfx "$LR")
if [ "${TRAIN_MISSING:-0}" = 1 ]; then
    if [ ! -e "$D/.done" ]; then
        $ALTER data "$MIX" --config "configs/alter/$MIX-data.yaml" "${DATA_ARGS[@]}" --out "$D" --overwrite
        touch "$D/.done"
    fi
    for s in $SEEDS; do stage1 "$KIND" "$LR" "$s"; stage2 "$KIND" "$LR" "$GATE" "$s"; done
fi
for s in $SEEDS; do
    [ -e "$ROOT/stage1-$k-seed$s/.done" ] && [ -e "$ROOT/stage2-$k-$GATE-seed$s/.done" ] || {
        echo "error: $ROOT lacks the finished stage-1/stage-2 runs of seed $s (run bench/compare_budget.sh first)" >&2
        exit 2; }
done
for s in $SEEDS; do stage2 "$KIND" "$LR" "$GATE" "$s" hidden mta.gate_input=hidden; done
first=${SEEDS%% *}; list=""
for s in $SEEDS; do [ "$s" = "$first" ] || list+="$R/stage2-$k-$GATE-seed$s, "; done
for s in $SEEDS; do list+="$R/stage2-$k-$GATE-hidden-seed$s, "; done
log "validation split"
val "$ROOT/val-gate-input" "$R/stage2-$k-$GATE-seed$first" "[${list%, }]"
{
    echo "# validation macro averages: shipped stage 2 (gate_input paths) and gate_input hidden, per seed"
    for s in $SEEDS; do
        echo "paths_seed$s=$(macro "$ROOT/val-gate-input" "stage2-$k-$GATE-seed$s")"
        echo "hidden_seed$s=$(macro "$ROOT/val-gate-input" "stage2-$k-$GATE-hidden-seed$s")"
    done
} > "$ROOT/val-gate-input/macro.txt"
cat "$ROOT/val-gate-input/macro.txt"
log done
