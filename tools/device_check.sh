#!/usr/bin/env bash
# The owed GPU check, in one command (issue 17): on a machine with a CUDA GPU, run the GPU
# tests and the GPU benchmark and leave everything under $OUT.
#
#   bash tools/device_check.sh                  # on the device machine; $OUT is set there
#   INT4REF_COMMIT=<sha> bash tools/device_check.sh   # where the tree is a copy without .git
#   bash tools/device_check.sh --dry-run        # any machine: hide the GPU, run the CPU side
#
# Stages (each under its own time limit, all within --budget, default 450 s):
#   1. environment: versions, nvidia-smi, CuPy/NVRTC and the CUDA headers  -> env.json, nvidia-smi.txt
#   2. python -m pytest tests/test_gpu.py (GPU and CPU-emulator backends)   -> pytest-gpu.log/.xml
#   3. python -m int4ref.bench gpu --json bench-gpu.json --budget ...      -> bench-gpu.log, bench-gpu.json
#      (without a GPU: the same benchmark code on the CPU emulator         -> bench-gpu-emulator.json,
#       and a check that the real command refuses clearly, exit status 2)
#   4. python -m pytest tests/test_gpu_compile.py (NVRTC, every kernel, sm_75..sm_90)
#   summary.txt / summary.json: every stage's exit status and time.
#
# A failed stage does not stop the next one (the benchmark runs even when a test fails).
# Exit status: 0 all stages passed (with a GPU; or without one under --dry-run); 1 a stage
# failed or timed out; 2 no GPU (and not --dry-run): CPU-side checks only, nothing measured.
#
# Needs only what the device image has: python3 with numpy, scipy, pytest, hypothesis and
# CuPy (cupy-cuda13x); no network, nothing installed; int4ref runs from this tree
# (PYTHONPATH). Other python: INT4REF_PYTHON=/path/to/python.
#
# Options:
#   --dry-run          hide every GPU (CUDA_VISIBLE_DEVICES=""): the CPU-side path, exit 0 if it passes
#   --budget SECONDS   total time for all stages (default 450: one rerun fits 15 minutes)
#   --quick            benchmark on small shapes (a smoke test; the record says "quick")
#   --gpu-tests ARGS   pytest arguments of stage 2 (default: tests/test_gpu.py)
#   --compile-tests ARGS  pytest arguments of stage 4 (default: tests/test_gpu_compile.py)
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

DRY_RUN=0
QUICK=0
BUDGET=450
GPU_TESTS="tests/test_gpu.py"
COMPILE_TESTS="tests/test_gpu_compile.py"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --quick) QUICK=1 ;;
        --budget) shift; BUDGET=${1:-} ;;
        --gpu-tests) shift; GPU_TESTS=${1:-} ;;
        --compile-tests) shift; COMPILE_TESTS=${1:-} ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "device_check.sh: unknown option '$1' (see --help)" >&2; exit 64 ;;
    esac
    shift
done
case "$BUDGET" in
    ''|*[!0-9]*) echo "device_check.sh: --budget takes a whole number of seconds, got '$BUDGET'" >&2; exit 64 ;;
esac
if [ "$BUDGET" -lt 120 ]; then
    echo "device_check.sh: --budget $BUDGET is too short (at least 120 s)" >&2; exit 64
fi

if [ -z "${OUT:-}" ]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")
    echo "OUT was not set: writing to $OUT"
fi
mkdir -p "$OUT" || { echo "device_check.sh: cannot create OUT=$OUT" >&2; exit 1; }
OUT=$(cd "$OUT" && pwd)

PY=${INT4REF_PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "device_check.sh: no python at '$PY' (set INT4REF_PYTHON)" >&2; exit 1
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
if [ "$DRY_RUN" = 1 ]; then
    export CUDA_VISIBLE_DEVICES=""
fi
# the commit, for the record: git where the tree has .git, else what the caller says
if [ -z "${INT4REF_COMMIT:-}" ] && [ -e "$ROOT/.git" ] && command -v git >/dev/null 2>&1; then
    INT4REF_COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || true)
    [ -n "$INT4REF_COMMIT" ] && export INT4REF_COMMIT
fi

