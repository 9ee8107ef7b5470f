#!/usr/bin/env bash
# Choice 4 of the MTA-vs-LoRA comparisons (issue 11), made after the second BBC run: variants of stage 2
# on the same stage-1 checkpoint, each against the shipped stage 2 on the BBC validation split.
#   cap1.0, cap3.0   a soft cap c on the gate's token logits, c*tanh(z/c), the per-task bias added after
#                    it (mta.gate_logit_cap; alter_cli.mta.GateNetwork): the shipped token gate hardens
#                    (g_0 -> 0, per-task means within 0.02);
#   tune_selector    stage 2 also tunes stage 1's selector (train.tune_selector);
#   pooled           one gate per sample from its mean path outputs (mta.gate: pooled).
# VARIANTS="name:key=value[,key=value] ..." replaces that list.
#
#   MIX=bbc (default): every variant on the seed-1 stage-1 checkpoint of bench/compare_bbc.sh, scored on
#     the validation split with the shipped stage 2 (the earlier choice wins ties); the choice goes to
#     $ROOT/choices-stage2.txt (committed: docs/results/bbc/choices-stage2.txt).
#   MIX=lexicon: the variant chosen on BBC ($VARIANT_CHOICES), transferred unchanged, as every other choice.
#   Then, when a variant won: stage 2 for every seed with it, and the test split scored once for these
#   runs only ($ROOT/eval-variant; lexicon also the fresh slice). The shipped runs were scored before on
#   the same examples: bench/compare_subset.py --with joins their predictions (variant-test.md).
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
VARIANTS=${VARIANTS:-"cap1.0:mta.gate_logit_cap=1.0 cap3.0:mta.gate_logit_cap=3.0 tune_selector:train.tune_selector=true pooled:mta.gate=pooled"}
CHOICES=${CHOICES:-docs/results/bbc/choices.txt}
VARIANT_CHOICES=${VARIANT_CHOICES:-docs/results/bbc/choices-stage2.txt}
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
overrides() { local spec=$1; echo "${spec#*:}" | tr ',' ' '; }  # "name:k=v,k2=v2" -> "k=v k2=v2"

s=$first_seed
if [ "$MIX" = bbc ]; then
    list=""
    for v in $VARIANTS; do
        # shellcheck disable=SC2046  # the overrides are single words
        stage2 "$KIND" "$LR" "$GATE" "$s" "${v%%:*}" $(overrides "$v")
        list+="$R/stage2-$k-$GATE-${v%%:*}-seed$s, "
    done
    val "$ROOT/val-stage2" "$R/stage2-$k-$GATE-seed$s" "[${list%, }]"
    best=$(macro "$ROOT/val-stage2" "stage2-$k-$GATE-seed$s"); WIN=shipped
    {
        echo "# validation macro averages (seed $s): the shipped stage 2 (gate_task $GATE) and each variant"
        echo "stage2_shipped=$best"
        for v in $VARIANTS; do
            m=$(macro "$ROOT/val-stage2" "stage2-$k-$GATE-${v%%:*}-seed$s"); echo "stage2_${v%%:*}=$m"
            WIN=$(pick "$best" "$m" "$WIN" "$v"); best=$(pick "$best" "$m" "$best" "$m")
        done
        echo "stage2_variant=$WIN"
    } > "$ROOT/choices-stage2.txt.tmp"
    mv "$ROOT/choices-stage2.txt.tmp" "$ROOT/choices-stage2.txt"
    log "validation: $(grep -v '^#' "$ROOT/choices-stage2.txt" | tr '\n' ' ')"
else
    WIN=$(sed -n "s/^stage2_variant=//p" "$VARIANT_CHOICES")
    [ -n "$WIN" ] || { echo "error: $VARIANT_CHOICES has no stage2_variant= line (run MIX=bbc first)" >&2; exit 2; }
    log "stage-2 variant $WIN, transferred from $VARIANT_CHOICES"
fi
[ "$WIN" != shipped ] || { log "the shipped stage 2 won on validation: nothing to score on the test split"; exit 0; }

name=${WIN%%:*}
for s in $SEEDS; do
    # shellcheck disable=SC2046
    stage2 "$KIND" "$LR" "$GATE" "$s" "$name" $(overrides "$WIN")
    ln -sfn "stage2-$k-$GATE-$name-seed$s" "$ROOT/stage2-variant-seed$s"
done
list=""
for s in $SEEDS; do [ "$s" = "$first_seed" ] || list+="$R/stage2-variant-seed$s, "; done
score() {  # $1 out folder, $2 examples
    [ -e "$1/.done" ] && return 0
    log "test: $1 ($name)"
    $ALTER eval $EVAL --out "$1" --set "checkpoint=$R/stage2-variant-seed$first_seed" --set "compare=[${list%, }]" \
        --set "data.eval=$(abspath "$2")" --overwrite
    touch "$1/.done"
}
score "$ROOT/eval-variant" "$D/test.jsonl"
$PY bench/compare_subset.py "$ROOT/eval-variant" --with "$ROOT/eval" > "$ROOT/eval-variant/variant-test.md"
if [ "$MIX" = lexicon ]; then
    score "$ROOT/eval-variant-fresh" "$ROOT/data-fresh/test.jsonl"
    $PY bench/compare_subset.py "$ROOT/eval-variant-fresh" --with "$ROOT/eval-fresh" \
        > "$ROOT/eval-variant-fresh/variant-test.md"
fi
log done
