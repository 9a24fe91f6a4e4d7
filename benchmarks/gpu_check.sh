#!/usr/bin/env bash
# Run the CUDA tests and a short GPU-versus-CPU benchmark on a GPU machine, in under 8 minutes.
#
# Usage (from any folder):
#   OUT=/path/to/results bash benchmarks/gpu_check.sh             # on a CUDA machine
#   OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry-run       # CPU stand-in, tiny counts
#
# Wheels in .whl/ (see benchmarks/README.md) are installed into /tmp/site first, and the
# repository itself goes on PYTHONPATH instead of being installed, so that the machine's own
# torch and torchvision are used. Output under $OUT: versions.txt, pytest-cuda.log, bench.log,
# bench.json and bench.md. The exit status is 0 only when the tests and the benchmark passed.
# HTTP_BENCH=1 adds the HTTP benchmark, within what is left of TOTAL_BUDGET (540 s by default).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1

dry_run="${DRY_RUN:-0}"
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        *) echo "gpu_check.sh: unknown argument '$arg'; expected --dry-run" >&2; exit 2 ;;
    esac
done

out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
# Seconds; the three steps together stay under 8 minutes.
test_timeout="${TEST_TIMEOUT:-180}"
# The whole run, the optional HTTP benchmark included, ends within this many seconds.
total_budget="${TOTAL_BUDGET:-540}"
bench_budget="${BENCH_BUDGET:-210}"
bench_timeout="${BENCH_TIMEOUT:-270}"

if [[ "$dry_run" == 1 ]]; then
    # The dry run is meant for a development checkout, whose virtual environment has torch.
    python="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"
    device=cpu
    bench_budget="${BENCH_BUDGET:-40}"
    # Triton compiles for CUDA only, so the dry run interprets the resize kernels on the CPU.
    export TRITON_INTERPRET="${TRITON_INTERPRET:-1}"
else
    python="${PYTHON:-python3}"
    device="${DEVICE:-cuda:0}"
fi

if compgen -G ".whl/*.whl" >/dev/null; then
    echo "== installing $(ls .whl/*.whl | wc -l) wheels from .whl into /tmp/site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed" >&2; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) dry_run=$dry_run device=$device python=$python"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi: not available"
    "$python" - <<'EOF'
import os
import platform
import shutil
import sysconfig
import torch
import torchvision
print("python", platform.python_version())
# Triton builds its kernel launchers with a C compiler and Python's headers.
headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
print("cc", os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang") or "MISSING")
print("Python.h", headers if os.path.exists(headers) else "MISSING")
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("torchvision", torchvision.__version__)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
names = (
    "PIL", "kornia", "kornia_rs", "aiohttp", "orjson", "yaml", "prometheus_client",
    "aiobotocore", "botocore", "pytest", "pytest_asyncio", "pytest_aiohttp",
)
for name in names:
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "installed"))
    except ImportError as exc:
        print(name, "MISSING:", exc)
EOF
} 2>&1 | tee "$out/versions.txt"

if ! "$python" -c "import darkroom_gpu.server, darkroom_gpu.manipulators.gpu"; then
    echo "darkroom_gpu cannot be imported; carry the missing packages as wheels in .whl/" >&2
    exit 1
fi

# Only the files with CUDA tests are collected, so that a module needing a package the machine
# lacks (moto for the S3 tests, say) cannot stop the run at collection.
mapfile -t cuda_files < <(grep -lE '^\s*@?pytest\.mark\.cuda\b' tests/test_*.py)
echo "== CUDA tests: pytest -m cuda ${cuda_files[*]}"
timeout "$test_timeout" "$python" -m pytest -q -m cuda "${cuda_files[@]}" 2>&1 \
    | tee "$out/pytest-cuda.log"
tests_status=${PIPESTATUS[0]}

echo "== benchmark (budget ${bench_budget} s)"
bench_args=(--device "$device" --out "$out" --budget-seconds "$bench_budget")
[[ "$dry_run" == 1 ]] && bench_args+=(--dry-run)
timeout "$bench_timeout" "$python" benchmarks/gpu_bench.py "${bench_args[@]}" 2>&1 \
    | tee "$out/bench.log"
bench_status=${PIPESTATUS[0]}

# Opt-in with HTTP_BENCH=1: the HTTP benchmark (python -m benchmarks.run) of darkroom-gpu as a
# server on CUDA and on the CPU and of both manipulators in-process. It writes http.json,
# http.md and, where matplotlib is installed, http-*.png. thumbor is left out because it
# installs from PyPI, which this machine cannot reach.
# NOTE: about 3 minutes more is an estimate from the CPU dry run; it has not run on a GPU yet.
http_status=0
http_timeout="${HTTP_TIMEOUT:-300}"
left=$((total_budget - SECONDS))
((left < http_timeout)) && http_timeout=$left
if [[ "${HTTP_BENCH:-0}" == 1 ]] && ((http_timeout < 60)); then
    echo "== HTTP benchmark skipped: ${left} s left of TOTAL_BUDGET=${total_budget}"
    http_status=skipped
elif [[ "${HTTP_BENCH:-0}" == 1 ]]; then
    http_args=(--targets darkroom,inprocess --out "$out" --name http)
    if [[ "$dry_run" == 1 ]]; then
        http_args+=(--workloads W1 --concurrency 1,2 --duration 0.5 --max-requests 4)
    else
        # Waiting for other processes to go quiet would spend the time budget.
        http_args+=(--gpu --device "$device" --quick --quiet-wait 0)
    fi
    "$python" -c "import matplotlib" 2>/dev/null || http_args+=(--no-charts)
    echo "== HTTP benchmark (timeout ${http_timeout} s): python -m benchmarks.run ${http_args[*]}"
    # SIGINT, unlike timeout's default SIGTERM, lets the runner stop its server; it has written
    # the report after each finished target.
    timeout -s INT -k 15 "$http_timeout" "$python" -m benchmarks.run "${http_args[@]}" 2>&1 \
        | tee "$out/http.log"
    http_status=${PIPESTATUS[0]}
fi

echo "== done: tests exit $tests_status, benchmark exit $bench_status, HTTP benchmark exit" \
    "$http_status; results in $out"
# pytest exits 5 when every test was deselected or skipped, as on a machine without CUDA.
if [[ "$dry_run" == 1 && "$tests_status" == 5 ]]; then
    tests_status=0
fi
[[ "$tests_status" == 0 && "$bench_status" == 0 && "$http_status" =~ ^(0|skipped)$ ]]
