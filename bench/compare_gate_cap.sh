#!/usr/bin/env bash
# Choice 4 of the MTA-vs-LoRA comparisons (issue 11): a soft cap c on the stage-2 gate's token logits,
# c*tanh(z/c), with the per-task bias added after it (mta.gate_logit_cap; alter_cli.mta.GateNetwork).
# The shipped token gate hardens (g_0 -> 0, hard routing between the shared experts, per-task means
# within 0.02) and its per-task bias then gets no gradient; the cap keeps the gate soft.
#
#   MIX=bbc (default): stage 2 with each cap in $CAPS on the seed-1 stage-1 checkpoint of
#     bench/compare_bbc.sh, scored on the BBC validation split against the uncapped gate; the choice
#     goes to $ROOT/choices-cap.txt (committed: docs/results/bbc/choices-cap.txt).
#   MIX=lexicon: the cap chosen on BBC ($CAP_CHOICES), transferred unchanged, as every other choice.
#   Then, when a cap was chosen: stage 2 for every seed, and the test split scored once for these runs
#   only ($ROOT/eval-cap; lexicon also the fresh slice, $ROOT/eval-cap-fresh). The uncapped runs were
#   scored before on the same examples: bench/compare_subset.py --with joins their predictions for
#   the paired tables (cap-test.md).
#
# Needs the finished comparison of the mixture (bench/compare_bbc.sh or compare_lexicon.sh) in $ROOT.
# Resumable like those scripts (.done markers).
set -euo pipefail
ALTER=${ALTER:-.venv/bin/alter}
PY=${PY:-.venv/bin/python}
MIX=${MIX:-bbc}
S1=${STAGE1_STEPS:-80}
S2=${STAGE2_STEPS:-40}
SEEDS=${SEEDS:-"1 2 3"}
CAPS=${CAPS:-"1.0 3.0"}
CHOICES=${CHOICES:-docs/results/bbc/choices.txt}
CAP_CHOICES=${CAP_CHOICES:-docs/results/bbc/choices-cap.txt}
LR0=2.0e-3
case "$MIX" in
    bbc) ROOT=${ROOT:-runs/compare} ;;
    lexicon) ROOT=${ROOT:-runs/lexicon} ;;
    *) echo "error: MIX must be bbc or lexicon, got '$MIX'" >&2; exit 2 ;;
esac
TRAIN=configs/alter/$MIX-compare-train.yaml
STAGE2=configs/alter/$MIX-compare-stage2.yaml
EVAL=configs/alter/$MIX-compare-eval.yaml
D=$ROOT/data
first_seed=${SEEDS%% *}
. "$(dirname "$0")/compare_lib.sh"

KIND=$(choice expert); LR=$(choice mta_learning_rate); GATE=$(choice gate_task)
k=$KIND$(sfx "$LR")
for s in $SEEDS; do
    [ -e "$ROOT/stage1-$k-seed$s/.done" ] && [ -e "$ROOT/stage2-$k-$GATE-seed$s/.done" ] || {
        echo "error: $ROOT lacks the finished stage-1/stage-2 runs of seed $s (run bench/compare_$MIX.sh first)" >&2
        exit 2; }
done

s=$first_seed
if [ "$MIX" = bbc ]; then
    list=""
    for c in $CAPS; do stage2 "$KIND" "$LR" "$GATE" "$s" "$c"; list+="$R/stage2-$k-$GATE-cap$c-seed$s, "; done
    val "$ROOT/val-cap" "$R/stage2-$k-$GATE-seed$s" "[${list%, }]"
    best=$(macro "$ROOT/val-cap" "stage2-$k-$GATE-seed$s"); CAP=none
    {
        echo "# validation macro averages (seed $s) of stage 2 with gate_task $GATE: no cap and each mta.gate_logit_cap"
        echo "gate_logit_cap_none=$best"
        for c in $CAPS; do
            m=$(macro "$ROOT/val-cap" "stage2-$k-$GATE-cap$c-seed$s"); echo "gate_logit_cap_$c=$m"
            CAP=$(pick "$best" "$m" "$CAP" "$c"); best=$(pick "$best" "$m" "$best" "$m")
        done
        echo "gate_logit_cap=$CAP"
    } > "$ROOT/choices-cap.txt.tmp"
    mv "$ROOT/choices-cap.txt.tmp" "$ROOT/choices-cap.txt"
    log "validation: $(grep -v '^#' "$ROOT/choices-cap.txt" | tr '\n' ' ')"
else
    CAP=$(sed -n "s/^gate_logit_cap=//p" "$CAP_CHOICES")
    [ -n "$CAP" ] || { echo "error: $CAP_CHOICES has no gate_logit_cap= line (run MIX=bbc first)" >&2; exit 2; }
    log "gate_logit_cap $CAP, transferred from $CAP_CHOICES"
fi
[ "$CAP" != none ] || { log "the uncapped gate won on validation: nothing to score on the test split"; exit 0; }

for s in $SEEDS; do stage2 "$KIND" "$LR" "$GATE" "$s" "$CAP"; ln -sfn "stage2-$k-$GATE-cap$CAP-seed$s" "$ROOT/stage2-cap-seed$s"; done
list=""
for s in $SEEDS; do [ "$s" = "$first_seed" ] || list+="$R/stage2-cap-seed$s, "; done
score() {  # $1 out folder, $2 examples
    [ -e "$1/.done" ] && return 0
    log "test: $1"
    $ALTER eval $EVAL --out "$1" --set "checkpoint=$R/stage2-cap-seed$first_seed" --set "compare=[${list%, }]" \
        --set "data.eval=$(abspath "$2")" --overwrite
    touch "$1/.done"
}
score "$ROOT/eval-cap" "$D/test.jsonl"
$PY bench/compare_subset.py "$ROOT/eval-cap" --with "$ROOT/eval" > "$ROOT/eval-cap/cap-test.md"
if [ "$MIX" = lexicon ]; then
    score "$ROOT/eval-cap-fresh" "$ROOT/data-fresh/test.jsonl"
    $PY bench/compare_subset.py "$ROOT/eval-cap-fresh" --with "$ROOT/eval-fresh" \
        > "$ROOT/eval-cap-fresh/cap-test.md"
fi
log done
