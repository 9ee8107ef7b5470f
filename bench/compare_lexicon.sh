#!/usr/bin/env bash
# The lexicon-mixture comparison of issue 11 §6 (docs/lexicon.md): eight tasks (CMUdict phonemes,
# syllables, rhyme; ISO country names and currencies; BBC topic, headline, match). Zero-shot,
# parameter-matched multi-task PEFT LoRA, per-task LoRA, MTA stage 1, MTA stage 1 + 2; three training
# seeds; the test split scored once at the end. `make compare-lexicon` runs it; outputs under $ROOT
# (default runs/lexicon), the committed copies in docs/results/lexicon/.
#
# No choice is made on this mixture: the expert kind, the two learning rates and the stage-2 gate_task
# are the ones chosen on the BBC validation split ($CHOICES, written by bench/compare_bbc.sh), applied
# unchanged, so the lexicon test split measures how the BBC-chosen recipe transfers. One adaptation is
# structural, not tuned: 8 experts, one per task (task i owns expert i), where BBC has 5 for 3 tasks.
#
# Budget as on BBC: MTA stage 1 80 steps + stage 2 40 steps, the LoRA baseline 120 steps, per-task LoRA
# 15 steps per task (8 x 15 = 120 in all), batch 8, 10 warm-up steps, linear decay. Resumable (.done
# markers). STAGE1_STEPS / STAGE2_STEPS / SEEDS / TEST_N override the budget (a smoke run:
# ROOT=runs/smoke-lexicon STAGE1_STEPS=1 STAGE2_STEPS=1 SEEDS="1 2" TEST_N=2).
set -euo pipefail
ALTER=${ALTER:-.venv/bin/alter}
PY=${PY:-.venv/bin/python}
ROOT=${ROOT:-runs/lexicon}
S1=${STAGE1_STEPS:-80}
S2=${STAGE2_STEPS:-40}
SEEDS=${SEEDS:-"1 2 3"}
CHOICES=${CHOICES:-docs/results/bbc/choices.txt}
LR0=2.0e-3
TRAIN=configs/alter/lexicon-compare-train.yaml
STAGE2=configs/alter/lexicon-compare-stage2.yaml
EVAL=configs/alter/lexicon-compare-eval.yaml
D=$ROOT/data
first_seed=${SEEDS%% *}
. "$(dirname "$0")/compare_lib.sh"

KIND=$(choice expert); LR=$(choice mta_learning_rate); LORA_LR=$(choice lora_learning_rate)
GATE=$(choice gate_task)
for v in "$KIND" "$LR" "$LORA_LR" "$GATE"; do
    [ -n "$v" ] || { echo "error: $CHOICES lacks one of expert, mta_learning_rate, lora_learning_rate, gate_task" >&2; exit 2; }
done
log "choices from $CHOICES: expert $KIND, MTA lr $LR, LoRA lr $LORA_LR, gate_task $GATE"
{
    echo "# choices transferred unchanged from the BBC validation split ($CHOICES); none made on the lexicon mixture"
    echo "expert=$KIND"; echo "mta_learning_rate=$LR"; echo "lora_learning_rate=$LORA_LR"; echo "gate_task=$GATE"
} > "$ROOT/choices.txt"

log data
$ALTER data lexicon --config configs/alter/lexicon-data.yaml --max-body-chars 200 --max-train 400 \
    --max-validation 20 --max-test "${TEST_N:-30}" --out "$D" --overwrite

for s in $SEEDS; do stage1 "$KIND" "$LR" "$s"; stage2 "$KIND" "$LR" "$GATE" "$s"; lora "$LORA_LR" "$s"; done
lora_per_task "$LORA_LR" "$first_seed" $(((S1 + S2 + 7) / 8))
test_eval "$KIND$(sfx "$LR")" "$GATE" "$LORA_LR" "$SEEDS"
log done
