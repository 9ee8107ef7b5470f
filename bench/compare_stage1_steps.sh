#!/usr/bin/env bash
# Issue 11: does stage 2 beat spending its steps on stage 1? Stage 1 trained for the whole stage-1 +
# stage-2 budget (S1 + S2 steps, the same warm-up and linear decay, runs named stage1-...-steps<N>),
# scored on the validation split in one eval beside the shipped stage 2 and the stage-2 variants named
# in VARIANTS (trained before by bench/compare_gate_input.sh), paired on the same examples. The test
# split is not touched.
#   MIX=lexicon (default) | bbc; K=2 (default); SEEDS="1 2 3"; ROOT as in compare_budget.sh;
#   VARIANTS="tune_experts" (default; stage-2 variant names, "" for none). Output: $ROOT/val-stage1-steps<N>.
set -euo pipefail
ALTER=${ALTER:-.venv/bin/alter}
PY=${PY:-.venv/bin/python}
MIX=${MIX:-lexicon}
K=${K:-2}
SEEDS=${SEEDS:-"1 2 3"}
VARIANTS=${VARIANTS-tune_experts}
LR0=2.0e-3
. "$(dirname "$0")/compare_mix.sh"
. "$(dirname "$0")/compare_lib.sh"

KIND=$(choice expert); LR=$(choice mta_learning_rate); GATE=$(choice gate_task)
k=$KIND$(sfx "$LR")
L=$((S1 + S2))
for s in $SEEDS; do
    for run in "stage2-$k-$GATE-seed$s" $(for v in $VARIANTS; do echo "stage2-$k-$GATE-$v-seed$s"; done); do
        [ -e "$ROOT/$run/.done" ] || {
            echo "error: $ROOT/$run is not finished (run bench/compare_budget.sh and bench/compare_gate_input.sh first)" >&2
            exit 2; }
    done
done
for s in $SEEDS; do stage1 "$KIND" "$LR" "$s" "$L"; done
first=${SEEDS%% *}; list=""
for s in $SEEDS; do [ "$s" = "$first" ] || list+="$R/stage2-$k-$GATE-seed$s, "; done
for s in $SEEDS; do list+="$R/stage1-$k-steps$L-seed$s, "; done
for v in $VARIANTS; do for s in $SEEDS; do list+="$R/stage2-$k-$GATE-$v-seed$s, "; done; done
OUTV=$ROOT/val-stage1-steps$L
log "validation split"
val "$OUTV" "$R/stage2-$k-$GATE-seed$first" "[${list%, }]"
{
    echo "# validation macro averages: shipped stage 2 ($S1 + $S2 steps), stage 1 for $L steps${VARIANTS:+, stage-2 variants $VARIANTS}"
    for s in $SEEDS; do
        echo "shipped_seed$s=$(macro "$OUTV" "stage2-$k-$GATE-seed$s")"
        echo "stage1_steps${L}_seed$s=$(macro "$OUTV" "stage1-$k-steps$L-seed$s")"
        for v in $VARIANTS; do echo "${v}_seed$s=$(macro "$OUTV" "stage2-$k-$GATE-$v-seed$s")"; done
    done
} > "$OUTV/macro.txt"
cat "$OUTV/macro.txt"
log done
