# Shared steps of the MTA-vs-LoRA comparisons (bench/compare_bbc.sh, bench/compare_lexicon.sh), sourced
# by them. The caller sets ALTER, PY, ROOT (output folder), TRAIN, STAGE2, EVAL (configs), D (data
# folder), S1 / S2 (stage-1 / stage-2 steps; the LoRA baselines get S1 + S2) and LR0 (the learning
# rate whose run names carry no -lr suffix). Every run writes a .done marker when it has finished and
# is skipped when the marker is there, so an interrupted comparison resumes where it stopped.
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # ROOT may be absolute
R=$(abspath "$ROOT")
mkdir -p "$ROOT"
log() { echo "== $(date -u +%H:%M:%S) $*"; }
data=(--set "data.train=$(abspath "$D")/train.jsonl")

# evaluate on the validation split: $1 = out folder, $2 = first checkpoint, $3 = compare list (YAML)
val() { [ -e "$1/.done" ] && return 0; $ALTER eval $EVAL --out "$1" --set "checkpoint=$2" --set "compare=$3" \
    --set "data.eval=$(abspath "$D")/validation.jsonl" --overwrite; touch "$1/.done"; }
macro() { $PY -c "import csv,sys; r={x['task']:x for x in csv.DictReader(open(sys.argv[1]))}; \
print(r['macro_average'][sys.argv[2]])" "$1/comparison.csv" "$2"; }
pick() { $PY -c "import sys; print(sys.argv[3] if float(sys.argv[1]) >= float(sys.argv[2]) else sys.argv[4])" "$@"; }
choice() { sed -n "s/^$1=//p" "$CHOICES"; }  # the value of key $1 in the choices file $CHOICES
sfx() { [ "$1" = "$LR0" ] && echo "" || echo "-lr$1"; }

stage1() {  # $1 kind, $2 learning rate, $3 seed, $4 (optional) steps instead of S1, named -steps$4
    local name extra=() steps=${4:-$S1}
    name="stage1-$1$(sfx "$2")${4:+-steps$4}-seed$3"
    if [ "$1" = lora ]; then extra=(--set mta.expert=lora --set mta.rank=12 --set mta.lora_alpha=24.0); fi
    [ -e "$ROOT/$name/.done" ] && return 0
    log "stage 1 $1 lr $2 seed $3, $steps steps"
    $ALTER train-stage1 $TRAIN --out "$ROOT/$name" "${data[@]}" --set train.seed="$3" \
        --set train.max_steps="$steps" --set train.learning_rate="$2" \
        --set "mta.selector_learning_rate=$($PY -c "print(5 * $2)")" "${extra[@]}" --overwrite
    touch "$ROOT/$name/.done"
}
stage2() {  # $1 kind, $2 learning rate, $3 gate_task (task_only: gate logits at 5x the rate), $4 seed,
            # then optionally $5 a variant name (run named -$5) and $6... its "key=value" overrides
    local name s1 extra=() var="" kind=$1 lr=$2 gate=$3 seed=$4
    if [ "$gate" = task_only ]; then extra=(--set "mta.gate_learning_rate=$($PY -c "print(5 * $lr)")"); fi
    if [ $# -ge 5 ]; then var="-$5"; shift 5; for kv in "$@"; do extra+=(--set "$kv"); done; fi
    s1="stage1-$kind$(sfx "$lr")-seed$seed"; name="stage2-$kind$(sfx "$lr")-$gate$var-seed$seed"
    [ -e "$ROOT/$name/.done" ] && return 0
    log "stage 2 $kind lr $lr gate_task=$gate${var:+ variant ${var#-}} seed $seed"
    $ALTER train-stage2 $STAGE2 --out "$ROOT/$name" "${data[@]}" --set "stage1=$R/$s1" \
        --set mta.gate_task="$gate" --set train.seed="$seed" --set train.max_steps="$S2" \
        --set train.learning_rate="$lr" "${extra[@]}" --overwrite
    touch "$ROOT/$name/.done"
}
lora() {  # $1 learning rate, $2 seed, $3 (optional) lora.rank, named -r$3 (default: matched to stage 1)
    local name="lora-lr$1${3:+-r$3}-seed$2" extra=()
    [ -z "${3:-}" ] || extra=(--set "lora.rank=$3")
    [ -e "$ROOT/$name/.done" ] && return 0
    log "LoRA baseline lr $1 seed $2${3:+ rank $3}"
    $ALTER train-baseline $TRAIN --out "$ROOT/$name" "${data[@]}" --set train.seed="$2" \
        --set train.max_steps=$((S1 + S2)) --set train.learning_rate="$1" "${extra[@]}" --overwrite
    touch "$ROOT/$name/.done"
}
lora_per_task() {  # $1 learning rate, $2 seed, $3 steps per task
    [ -e "$ROOT/lora-per-task/.done" ] && return 0
    log "per-task LoRA lr $1 seed $2, $3 steps per task"
    $ALTER train-baseline $TRAIN --per-task --out "$ROOT/lora-per-task" "${data[@]}" \
        --set train.seed="$2" --set train.max_steps="$3" --set train.learning_rate="$1" --overwrite
    touch "$ROOT/lora-per-task/.done"
}

# the test split, scored once: every source in one eval. $1 kind+lr suffix (e.g. hydra_lora-lr6.0e-3),
# $2 gate_task, $3 LoRA learning rate, $4 the seeds. Labels are the folder names; the links
# stage2-seedN / stage1-seedN / lora-seedN to the chosen runs make the -seedN groups read as methods.
test_eval() {
    local k=$1 gate=$2 lora_lr=$3 seeds=$4 s first list=""
    first=${seeds%% *}
    for s in $seeds; do
        ln -sfn "stage2-$k-$gate-seed$s" "$ROOT/stage2-seed$s"; ln -sfn "stage1-$k-seed$s" "$ROOT/stage1-seed$s"
        ln -sfn "lora-lr$lora_lr-seed$s" "$ROOT/lora-seed$s"
    done
    for s in $seeds; do [ "$s" = "$first" ] || list+="$R/stage2-seed$s, "; done
    for s in $seeds; do list+="$R/stage1-seed$s, "; done
    for s in $seeds; do list+="$R/lora-seed$s, "; done
    list+="$R/lora-per-task, zero-shot"
    log "test split"
    $ALTER eval $EVAL --out "$ROOT/eval" --set "checkpoint=$R/stage2-seed$first" --set "compare=[$list]" \
        --set "data.eval=$(abspath "$D")/test.jsonl" --overwrite
}
