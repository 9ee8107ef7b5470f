#!/usr/bin/env bash
# The BBC News comparison of issue 11 §6: zero-shot, parameter-matched multi-task PEFT LoRA, per-task
# LoRA, MTA stage 1, MTA stage 1 + 2; three training seeds; every choice on the validation split (seed 1),
# the test split scored once at the end. `make compare` runs it; outputs under $ROOT (default
# runs/compare), choices in $ROOT/choices.txt, the committed copies in docs/results/bbc/.
#
#   choice 1: the stage-1 expert kind, hydra_lora (rank 18) or lora (5 experts x rank 12), at 2e-3;
#   choice 2: the learning rate of MTA (stage 1 and 2) and, separately, of the LoRA baseline: 2e-3 or
#             6e-3 (at matched alpha/rank = 2 the update of rank-59 LoRA is larger than that of rank-18
#             experts at the same rate, so one shared rate would favour one side);
#   choice 3: the stage-2 gate's view of the task, gate_task bias or none;
#   then seeds 2 and 3 of the chosen MTA and LoRA, one per-task LoRA run, and the test split.
#
# Every run shares data, prompts, batch 8, linear decay with 10 warm-up steps, and the budget: MTA stage 1
# 80 steps + stage 2 40 steps, LoRA 120 steps, per-task LoRA 40 steps per task. Runs already finished
# (a .done marker) are not repeated, so an interrupted comparison resumes where it stopped.
# STAGE1_STEPS / STAGE2_STEPS / SEEDS / VAL_N / TEST_N override the budget (a smoke run:
# ROOT=runs/smoke STAGE1_STEPS=1 STAGE2_STEPS=1 SEEDS="1 2" VAL_N=2 TEST_N=2). CHOICES=<choices.txt>
# takes choices 1 and 2 from an earlier run (e.g. docs/results/bbc/choices.txt) instead of rerunning them.
set -euo pipefail
ALTER=${ALTER:-.venv/bin/alter}
PY=${PY:-.venv/bin/python}
ROOT=${ROOT:-runs/compare}
S1=${STAGE1_STEPS:-80}
S2=${STAGE2_STEPS:-40}
SEEDS=${SEEDS:-"1 2 3"}
LR0=2.0e-3
LR1=6.0e-3
TRAIN=configs/alter/bbc-compare-train.yaml
STAGE2=configs/alter/bbc-compare-stage2.yaml
EVAL=configs/alter/bbc-compare-eval.yaml
D=$ROOT/data
first_seed=${SEEDS%% *}
. "$(dirname "$0")/compare_lib.sh"

log data
$ALTER data bbc --config configs/alter/bbc-data.yaml --max-body-chars 300 --max-validation "${VAL_N:-30}" \
    --max-test "${TEST_N:-200}" --out "$D" --overwrite

s=$first_seed

if [ -n "${CHOICES:-}" ]; then
    # choices 1 and 2 read from an earlier run's choices.txt (its validation runs are not repeated)
    KIND=$(choice expert); LR=$(choice mta_learning_rate); LORA_LR=$(choice lora_learning_rate)
    for v in "$KIND" "$LR" "$LORA_LR"; do
        [ -n "$v" ] || { echo "error: $CHOICES lacks one of expert, mta_learning_rate, lora_learning_rate" >&2; exit 2; }
    done
    h=$(choice expert_hydra_lora); l=$(choice expert_lora); m0=$(choice "mta_lr_$LR0"); m1=$(choice "mta_lr_$LR1")
    b0=$(choice "lora_lr_$LR0"); b1=$(choice "lora_lr_$LR1")
    log "choices 1-2 from $CHOICES: expert $KIND, MTA lr $LR, LoRA lr $LORA_LR"
