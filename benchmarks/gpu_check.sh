#!/usr/bin/env bash
# The one command to run on a machine with an NVIDIA GPU: builds solo for that GPU only, then runs, in order of
# value, the self-test, the C++ launcher tests, the CUDA tests and the benchmarks, writing results and logs into one
# folder as it goes (a run cut off keeps what it finished).
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--wheels DIR] [--budget SECONDS] [--dry-run]
#
#   --out DIR        results folder (default benchmarks/results/gpu_<UTC date-time>); at most 8 files:
#                      env.json       GPU, driver, torch/triton/CUDA/nvcc versions, date, commit, missing modules
#                      build.log      solo._C build (setup.py build_ext --inplace) and the CMake build of the C++ tests
#                      selftest.json  python -m solo.selftest --device cuda --json
#                      tests.log      the self-test's output, ctest (C++ launcher tests), pytest -m needs_cuda
#                      bench.log      the op and end-to-end benchmarks' output
#                      bench.json     benchmarks/run.py --device cuda, one report per op under "runs"
#                      bench_e2e.json benchmarks/run.py --e2e --device cuda, one report per preset under "runs"
#                      summary.md     one row per stage: status, seconds, command (rewritten after every stage)
#                    Every JSON holds the environment ("gpu_check_env" where the producer is another tool); every
#                    log starts with it.
#   --wheels DIR     install the wheels in DIR first (pip --no-index --no-deps --target, then PYTHONPATH): the GPU
#                    machine has no network
#   --budget S       wall-clock budget of the whole run (default 530 s, 9 minutes less headroom); every stage's
#                    time limit is cut to what is left, a stage with under 20 s left is skipped
#   --dry-run        no build, no GPU: prints every stage's command, still writes env.json and summary.md and does
#                    the wheel check (runs anywhere; tests/test_gpu_check.py uses it)
#
# Wheels to carry (the H200 image has Python 3.12 with torch 2.11 cu130, triton 3.6, numpy, pytest, pillow, tqdm,
# opencv-python-headless, matplotlib, hypothesis, but no pycocotools; solo's tests do not import expecttest):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl pycocotools==2.0.11
# pycocotools 2.0.11 is one abi3 wheel of 0.4 MB (needs numpy only), far under the 64 MiB the working tree may carry.
# `.whl/` is git-ignored; the wheel check below names any other module that is missing and the wheel to bring.
#
# It rebuilds solo._C in place (solo/_C*.so, solo/_build_info.py) for this GPU only: on a machine you keep, rebuild
# with the default architecture list afterwards (`pip install --no-build-isolation --no-deps -e .`).
# On this workplace's device tool: carry [".whl"], command `bash benchmarks/gpu_check.sh --wheels .whl --out $OUT`
# (the 8 files come back), timeout_s 600.
#
# Exit status: 0 when every stage that ran passed, 1 when one failed or timed out, 2 on a usage error.
set -uo pipefail  # not -e: a failing stage is recorded and the next one still runs
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
HELPER="$PY benchmarks/_gpu_check.py"

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check: $*" >&2; exit 2; }

