#!/usr/bin/env bash
# GPU-relevant benchmarks in one call, for a session that is lent a CUDA machine:
#   bash benchmarks/gpu.sh 2>&1 | tee gpu-benchmarks.log
# Needs a CUDA build of torch plus monai, SimpleITK and safetensors on $PYTHON (default python3);
# the project itself is used from the source tree (no install needed). On this workplace's GPU
# machine, which has torch but neither monai nor SimpleITK, carry their wheels (docs/DEVELOPING.md).
# Each step has its own time limit so that the whole script ends within about 9 minutes of
# a short lease, printing what it measured so far; RICENET_GPU_BUDGET_S scales the occlusion step.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD/RICENet:$PWD/RICENetTraining${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
"$PYTHON" -c "import monai, SimpleITK, safetensors; print('monai', monai.__version__, 'SimpleITK', SimpleITK.Version_VersionString())" || exit 1
budget="${RICENET_GPU_BUDGET_S:-100}"
status=0
run() {
  local limit=$1; shift
  echo; echo "### $* (limit ${limit} s)"
  local began=$SECONDS
  timeout --kill-after=10 "$limit" "$PYTHON" "$@"
  local rc=$?
  echo "### exit $rc after $((SECONDS - began)) s"
  [ $rc -eq 0 ] || status=1
}

# Issue 5: the five-fold ensemble on one 3×224³ case.
run 90 benchmarks/inference.py --device cuda --size 224
# Issue 7: 96³ against MONAI (strict float32, then TF32 with float16 beside it), and the full 224³
# five-fold 'standard' map (estimated first for each setting, profiled by stage and operator, then measured in the default TF32 and
# in float16: five folds if the estimate fits the budget, else one; target ≤ 60 s on one H100).
# The FLOP counts ([1], [3]) do not depend on the device and are measured on the CPU.
run $((2 * budget + 150)) benchmarks/occlusion.py --device cuda --timings-only --budget-s "$budget"
# Issue 4: training throughput at 3×224³, CPU-side vs GPU-side augmentation, bf16 + channels-last.
run 120 benchmarks/training.py --device cuda --size 224 --batch-size 2 --steps 6 --augment-samples 6 --workers 8 --bf16 --channels-last
exit $status
