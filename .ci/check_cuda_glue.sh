#!/usr/bin/env bash
# Proves that solo's CUDA extension -- the launch glue in csrc/cuda/*.cpp (which needs torch's CUDA headers) plus
# the torch-free kernels in kernels/*.cu -- compiles and links against the CUDA build of torch, and registers its
# CUDA kernels with the dispatcher, on a machine without a GPU.
#
#   1. a virtualenv with the CUDA build of torch (cached; rebuilt when missing, partial or CPU-only),
#   2. `SOLO_FORCE_CUDA=1 python setup.py build_ext` from a copy of the sources in a temp dir (the source tree gets
#      no build artefacts),
#   3. torch.ops.load_library(<built .so>) and a CUDA kernel registered for every solo op.
#
# Environment: SOLO_CUDA_VENV (default ~/.cache/solo/cuda-venv), SOLO_CUDA_TORCH (default 2.13.0),
#   SOLO_CHECK_CUDA_ARCHS (TORCH_CUDA_ARCH_LIST for this check; default 9.0 -- the CMake build already compiles the
#   kernels for every architecture), CUDA_HOME (else found from nvcc), PYTHON (interpreter for a new venv),
#   MAX_JOBS (default 2), SOLO_KEEP_BUILD=1 (keep the temp build dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SOLO_CUDA_VENV:-$HOME/.cache/solo/cuda-venv}
TORCH_VERSION=${SOLO_CUDA_TORCH:-2.13.0}
BASE_PYTHON=${PYTHON:-python3}
export MAX_JOBS=${MAX_JOBS:-2}
export TORCH_CUDA_ARCH_LIST=${SOLO_CHECK_CUDA_ARCHS:-9.0}
START=$SECONDS

log() { echo "check_cuda_glue: $*"; }
fail() {
  echo "check_cuda_glue: FAIL: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------------------------
# CUDA toolkit root: $CUDA_HOME / $CUDA_PATH, else the nvcc on the PATH (following a wrapper script that execs the
# real one: torch would otherwise take the wrapper's folder for the root and miss the headers), else /usr/local/cuda*.
find_cuda_home() {
  local d nvcc target
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then
      echo "$d"
      return 0
    fi
  done
  local candidates=()
  if nvcc=$(command -v nvcc); then
    nvcc=$(readlink -f "$nvcc")
    if [ "$(head -c 2 "$nvcc")" = "#!" ]; then
      target=$(grep -oE '/[^[:space:]"'\'']+/bin/nvcc' "$nvcc" | head -n 1 || true)
      [ -n "$target" ] && candidates+=("$(dirname "$(dirname "$target")")")
    fi
    candidates+=("$(dirname "$(dirname "$nvcc")")")
  fi
  candidates+=(/usr/local/cuda $(ls -d /usr/local/cuda-* 2>/dev/null | sort -rV))
  for d in "${candidates[@]}"; do
    if [ -x "$d/bin/nvcc" ] && [ -f "$d/include/cuda_runtime.h" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

CUDA_ROOT=$(find_cuda_home) || fail "no CUDA toolkit found (set CUDA_HOME to the toolkit root)"
NVCC_VERSION=$("$CUDA_ROOT/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
log "CUDA toolkit $CUDA_ROOT (nvcc $NVCC_VERSION), arch list $TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS"

# ---------------------------------------------------------------------------------------------------------------
# The venv. A complete one imports the CUDA build of the pinned torch and has the build tools; anything else
# (an interrupted install, a CPU wheel, another torch) is rebuilt from scratch; missing build tools are just installed.
# A lock keeps two checks from building it at once.
# venv_state prints "ok", "tools" (the CUDA torch is fine, build tools missing) or "broken".
venv_state() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo broken
    return
  fi
  "$VENV/bin/python" - "$TORCH_VERSION" <<'EOF' 2>/dev/null || echo broken
import sys
import torch
assert torch.version.cuda, "CPU-only torch"
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
import torch.utils.cpp_extension  # noqa: F401
try:
    import numpy, setuptools, wheel, ninja  # noqa: F401
except ImportError:
    print("tools")
else:
    print("ok")
EOF
}

pip_install() {
  # --isolated: ignore pip config/env that point at a local CPU-only wheel of torch.
  if ! "$VENV/bin/python" -m pip install --isolated "$@" >>"$VENV.log" 2>&1; then
    tail -n 20 "$VENV.log" >&2
    return 1
  fi
}

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock -w 3600 9 || fail "another check has held $VENV.lock for an hour"
case "$(venv_state)" in
  ok) log "reusing venv $VENV" ;;
  tools)
    log "venv $VENV: installing missing build tools"
    pip_install numpy ninja setuptools wheel || fail "pip install of the build tools failed (see $VENV.log)"
    ;;
  *)
    log "creating venv $VENV with the CUDA build of torch $TORCH_VERSION (a few GB; log: $VENV.log)"
    rm -rf "$VENV"
    : >"$VENV.log"
    "$BASE_PYTHON" -m venv "$VENV" || fail "cannot create a venv with $BASE_PYTHON"
    if ! pip_install "torch==$TORCH_VERSION" numpy ninja setuptools wheel; then
      rm -rf "$VENV"
      fail "pip install into $VENV failed (see $VENV.log)"
    fi
    ;;
