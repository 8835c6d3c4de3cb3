#!/usr/bin/env bash
# Paper Table 3: Prostate, each of the 6 sites in turn as the labeled domain, 20 labeled slices.
# Usage: bash scripts/prostate.sh [DATA_ROOT] [extra train.py arguments, e.g. --set train.seed=1]
# DATA_ROOT defaults to $PROSTATE_ROOT or ../data/ProstateSlice. See scripts/common.sh for the
# choice of foundation model.
source "$(dirname "$0")/common.sh"
root="${1:-${PROSTATE_ROOT:-../data/ProstateSlice}}"
for domain in 1 2 3 4 5 6; do
  train prostate "$root" "$domain" 20 "${@:2}"
done
