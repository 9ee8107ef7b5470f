#!/usr/bin/env bash
# Issue 11: a stage-2 variant against the shipped stage 2 on the validation split only; by default the
# gate reading the layer input x (mta.gate_input: hidden) against the shipped gate reading the paths
# [o0; ...; oM]. For every seed, stage 2 is retrained with the variant on the finished stage-1
# checkpoint of bench/compare_budget.sh (or the 1x comparison: ROOT=runs/lexicon K=1), same steps,
# learning rate and gate_task; then one validation eval scores the shipped stage 2 and the variant of
# every seed (paired, the same examples). The test split is not touched: a variant that wins here is
# scored on it by a separate, single run.
#   MIX=lexicon (default) | bbc; K=2 (default); SEEDS="1 2 3"; ROOT as in compare_budget.sh.
#   VARIANT="name:key=value[,key=value]" (default hidden:mta.gate_input=hidden); the runs are named
#   stage2-...-<name>-seedN and the eval goes to $ROOT/val-<name> ($ROOT/val-gate-input for hidden).
#   A value "<k>x" (e.g. mta.gate_learning_rate=10x) is k times the chosen MTA learning rate.
#   TRAIN_MISSING=1: build the data and train the missing stage-1 and shipped stage-2 runs first (the
#   data, steps and choices of compare_budget.sh; no LoRA, no test split), e.g. MIX=bbc K=1 SEEDS=1.
set -euo pipefail
ALTER=${ALTER:-.venv/bin/alter}
PY=${PY:-.venv/bin/python}
MIX=${MIX:-lexicon}
K=${K:-2}
SEEDS=${SEEDS:-"1 2 3"}
VARIANT=${VARIANT:-hidden:mta.gate_input=hidden}
LR0=2.0e-3
case "$VARIANT" in
    *:*=*) NAME=${VARIANT%%:*} ;;
    *) echo "error: VARIANT must read name:key=value[,key=value], got '$VARIANT'" >&2; exit 2 ;;
esac
case "$NAME" in ''|*[!A-Za-z0-9._]*) echo "error: VARIANT's name must be letters, digits, '.' or '_', got '$NAME'" >&2; exit 2 ;; esac
. "$(dirname "$0")/compare_mix.sh"
. "$(dirname "$0")/compare_lib.sh"

KIND=$(choice expert); LR=$(choice mta_learning_rate); GATE=$(choice gate_task)
k=$KIND$(sfx "$LR")
OVERRIDES=()
IFS=',' read -ra kvs <<< "${VARIANT#*:}"
for kv in "${kvs[@]}"; do
    case "${kv#*=}" in
        *[0-9]x) kv="${kv%%=*}=$($PY -c "print(float('${kv#*=}'[:-1]) * $LR)")" ;;
    esac
    OVERRIDES+=("$kv")
done
OUTV=$ROOT/val-$NAME; [ "$NAME" != hidden ] || OUTV=$ROOT/val-gate-input
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
log "variant $NAME: ${OVERRIDES[*]}"
for s in $SEEDS; do stage2 "$KIND" "$LR" "$GATE" "$s" "$NAME" "${OVERRIDES[@]}"; done
first=${SEEDS%% *}; list=""
for s in $SEEDS; do [ "$s" = "$first" ] || list+="$R/stage2-$k-$GATE-seed$s, "; done
for s in $SEEDS; do list+="$R/stage2-$k-$GATE-$NAME-seed$s, "; done
log "validation split"
val "$OUTV" "$R/stage2-$k-$GATE-seed$first" "[${list%, }]"
{
    echo "# validation macro averages: shipped stage 2 and the variant $NAME (${OVERRIDES[*]}), per seed"
    for s in $SEEDS; do
        echo "shipped_seed$s=$(macro "$OUTV" "stage2-$k-$GATE-seed$s")"
        echo "${NAME}_seed$s=$(macro "$OUTV" "stage2-$k-$GATE-$NAME-seed$s")"
    done
} > "$OUTV/macro.txt"
cat "$OUTV/macro.txt"
log done
