#!/usr/bin/env bash
# Paper Table 4: Fundus, each of the 4 domains in turn as the labeled domain, 20 labeled images.
# Usage: bash scripts/fundus.sh [DATA_ROOT] [extra train.py arguments]
# DATA_ROOT defaults to $FUNDUS_ROOT or ../data/Fundus.
source "$(dirname "$0")/common.sh"
root="${1:-${FUNDUS_ROOT:-../data/Fundus}}"
for domain in 1 2 3 4; do
  train fundus "$root" "$domain" 20 "${@:2}"
done
