#!/usr/bin/env bash
# benchmarks/gpu_smoke.sh [gpu_smoke.py options]
# One short bf16 training run per method on a CUDA GPU (GPT-2-small-shaped random models),
# printing step time and peak memory per method; stops after 5 minutes. Exits 2 with a message
# when no CUDA device is visible. CPU code-path check: benchmarks/gpu_smoke.py --cpu --tiny
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_smoke: no CUDA device is visible to torch; run this on a GPU machine" \
        "(CPU code-path check: $PYTHON benchmarks/gpu_smoke.py --cpu --tiny)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 300 "$PYTHON" benchmarks/gpu_smoke.py "$@"
