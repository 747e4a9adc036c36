#!/usr/bin/env bash
# The GPU check (thermsr_tools/gpu_check.py): one prepared command for an accelerator machine.
#
#   tools/gpu_check.sh --prepare   here, once: download the wheels the accelerator machine lacks and copy the
#                                  pinned weight files it reads into .gpu/ (git-ignored; about 15 MB)
#   tools/gpu_check.sh             there: install the carried wheels into .gpu/site (no network, --no-deps),
#                                  measure, write $OUT/gpu_check.json (figures/bench/ without $OUT), print a table
#   tools/gpu_check.sh --dry-run   anywhere: every step at tiny sizes on the CPU with this checkout's .venv
#
# On the device tool: run(command="tools/gpu_check.sh", carry=[".gpu"], timeout_s=600).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
case "${1:-}" in
  --prepare)
    rm -rf .gpu.tmp && mkdir -p .gpu.tmp/wheels .gpu.tmp/weights
    wheels=$("$PY" -c 'from thermsr_tools.gpu_check import WHEELS; print(" ".join(WHEELS))')
    # pure-Python wheels: the same files serve the accelerator machine's Python 3.12
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .gpu.tmp/wheels $wheels
    "$PY" -c 'import sys; from thermsr_tools import gpu_check; from thermsr_utils import weights
for f in weights.export_carried(gpu_check.CARRIED_WEIGHTS, sys.argv[1]): print("carried", f["path"], f["bytes"], "bytes")' .gpu.tmp/weights
    git rev-parse --short HEAD > .gpu.tmp/code_version
    git diff --quiet HEAD || echo "warning: uncommitted changes; the code version names HEAD only" >&2
    rm -rf .gpu && mv .gpu.tmp .gpu
    du -sh .gpu
    ;;
  --dry-run)
    shift
    exec "$PY" -m thermsr_tools.gpu_check --dry-run --out "${OUT:-artifacts/bench}/gpu_check-dry-run.json" "$@"
    ;;
  "")
    [ -d .gpu/wheels ] || { echo "no .gpu/wheels here: run tools/gpu_check.sh --prepare first, and carry .gpu" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PWD/.gpu/site" .gpu/wheels/*.whl
    export PYTHONPATH="$PWD/.gpu/site:$PWD" THERMSR_WEIGHTS_DIR="$PWD/.gpu/weights" PYTHONUNBUFFERED=1
    exec python3 -m thermsr_tools.gpu_check --out "${OUT:-figures/bench}/gpu_check.json"
    ;;
  *)
    echo "usage: tools/gpu_check.sh [--prepare | --dry-run]" >&2; exit 2
    ;;
esac
