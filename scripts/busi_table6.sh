#!/usr/bin/env bash
# Paper Table 6 rows on BUSI with the packaged LiteMedSAM: SupOnly (both students, each trained
# on the labeled images alone) and SynFoC, labeled domain benign, 1/8 of the labels (64 images),
# the same schedule and seed for both. Only the last checkpoint is reported (no model selection
# on the test split); the table goes to OUT_DIR/table.md and .csv.
#
# Usage: bash scripts/busi_table6.sh DATA_ROOT ITERATIONS [OUT_DIR] [extra train.py arguments]
#   e.g. on a GPU machine with a 256-px copy made by scripts/resize_dataset.py:
#   bash scripts/busi_table6.sh .busi256 3000 runs/busi_table6
# The extra arguments come after the defaults and override them, e.g. --lb_num 129 for 1/4.
# METHODS (default "suponly synfoc") picks the methods, e.g. METHODS=synfoc to rerun SynFoC alone.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$1" iterations="$2" out="${3:-runs/busi_table6}"
shift $(( $# < 3 ? $# : 3 ))
PYTHON="${PYTHON:-python3}"

run() {  # run <name> [train.py arguments...]
  local name="$1"
  shift
  "$PYTHON" train.py --config configs/busi.yaml --root "$root" --lb_domain benign --lb_num 64 \
    --foundation litemedsam --max_iterations "$iterations" --out "$out/$name" \
    --set train.eval_interval="$iterations" --auto_resume --no_progress "$@"
  "$PYTHON" test.py --run "$out/$name" --checkpoint last --no_progress
}

methods=(${METHODS:-suponly synfoc})
for method in "${methods[@]}"; do  # check them all before the first run starts
  [[ "$method" == suponly || "$method" == synfoc ]] ||
    { echo "unknown method '$method' in METHODS (expected suponly, synfoc)" >&2; exit 2; }
done
runs=()
for method in "${methods[@]}"; do
  if [[ "$method" == suponly ]]; then
    run suponly --set method.supervised_only=true --set method.consistency=none "$@"
  else
    run synfoc "$@"
  fi
  runs+=("$out/$method")
done
"$PYTHON" scripts/summarize.py "${runs[@]}" --out "$out/table"