esac
[ "$(venv_state)" = ok ] || fail "the venv $VENV does not provide a CUDA build of torch $TORCH_VERSION (see $VENV.log)"
flock -u 9
TORCH_DESC=$("$VENV/bin/python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')
log "torch $TORCH_DESC"

# ---------------------------------------------------------------------------------------------------------------
# Build from a copy of the sources: setup.py, the extension sources and the package (setup() lists it).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/solo-cuda-glue.XXXXXX")
if [ "${SOLO_KEEP_BUILD:-0}" = 1 ]; then
  log "keeping $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK/src"
for item in setup.py csrc kernels solo; do
  [ -e "$ROOT/$item" ] && cp -r "$ROOT/$item" "$WORK/src/"
done
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +

log "building the extension (SOLO_FORCE_CUDA=1) ..."
BUILD_START=$SECONDS
if ! (cd "$WORK/src" &&
  PATH="$VENV/bin:$PATH" SOLO_FORCE_CUDA=1 CUDA_HOME="$CUDA_ROOT" \
    "$VENV/bin/python" setup.py build_ext --build-temp "$WORK/temp" --build-lib "$WORK/lib") \
  >"$WORK/build.log" 2>&1; then
  grep -E -B2 -A8 'error|Error' "$WORK/build.log" | head -n 80 >&2 || tail -n 60 "$WORK/build.log" >&2
  fail "the CUDA build of the extension failed (full log above / $WORK/build.log with SOLO_KEEP_BUILD=1)"
fi
sed -n '/^solo setup:/,/sources/p' "$WORK/build.log"
WARNINGS=$(grep -c -E '(^|[^-])warning' "$WORK/build.log" || true)
log "built in $((SECONDS - BUILD_START)) s ($WARNINGS warning lines in the build log)"
if [ "$WARNINGS" != 0 ]; then
  grep -E '(^|[^-])warning' "$WORK/build.log" | sort | uniq -c | sort -rn | head -n 20
fi

SO=$(find "$WORK/lib" -name '_C*.so' | head -n 1)
[ -n "$SO" ] || fail "no _C*.so under $WORK/lib"

# ---------------------------------------------------------------------------------------------------------------
# Load it (no GPU needed) and ask the dispatcher for the CUDA kernels.
"$VENV/bin/python" - "$SO" <<'EOF' || fail "the built library does not load or lacks CUDA kernels"
import sys

import torch

torch.ops.load_library(sys.argv[1])
# Every op whose schema the library defines (csrc/ops.cpp) must have a CUDA kernel.
names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("solo::"))
if not names:
    sys.exit("check_cuda_glue: the library registered no solo:: ops")
missing = []
for name in names:
    cuda = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    cpu = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    yes_no = {True: "yes", False: "no"}
    print(f"check_cuda_glue:   {name:30s} CUDA kernel: {yes_no[cuda]:3s}   CPU kernel: {yes_no[cpu]}")
    if not cuda:
        missing.append(name)
print(f"check_cuda_glue:   torch.cuda.is_available() = {torch.cuda.is_available()}")
if missing:
    sys.exit(f"check_cuda_glue: no CUDA kernel registered for {', '.join(missing)}")
EOF

log "PASS ($((SECONDS - START)) s)"
