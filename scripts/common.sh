# Shared by scripts/<dataset>.sh: choose the foundation model and run one training per setting.
#
# Environment:
#   MEDSAM_CHECKPOINT  MedSAM ViT-B weights (default checkpoints/medsam_vit_b.pth). When the file
#                      exists the runs use MedSAM, as in the paper; otherwise the packaged
#                      LiteMedSAM (no download needed).
#   FOUNDATION         force a foundation model (litemedsam | medsam_vit_b | sam_vit_b | tiny ...);
#                      only medsam_vit_b is given $MEDSAM_CHECKPOINT.
#   PYTHON             interpreter (default: python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MEDSAM_CHECKPOINT="${MEDSAM_CHECKPOINT:-checkpoints/medsam_vit_b.pth}"
PYTHON="${PYTHON:-python}"

foundation_args() {
  local name="${FOUNDATION:-}"
  if [[ -z "$name" ]]; then
    if [[ -f "$MEDSAM_CHECKPOINT" ]]; then name=medsam_vit_b; else name=litemedsam; fi
  fi
  if [[ "$name" == medsam_vit_b ]]; then
    echo "--foundation medsam_vit_b --checkpoint $MEDSAM_CHECKPOINT"
  else  # the others find their own weights (or need none)
    echo "--foundation $name"
  fi
}

# train <config> <root> <lb_domain> <lb_num> [extra train.py arguments...]
train() {
  local config="$1" root="$2" domain="$3" num="$4"
  shift 4
  # shellcheck disable=SC2046
  # --auto_resume: rerunning a script continues killed runs instead of refusing them.
  "$PYTHON" train.py --config "configs/$config.yaml" --root "$root" \
    --lb_domain "$domain" --lb_num "$num" $(foundation_args) --auto_resume "$@"
}