# value OPTION WHAT "$@": the value after OPTION, refusing a missing one or the next option taken as the value
value() {
  local opt=$1 what=$2; shift 2
  { [ $# -ge 2 ] && [ -n "$2" ] && [[ "$2" != -* ]]; } || die "$opt needs $what${2:+, got '$2'}"
  VALUE=$2
}

OUT="" WHEELS="" DRY=0 BUDGET=530
while [ $# -gt 0 ]; do
  case "$1" in
    --out) value --out "a folder" "$@"; OUT=$VALUE; shift 2 ;;
    --out=*) OUT=${1#--out=}; [ -n "$OUT" ] || die "--out needs a folder"; shift ;;
    --wheels) value --wheels "a folder of .whl files" "$@"; WHEELS=$VALUE; shift 2 ;;
    --wheels=*) WHEELS=${1#--wheels=}; shift ;;
    --budget) value --budget "a number of seconds" "$@"; BUDGET=$VALUE; shift 2 ;;
    --budget=*) BUDGET=${1#--budget=}; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -gt 0 ] || die "--budget must be a positive whole number of seconds, got '$BUDGET'"
if [ -n "$WHEELS" ]; then
  [ -d "$WHEELS" ] || die "--wheels: no such folder '$WHEELS'"
  WHEELS=$(cd "$WHEELS" && pwd)
fi
OUT=${OUT:-benchmarks/results/gpu_$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT" || die "--out: cannot create '$OUT'"
OUT=$(cd "$OUT" && pwd)
Q_OUT=$(printf %q "$OUT")  # for the stage commands, which run through bash -c
[ -z "$(ls -A "$OUT")" ] || echo "gpu_check: note: $OUT is not empty; files of the same name are replaced"
STAGES=$(mktemp)  # stage rows for summary.md, outside the results folder (8 files at most there)
trap 'rm -f "$STAGES"' EXIT
DEADLINE=$((SECONDS + BUDGET))
FAILED=0

# --- wheels and missing modules (before anything imports solo) ----------------------------------------------------
if [ -n "$WHEELS" ] && [ "$DRY" = 0 ]; then
  shopt -s nullglob; whls=("$WHEELS"/*.whl); shopt -u nullglob
  if [ "${#whls[@]}" -gt 0 ]; then
    # --target + PYTHONPATH: leaves the image's environment untouched; --no-deps: the image has their dependencies
    SITE=${TMPDIR:-/tmp}/solo_gpu_check_site
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${whls[@]}" || echo "gpu_check: WARNING: installing the wheels of $WHEELS failed"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check: note: --wheels $WHEELS holds no .whl files"
  fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # solo and benchmarks from this checkout
export PYTHONUNBUFFERED=1

echo "=== wheel check"
WHEEL_ARGS=(); [ -n "$WHEELS" ] && WHEEL_ARGS=(--wheels "$WHEELS")
$HELPER missing "${WHEEL_ARGS[@]}"
MISSING_RC=$?
[ "$MISSING_RC" = 0 ] || echo "gpu_check: WARNING: required modules are missing (above); stages that import them fail"

# --- the environment and the GPU's architecture (one torch import: it costs seconds) ---------------------------
ENV_ARGS=(); [ "$DRY" = 1 ] && ENV_ARGS+=(--dry-run); [ -n "$WHEELS" ] && ENV_ARGS+=(--wheels "$WHEELS")
$HELPER env "$OUT/env.json" "${ENV_ARGS[@]}" >/dev/null || die "could not write $OUT/env.json"
HEADER=$($HELPER header "$OUT/env.json")
echo "$HEADER"
ARCH=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["compute_capability"] or "")' "$OUT/env.json")
if [ -z "$ARCH" ]; then
  [ "$DRY" = 1 ] || echo "gpu_check: WARNING: torch sees no CUDA device; the GPU stages will fail"
  ARCH=9.0  # dry run (or no GPU): show the commands for an H100/H200
fi
CMAKE_ARCH=${ARCH/./}
NPROC=$(nproc 2>/dev/null || echo 4)
for log in build.log tests.log bench.log; do
  { echo "$HEADER"; echo "# missing modules: $($HELPER missing "${WHEEL_ARGS[@]}" | tr '\n' ';')"; } > "$OUT/$log"
done
$HELPER summary "$OUT/env.json" "$STAGES" "$OUT/summary.md"

# run_stage NAME LIMIT LOG COMMAND: runs COMMAND (a bash string) with a time limit of LIMIT seconds, cut to the
# budget left, appending its output to LOG; records the row in summary.md.
run_stage() {
  local name=$1 limit=$2 log=$3 cmd=$4 left status note="" rc start
  left=$((DEADLINE - SECONDS))
  [ "$left" -ge 0 ] || left=0
  [ "$limit" -le "$left" ] || limit=$left
  printf '\n=== %s (limit %ss): %s\n' "$name" "$limit" "$cmd" | tee -a "$OUT/$log"
  if [ "$DRY" = 1 ]; then
    status="dry-run" rc=0 secs=0
  elif [ "$limit" -lt 20 ]; then
    status="skipped" note="out of the ${BUDGET}s budget" rc=0 secs=0
  else
    start=$SECONDS
    timeout -k 10 "$limit" bash -o pipefail -c "$cmd" 2>&1 | tee -a "$OUT/$log"
    rc=${PIPESTATUS[0]}
    secs=$((SECONDS - start))
    case $rc in
      0) status="passed" ;;
      124|137) status="TIMEOUT" note="killed after ${limit}s"; FAILED=1 ;;
      *) status="FAILED" note="exit status $rc"; FAILED=1 ;;
    esac
  fi
  [ -n "${STAGE_NOTE:-}" ] && note="${note:+$note; }$STAGE_NOTE"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$cmd" "$note" >> "$STAGES"
  echo "--- $name: $status ${secs}s${note:+ ($note)}" | tee -a "$OUT/$log"
  $HELPER summary "$OUT/env.json" "$STAGES" "$OUT/summary.md"
  STAGE_NOTE=""
  return "$rc"
}

# 1. Build solo._C for this GPU only. build_ext --inplace needs no network and installs nothing: the checkout on
#    PYTHONPATH is what every later stage imports.
BUILD_OK=0
run_stage build 240 build.log \
  "TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$NPROC $PY setup.py build_ext --inplace && $PY -c 'import solo.ops as o; s = o.available_backends(\"cuda\"); print(s); assert s[\"cuda\"][0], s[\"cuda\"][1]'" \
  && BUILD_OK=1

# 2. The self-test (another module, maybe absent from this checkout).
if [ "$DRY" = 1 ] || "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("solo.selftest") is None)' 2>/dev/null; then
  run_stage selftest 90 tests.log "$PY -m solo.selftest --device cuda --json $Q_OUT/selftest.json"
  # a failing self-test still writes its JSON: stamp it either way
  if [ "$DRY" = 0 ] && [ -f "$OUT/selftest.json" ]; then
    $HELPER stamp "$OUT/env.json" "$OUT/selftest.json" || echo "gpu_check: selftest.json is not valid JSON"
  fi
else
  echo "gpu_check: solo.selftest is not in this checkout: stage skipped" | tee -a "$OUT/tests.log"
  printf 'selftest\tskipped\t0\t%s\t%s\n' "$PY -m solo.selftest --device cuda --json ..." "solo.selftest not found" >> "$STAGES"
  $HELPER summary "$OUT/env.json" "$STAGES" "$OUT/summary.md"
fi

# 3. The C++ launcher tests (tests/cpp/test_kernels*.cpp) against the kernels built with CMake for this GPU only.
CMAKE_DIR=build/gpu_check_cmake
run_stage cpp_build 180 build.log \
  "cmake -S . -B $CMAKE_DIR -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=$CMAKE_ARCH && cmake --build $CMAKE_DIR -j$NPROC"
run_stage cpp_tests 60 tests.log "ctest --test-dir $CMAKE_DIR --output-on-failure"

# 4. The tests marked needs_cuda (conftest.py skips them without a GPU).
STAGE_NOTE=$([ "$BUILD_OK" = 1 ] || [ "$DRY" = 1 ] || echo "solo._C did not build: the cuda backend's tests skip")
run_stage pytest_cuda 150 tests.log "$PY -m pytest -m needs_cuda -q -rs -p no:cacheprovider"

# 5. Benchmarks: one run per op / preset, each appended to the JSON as it finishes, so a cut-off run keeps them.
BENCH_TMP=$(mktemp -d)
NAMES=$($HELPER names 2>/dev/null) || NAMES=""
OPS=$(sed -n 1p <<< "$NAMES") PRESETS=$(sed -n 2p <<< "$NAMES")
# fallbacks when the benchmarks cannot even be imported (their stages then fail and say why)
OPS=${OPS:-sigmoid_focal_loss dice_loss matrix_nms}
PRESETS=${PRESETS:-solov2_synthetic_r18}
for op in $OPS; do
  run_stage "bench:$op" 120 bench.log \
    "rm -f $BENCH_TMP/*.json && $PY benchmarks/run.py --device cuda --ops $op --out $BENCH_TMP --quiet && $HELPER append $Q_OUT/env.json $Q_OUT/bench.json \$(ls $BENCH_TMP/*.json | grep -v /latest- | head -1)"
done
first=1
for preset in $PRESETS; do
  post=$([ "$first" = 1 ] || echo " --no-postprocess"); first=0  # the post-processing row once
  run_stage "e2e:$preset" 120 bench.log \
    "rm -f $BENCH_TMP/*.json && $PY benchmarks/run.py --e2e --device cuda --presets $preset$post --out $BENCH_TMP --quiet && $HELPER append $Q_OUT/env.json $Q_OUT/bench_e2e.json \$(ls $BENCH_TMP/*.json | grep -v /latest- | head -1)"
done
rm -rf "$BENCH_TMP"

echo
cat "$OUT/summary.md"
echo "results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit "$FAILED"
