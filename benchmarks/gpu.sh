#!/usr/bin/env bash
# GPU benchmarks: run on a machine with a CUDA GPU, from the repository root, in the project's venv:
#   bash benchmarks/gpu.sh 2>&1 | tee gpu-benchmarks.log
# Each line is one benchmark; add yours below (keep each one short: minutes, not hours).
set -uo pipefail
cd "$(dirname "$0")/.."

# Training throughput, 3×224³ (the paper's size): CPU-side vs GPU-side augmentation, bf16 + channels-last.
python benchmarks/training.py --device cuda --size 224 --batch-size 2 --steps 6 --augment-samples 6 --workers 8 --bf16 --channels-last