else
    # choice 1: expert kind (lr 2e-3)
    stage1 hydra_lora $LR0 "$s"
    stage1 lora $LR0 "$s"
    val "$ROOT/val-kind" "$R/stage1-hydra_lora-seed$s" "[$R/stage1-lora-seed$s]"
    h=$(macro "$ROOT/val-kind" "stage1-hydra_lora-seed$s"); l=$(macro "$ROOT/val-kind" "stage1-lora-seed$s")
    KIND=$(pick "$h" "$l" hydra_lora lora)
    log "validation macro: hydra_lora $h, lora $l -> $KIND"

    # choice 2: learning rates (MTA stage 1; LoRA baseline)
    stage1 "$KIND" $LR1 "$s"
    lora $LR0 "$s"
    lora $LR1 "$s"
    val "$ROOT/val-lr" "$R/stage1-$KIND-seed$s" \
        "[$R/stage1-$KIND-lr$LR1-seed$s, $R/lora-lr$LR0-seed$s, $R/lora-lr$LR1-seed$s]"
    m0=$(macro "$ROOT/val-lr" "stage1-$KIND-seed$s"); m1=$(macro "$ROOT/val-lr" "stage1-$KIND-lr$LR1-seed$s")
    b0=$(macro "$ROOT/val-lr" "lora-lr$LR0-seed$s"); b1=$(macro "$ROOT/val-lr" "lora-lr$LR1-seed$s")
    LR=$(pick "$m0" "$m1" $LR0 $LR1); LORA_LR=$(pick "$b0" "$b1" $LR0 $LR1)
    log "validation macro: MTA stage 1 lr $LR0 $m0, $LR1 $m1 -> $LR; LoRA lr $LR0 $b0, $LR1 $b1 -> $LORA_LR"
fi

# choice 3: the stage-2 gate's task input (task_only: its per-task logits at 5x the rate, as the selector)
stage1 "$KIND" "$LR" "$s"
stage2 "$KIND" "$LR" bias "$s"
stage2 "$KIND" "$LR" none "$s"
stage2 "$KIND" "$LR" task_only "$s"
k=$KIND$(sfx "$LR")
val "$ROOT/val-gate" "$R/stage2-$k-bias-seed$s" \
    "[$R/stage2-$k-none-seed$s, $R/stage2-$k-task_only-seed$s, $R/stage1-$k-seed$s]"
g1=$(macro "$ROOT/val-gate" "stage2-$k-bias-seed$s"); g0=$(macro "$ROOT/val-gate" "stage2-$k-none-seed$s")
g2=$(macro "$ROOT/val-gate" "stage2-$k-task_only-seed$s")
GATE=$(pick "$g1" "$g0" bias none); gbest=$(pick "$g1" "$g0" "$g1" "$g0")
GATE=$(pick "$gbest" "$g2" "$GATE" task_only)
log "validation macro: gate_task bias $g1, none $g0, task_only $g2 -> $GATE"
{
    echo "# validation macro averages (seed $s) and the choices made from them by bench/compare_bbc.sh"
    [ -z "${CHOICES:-}" ] || echo "# expert and learning rates (choices 1-2) read from $CHOICES, not rerun"
    echo "expert_hydra_lora=$h"; echo "expert_lora=$l"; echo "expert=$KIND"
    echo "mta_lr_$LR0=$m0"; echo "mta_lr_$LR1=$m1"; echo "mta_learning_rate=$LR"
    echo "lora_lr_$LR0=$b0"; echo "lora_lr_$LR1=$b1"; echo "lora_learning_rate=$LORA_LR"
    echo "gate_task_bias=$g1"; echo "gate_task_none=$g0"; echo "gate_task_task_only=$g2"; echo "gate_task=$GATE"
} > "$ROOT/choices.txt.tmp"
mv "$ROOT/choices.txt.tmp" "$ROOT/choices.txt"

# the other seeds, the per-task LoRA
for s in $SEEDS; do stage1 "$KIND" "$LR" "$s"; stage2 "$KIND" "$LR" "$GATE" "$s"; done
for s in $SEEDS; do lora "$LORA_LR" "$s"; done
lora_per_task "$LORA_LR" "$first_seed" $(((S1 + S2 + 2) / 3))
test_eval "$k" "$GATE" "$LORA_LR" "$SEEDS"
log done
