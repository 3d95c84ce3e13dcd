#!/usr/bin/env bash
# The stacked engine on a GPU in a few minutes: per-member round time of stacks of 1, 8, 32, 128 LeNet-300-100 and
# 1, 8, 32 Conv-2 members against as many separate runs, and the member-independence check (scripts/gpu_check.py).
#   scripts/gpu_check.sh            on the GPU
#   scripts/gpu_check.sh --cpu      the CI-sized form on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's lth, installed or not
exec python scripts/gpu_check.py "$@"
