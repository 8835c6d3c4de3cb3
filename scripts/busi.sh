#!/usr/bin/env bash
# Paper Table 6: BUSI, benign and malignant in turn as the labeled domain, with 1/8 (64) and
# 1/4 (129) of the 518 training images labeled.
# Usage: bash scripts/busi.sh [DATA_ROOT] [extra train.py arguments]
# DATA_ROOT defaults to $BUSI_ROOT or ../data/Dataset_BUSI_with_GT.
source "$(dirname "$0")/common.sh"
root="${1:-${BUSI_ROOT:-../data/Dataset_BUSI_with_GT}}"
for domain in 1 2; do
  for num in 64 129; do
    train busi "$root" "$domain" "$num" "${@:2}"
  done
done
