#!/usr/bin/env bash
# The engine on a GPU (issue #10): a response and a feature job with bf16, channels_last and optionally
# torch.compile; samples/s and peak memory beside the CPU. Writes bench/results/gpu_check.json.
#   bash bench/gpu_check.sh [--compile] [--examples N] [--epochs N]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || make .venv/.installed
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
exec .venv/bin/python -m bench.gpu_check "$@"
