#!/usr/bin/env bash
# Paper Table 5: M&Ms, each of the 4 vendors in turn as the labeled domain, 5 labeled slices.
# Usage: bash scripts/mnms.sh [DATA_ROOT] [extra train.py arguments]
# DATA_ROOT defaults to $MNMS_ROOT or ../data/mnms.
source "$(dirname "$0")/common.sh"
root="${1:-${MNMS_ROOT:-../data/mnms}}"
for domain in 1 2 3 4; do
  train mnms "$root" "$domain" 5 "${@:2}"
done
