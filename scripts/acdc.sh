#!/usr/bin/env bash
# ACDC SSMIS (SSL4MIS h5 layout): 3 and 7 labeled patients (68 and 136 slices).
# Usage: bash scripts/acdc.sh [DATA_ROOT] [extra train.py arguments]
# DATA_ROOT defaults to $ACDC_ROOT or ../data/ACDC. Test a run with python test.py --run DIR.
source "$(dirname "$0")/common.sh"
root="${1:-${ACDC_ROOT:-../data/ACDC}}"
for patients in 3 7; do
  train acdc "$root" 1 "$patients" "${@:2}"
done
