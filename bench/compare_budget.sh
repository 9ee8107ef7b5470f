#!/usr/bin/env bash
# MTA vs the parameter-matched multi-task LoRA at K times the comparison's training budget (issue 11,
# "not tried: longer budgets"). Same data, configs, choices (expert kind, learning rates, gate_task:
# read from $CHOICES, not rerun) and seeds as bench/compare_bbc.sh / compare_lexicon.sh; only the
# steps grow: MTA stage 1 K*80 + stage 2 K*40, LoRA K*120 (warm-up and linear decay as before).
# No choice is made here, so there is no validation step: the test split is scored once, whatever it
# shows, for stage 1 + 2, stage 1 and LoRA over the seeds ($ROOT/eval).
#
# JOBS=1 (default): the runs one after the other, seed by seed, on all threads. JOBS=2: the MTA chain
# (stage 1 then stage 2, seed by seed) and the LoRA chain side by side, one thread each; on the 2-core
# machine that was slower (about 10 s per step each against 3.3 s on both threads), so it is not the
# default. Runs already finished (.done) are skipped.
#   MIX=bbc (default) | lexicon; K=2 (default); ROOT default runs/compare-${K}x (bbc) or
#   runs/lexicon-${K}x; SEEDS="1 2 3". A smoke run: ROOT=runs/smoke STAGE1_STEPS=2 STAGE2_STEPS=1
#   SEEDS=1 TEST_N=2.
set -euo pipefail
ALTER=${ALTER:-.venv/bin/alter}
PY=${PY:-.venv/bin/python}
MIX=${MIX:-bbc}
K=${K:-2}
SEEDS=${SEEDS:-"1 2 3"}
JOBS=${JOBS:-1}
LR0=2.0e-3
. "$(dirname "$0")/compare_mix.sh"
first_seed=${SEEDS%% *}
. "$(dirname "$0")/compare_lib.sh"

KIND=$(choice expert); LR=$(choice mta_learning_rate); LORA_LR=$(choice lora_learning_rate)
GATE=$(choice gate_task)
for v in "$KIND" "$LR" "$LORA_LR" "$GATE"; do
    [ -n "$v" ] || { echo "error: $CHOICES lacks one of expert, mta_learning_rate, lora_learning_rate, gate_task" >&2; exit 2; }
done
log "budget ${K}x: stage 1 $S1 + stage 2 $S2 steps, LoRA $((S1 + S2)); expert $KIND, MTA lr $LR, LoRA lr $LORA_LR, gate_task $GATE"
if [ ! -e "$D/.done" ]; then
    log data
    $ALTER data "$MIX" --config "configs/alter/$MIX-data.yaml" "${DATA_ARGS[@]}" --out "$D" --overwrite
    touch "$D/.done"
fi

mta_chain() { for s in $SEEDS; do stage1 "$KIND" "$LR" "$s"; stage2 "$KIND" "$LR" "$GATE" "$s"; done; }
lora_chain() { for s in $SEEDS; do lora "$LORA_LR" "$s"; done; }
if [ "$JOBS" -ge 2 ]; then
    (export OMP_NUM_THREADS=1; mta_chain > "$ROOT/mta_chain.log" 2>&1) &
    a=$!
    (export OMP_NUM_THREADS=1; lora_chain > "$ROOT/lora_chain.log" 2>&1) &
    b=$!
    rc=0; wait "$a" || rc=$?; wait "$b" || rc=$?
    [ "$rc" = 0 ] || { echo "error: a training chain failed (see $ROOT/*_chain.log)" >&2; exit "$rc"; }
else
    for s in $SEEDS; do stage1 "$KIND" "$LR" "$s"; stage2 "$KIND" "$LR" "$GATE" "$s"; lora "$LORA_LR" "$s"; done
fi

k=$KIND$(sfx "$LR")
list=""
for s in $SEEDS; do
    ln -sfn "stage2-$k-$GATE-seed$s" "$ROOT/stage2-seed$s"; ln -sfn "stage1-$k-seed$s" "$ROOT/stage1-seed$s"
    ln -sfn "lora-lr$LORA_LR-seed$s" "$ROOT/lora-seed$s"
done
for s in $SEEDS; do [ "$s" = "$first_seed" ] || list+="$R/stage2-seed$s, "; done
for s in $SEEDS; do list+="$R/stage1-seed$s, "; done
for s in $SEEDS; do list+="$R/lora-seed$s, "; done
if [ ! -e "$ROOT/eval/.done" ]; then
    log "test split"
    $ALTER eval "$EVAL" --out "$ROOT/eval" --set "checkpoint=$R/stage2-seed$first_seed" --set "compare=[${list%, }]" \
        --set "data.eval=$(abspath "$D")/test.jsonl" --overwrite
    touch "$ROOT/eval/.done"
fi
log done
