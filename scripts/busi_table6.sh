#!/usr/bin/env bash
# Paper Table 6 rows on BUSI with the packaged LiteMedSAM, over several seeds: for each labeled
# domain and seed, SupOnly (both students, each trained on the labeled images alone) and SynFoC
# with the same schedule, seed and labels, then the tables: per run, mean ± std over seeds per
# labeled domain, and the paired SynFoC - SupOnly difference per seed.
#
# Usage: bash scripts/busi_table6.sh DATA_ROOT ITERATIONS [OUT_DIR] [extra train.py arguments]
#   e.g. on a GPU machine with a 256-px copy made by scripts/resize_dataset.py:
#   bash scripts/busi_table6.sh .busi256 3000 runs/busi_table6
# The extra arguments come after the defaults and override them, e.g. --lb_num 129 for 1/4.
# Environment:
#   METHODS     (default "suponly synfoc") which methods; "synfoc_runramp" is SynFoC with
#               lambda(t) ramped over this run's own length, continuously (the schedule before
#               method.ramp_iterations existed), for the old-against-faithful comparison
#   SEEDS       (default "1337 2 3") train.seed of the replicates
#   LB_DOMAINS  (default "benign") labeled domains, e.g. "benign malignant"
#   VAL_FRACTION (default 0) > 0 holds out that share of each domain's training images as a
#               validation split: evaluations every EVAL_INTERVAL (default ITERATIONS / 5) pick
#               best.pt on it, and both last.pt and best.pt are tested. With 0, only last.pt is
#               tested (no model selection at all: best.pt would be chosen on the test split).
#   TEST_LAST   (default 1) 0 skips test.py on last.pt when VAL_FRACTION is 0: the run's own
#               final evaluation, eval/<ITERATIONS>.json, is then that test already (same
#               checkpoint, split and code), and summarize.py reads it instead of test_last.json.
# Run folders: OUT_DIR/<labeled domain>/seed<seed>/<method>. Tables: OUT_DIR/table_<ckpt>.md,
# by_domain_<ckpt>.md, paired_<ckpt>.md (and .csv), where <ckpt> is the tested checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$1" iterations="$2" out="${3:-runs/busi_table6}"
shift $(( $# < 3 ? $# : 3 ))
PYTHON="${PYTHON:-python3}"
methods=(${METHODS:-suponly synfoc})
seeds=(${SEEDS:-1337 2 3})
domains=(${LB_DOMAINS:-benign})
val_fraction="${VAL_FRACTION:-0}"

method_args() {  # method_args <method>: the train.py arguments that make it
  case "$1" in
    suponly) echo "--set method.supervised_only=true --set method.consistency=none" ;;
    synfoc) echo "" ;;
    synfoc_runramp) echo "--set method.ramp_iterations=$iterations --set method.ramp_stairs=0" ;;
    *) return 1 ;;
  esac
}
for method in "${methods[@]}"; do  # check them all before the first run starts
  method_args "$method" >/dev/null ||
    { echo "unknown method '$method' in METHODS (expected suponly, synfoc, synfoc_runramp)" >&2
      exit 2; }
done

checkpoints=(last)
selection=(--set train.eval_interval="$iterations")
if "$PYTHON" -c "import sys; sys.exit(not float('$val_fraction') > 0)"; then
  checkpoints=(last best)
  selection=(--set data.val_fraction="$val_fraction"
             --set train.eval_interval="${EVAL_INTERVAL:-$(( iterations / 5 > 0 ? iterations / 5 : 1 ))}")
fi
tested=("${checkpoints[@]}")  # what test.py evaluates after each run
if [[ "${TEST_LAST:-1}" == 0 && "${checkpoints[*]}" == last ]]; then
  tested=()  # no validation split: the run's final evaluation already tested last.pt
fi

run() {  # run <run folder> [train.py arguments...]
  local dir="$1"
  shift
  "$PYTHON" train.py --config configs/busi.yaml --root "$root" --lb_num 64 \
    --foundation litemedsam --max_iterations "$iterations" --out "$dir" "${selection[@]}" \
    --auto_resume --no_progress "$@"
  for checkpoint in "${tested[@]}"; do
    "$PYTHON" test.py --run "$dir" --checkpoint "$checkpoint" --no_progress
  done
}

runs=()
for domain in "${domains[@]}"; do
  for seed in "${seeds[@]}"; do
    for method in "${methods[@]}"; do
      dir="$out/$domain/seed$seed/$method"
      # shellcheck disable=SC2046  # method_args is a list of words
      run "$dir" --lb_domain "$domain" --seed "$seed" $(method_args "$method") "$@"
      runs+=("$dir")
    done
  done
done
for checkpoint in "${checkpoints[@]}"; do
  summarize=("$PYTHON" scripts/summarize.py "${runs[@]}" --checkpoint "$checkpoint")
  "${summarize[@]}" --out "$out/table_$checkpoint"
  "${summarize[@]}" --by_labeled_domain --out "$out/by_domain_$checkpoint"
  if [[ " ${methods[*]} " == *" suponly "* && ${#methods[@]} -gt 1 ]]; then
    "${summarize[@]}" --paired --out "$out/paired_$checkpoint"
  fi
done