START=$SECONDS
DEADLINE=$((START + BUDGET))
# stage caps (seconds) reserved for the stages after the current one
CAP_TESTS=$(( (BUDGET - 30) * 31 / 100 ))
CAP_BENCH=$(( (BUDGET - 30) * 42 / 100 ))
CAP_COMPILE=$(( (BUDGET - 30) * 20 / 100 ))
HAVE_TIMEOUT=0
command -v timeout >/dev/null 2>&1 && HAVE_TIMEOUT=1

SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
STAGES_JSON=""
FAILED=0

# limit RESERVED: seconds left for this stage when RESERVED stay for the ones after it
limit() {
    local left=$((DEADLINE - SECONDS - $1))
    [ "$left" -lt 20 ] && left=20
    echo "$left"
}

# stage NAME LIMIT LOG EXPECTED CMD...: run CMD with output to LOG (and a tail to stdout);
# record it as ok when it exits with status EXPECTED; LAST_RC holds the exit status
stage() {
    local name=$1 lim=$2 log=$3 expected=$4
    shift 4
    local t0=$SECONDS rc
    echo
    echo "=== $name (limit ${lim} s) ==="
    echo "\$ $*" > "$log"
    if [ "$HAVE_TIMEOUT" = 1 ]; then
        timeout --kill-after=10 "$lim" "$@" >> "$log" 2>&1
    else
        "$@" >> "$log" 2>&1
    fi
    rc=$?
    local dt=$((SECONDS - t0))
    tail -n 25 "$log"
    local status=ok
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="TIMED OUT after ${lim} s"
    elif [ "$rc" != "$expected" ]; then status="FAILED (exit $rc)"
    elif [ "$rc" != 0 ]; then status="ok (exit $rc, expected)"; fi
    printf '%-34s %-24s %4d s  %s\n' "$name" "$status" "$dt" "$(basename "$log")" >> "$SUMMARY"
    STAGES_JSON="$STAGES_JSON${STAGES_JSON:+,}{\"stage\": \"$name\", \"exit\": $rc, \"seconds\": $dt, \"log\": \"$(basename "$log")\"}"
    LAST_RC=$rc
    return 0
}

echo "int4ref device check: $(date -u +%Y-%m-%dT%H:%M:%SZ), tree $ROOT, budget ${BUDGET} s, OUT=$OUT"

# --- 1. environment -----------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1 && [ "$DRY_RUN" = 0 ]; then
    {
        nvidia-smi
        echo
        nvidia-smi --query-gpu=name,driver_version,pci.bus_id,memory.total,clocks.max.sm,clocks.max.memory,ecc.mode.current,power.limit,persistence_mode --format=csv
    } > "$OUT/nvidia-smi.txt" 2>&1
    head -n 20 "$OUT/nvidia-smi.txt"
else
    echo "nvidia-smi: not run ($([ "$DRY_RUN" = 1 ] && echo "--dry-run" || echo "not installed"))" | tee "$OUT/nvidia-smi.txt"
fi
stage "environment" "$(limit $((CAP_TESTS + CAP_BENCH + CAP_COMPILE)))" "$OUT/env.log" 0 \
    "$PY" -m int4ref.bench gpu --environment --json "$OUT/env.json"
ENV_RC=$LAST_RC
[ "$ENV_RC" != 0 ] && FAILED=1

GPU_OK=0
if [ "$ENV_RC" = 0 ] && "$PY" -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))['gpu_available'] else 1)" "$OUT/env.json"; then
    GPU_OK=1
fi
if [ "$GPU_OK" = 1 ]; then
    echo "GPU: $("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['gpu'])" "$OUT/env.json")"
    export INT4REF_REQUIRE_GPU=1     # GPU tests fail instead of skipping
    export INT4REF_REQUIRE_NVRTC=1   # and so does a missing NVRTC
else
    echo "NO GPU: $([ "$DRY_RUN" = 1 ] && echo "--dry-run hides it" || "$PY" -c "import json, sys; print(json.load(open(sys.argv[1])).get('gpu', 'unknown'))" "$OUT/env.json" 2>/dev/null)"
    echo "Running the CPU side only (CPU emulator, NVRTC without a device); nothing is measured."
fi

