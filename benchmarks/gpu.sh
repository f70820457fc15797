#!/usr/bin/env bash
# GPU-relevant benchmarks in one call, for a session that is lent a CUDA machine:
#   bash benchmarks/gpu.sh 2>&1 | tee gpu-benchmarks.log
# Needs a CUDA build of torch plus monai, SimpleITK, safetensors on $PYTHON (default python3);
# the project itself is used from the source tree (no install needed).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD/RICENet:$PWD/RICENetTraining${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
status=0
run() { echo; echo "### $*"; "$PYTHON" "$@" || status=1; }

# Issue 5: the five-fold ensemble on one 3×224³ case.
run benchmarks/inference.py --device cuda --size 224
# Issue 7: FLOPs per box, 96³ vs MONAI, presets, the full 224³ five-fold 'standard' map (measured on CUDA; target ≤ 60 s).
run benchmarks/occlusion.py --device cuda
# Issue 4: training throughput at 3×224³, CPU-side vs GPU-side augmentation, bf16 + channels-last.
run benchmarks/training.py --device cuda --size 224 --batch-size 2 --steps 6 --augment-samples 6 --workers 8 --bf16 --channels-last
exit $status
