# The per-mixture set-up of the K-times-budget comparisons (bench/compare_budget.sh,
# bench/compare_gate_input.sh), sourced by them before compare_lib.sh. The caller sets MIX and K; this
# refuses bad values in one line (exit 2, before anything is written) and sets ROOT (default
# runs/compare-${K}x for bbc, runs/lexicon-${K}x for lexicon), CHOICES, DATA_ARGS (the data builder's
# sizes; TEST_N overrides the test count), S1 / S2 (stage-1 / stage-2 steps: K*80 / K*40 unless
# STAGE1_STEPS / STAGE2_STEPS), the configs TRAIN, STAGE2, EVAL and the data folder D.
case "$K" in ''|*[!0-9]*|0) echo "error: K must be a positive integer, got '$K'" >&2; exit 2 ;; esac
case "$MIX" in
    bbc) ROOT=${ROOT:-runs/compare-${K}x}; CHOICES=${CHOICES:-docs/results/bbc/choices.txt}
         DATA_ARGS=(--max-body-chars 300 --max-validation 30 --max-test "${TEST_N:-200}") ;;
    lexicon) ROOT=${ROOT:-runs/lexicon-${K}x}; CHOICES=${CHOICES:-docs/results/lexicon/choices.txt}
         DATA_ARGS=(--max-body-chars 200 --max-train 400 --max-validation 20 --max-test "${TEST_N:-30}") ;;
    *) echo "error: MIX must be bbc or lexicon, got '$MIX'" >&2; exit 2 ;;
esac
# shellcheck disable=SC2034  # used by the sourcing script and compare_lib.sh
S1=${STAGE1_STEPS:-$((K * 80))}
S2=${STAGE2_STEPS:-$((K * 40))}
TRAIN=configs/alter/$MIX-compare-train.yaml
STAGE2=configs/alter/$MIX-compare-stage2.yaml
EVAL=configs/alter/$MIX-compare-eval.yaml
D=$ROOT/data