# --- 2. GPU tests (both backends) -------------------------------------------------------
# shellcheck disable=SC2086  # GPU_TESTS holds several pytest arguments
stage "pytest ${GPU_TESTS%% *}" "$(limit $((CAP_BENCH + CAP_COMPILE)))" "$OUT/pytest-gpu.log" 0 \
    "$PY" -m pytest -q -p no:cacheprovider --durations=10 --junitxml="$OUT/pytest-gpu.xml" $GPU_TESTS
[ "$LAST_RC" != 0 ] && FAILED=1

# --- 3. benchmark ------------------------------------------------------------------------
LIM=$(limit "$CAP_COMPILE")
if [ "$GPU_OK" = 1 ]; then
    BENCH_BUDGET=$((LIM - 60))
    [ "$BENCH_BUDGET" -lt 30 ] && BENCH_BUDGET=30
    EXTRA=""
    [ "$QUICK" = 1 ] && EXTRA="--quick"
    # shellcheck disable=SC2086
    stage "benchmark (GPU)" "$LIM" "$OUT/bench-gpu.log" 0 \
        "$PY" -m int4ref.bench gpu --json "$OUT/bench-gpu.json" --budget "$BENCH_BUDGET" $EXTRA
    [ "$LAST_RC" != 0 ] && FAILED=1
elif [ "$ENV_RC" = 0 ] && "$PY" -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))['emulator_compiler'] else 1)" "$OUT/env.json"; then
    stage "benchmark code (CPU emulator)" "$LIM" "$OUT/bench-gpu-emulator.log" 0 \
        "$PY" -m int4ref.bench gpu --emulator --json "$OUT/bench-gpu-emulator.json"
    [ "$LAST_RC" != 0 ] && FAILED=1
else
    printf '%-34s %-24s %4d s  %s\n' "benchmark code (CPU emulator)" "skipped: no C++ compiler" 0 "" >> "$SUMMARY"
fi
if [ "$GPU_OK" != 1 ]; then
    stage "benchmark refuses without GPU" 60 "$OUT/bench-gpu-nogpu.log" 2 "$PY" -m int4ref.bench gpu
    if [ "$LAST_RC" != 2 ] || ! grep -q "no GPU to measure on" "$OUT/bench-gpu-nogpu.log"; then
        echo "expected exit status 2 and 'no GPU to measure on', got $LAST_RC" | tee -a "$OUT/bench-gpu-nogpu.log"
        FAILED=1
    fi
fi

# --- 4. NVRTC compile tests ----------------------------------------------------------------
# shellcheck disable=SC2086
stage "pytest ${COMPILE_TESTS%% *}" "$(limit 0)" "$OUT/pytest-compile.log" 0 \
    "$PY" -m pytest -q -p no:cacheprovider --junitxml="$OUT/pytest-compile.xml" $COMPILE_TESTS
[ "$LAST_RC" != 0 ] && FAILED=1

# --- summary -----------------------------------------------------------------------------
TOTAL=$((SECONDS - START))
if [ "$FAILED" = 1 ]; then VERDICT="FAILED"; RC=1
elif [ "$GPU_OK" = 1 ]; then VERDICT="PASSED (GPU)"; RC=0
elif [ "$DRY_RUN" = 1 ]; then VERDICT="PASSED (dry run: CPU side only, nothing measured)"; RC=0
else VERDICT="NO GPU: CPU side passed, nothing measured"; RC=2; fi
cat > "$OUT/summary.json" <<EOF
{"verdict": "$VERDICT", "exit": $RC, "gpu": $([ "$GPU_OK" = 1 ] && echo true || echo false), "dry_run": $([ "$DRY_RUN" = 1 ] && echo true || echo false), "seconds": $TOTAL, "budget_s": $BUDGET, "commit": "${INT4REF_COMMIT:-}", "stages": [$STAGES_JSON]}
EOF
echo
echo "=== summary ($TOTAL s of a ${BUDGET} s budget) ==="
cat "$SUMMARY"
if [ -f "$OUT/bench-gpu.json" ]; then
    "$PY" -c "
import json, sys
from int4ref.gpu import bench as bench_gpu
rec = json.load(open(sys.argv[1]))
out = bench_gpu.report(rec)
print(out['provenance']); print(); print(out['goals'])
" "$OUT/bench-gpu.json" 2>&1 | tee "$OUT/goals.md"
fi
echo "$VERDICT; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit $RC
