#!/usr/bin/env bash
# GPU-relevant benchmarks, one after another, on CUDA (append yours below).
#   bash benchmarks/gpu.sh        # uses $PYTHON (default: python) with a CUDA build of torch
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

# Occlusion sensitivity (issue 7): FLOPs per box, 96³ vs MONAI, presets, the full 224³ five-fold map (measured)
"$PYTHON" benchmarks/occlusion.py --device cuda
