"""Benchmark: time of the 5-fold ensemble on one case (network part, no preprocessing).

    python benchmarks/inference.py                    # 224³, 5 folds, 3 channels, CPU
    python benchmarks/inference.py --size 96 --device cuda

Prints the time per fold forward pass, the ensemble's total, the FLOPs of
one forward pass counted by torch.utils.flop_counter, and what an occlusion
map costs at each preset in brute-force forward passes, with the time that
would take at the measured speed (the incremental engine's own figures and
the 96³ time against MONAI come from ``benchmarks/occlusion.py``).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from RICENetLib.inference import combine_folds, fold_probabilities, select_device
from RICENetLib.model import build_network, default_architecture
from RICENetLib.occlusion import OCCLUSION_PRESETS, count_boxes, forward_passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--conv1-stride", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = select_device(args.device)
    torch.manual_seed(0)
    architecture = default_architecture(args.channels, conv1_t_stride=args.conv1_stride)
    models = [build_network(architecture).to(device).eval() for _ in range(args.folds)]
    image = torch.randn(args.channels, args.size, args.size, args.size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        models[0](image.unsqueeze(0).to(device))
    flops = counter.get_total_flops()
    fold_probabilities(models[:1], image, device)  # warm-up (allocations, cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    probabilities = fold_probabilities(models, image, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    combine_folds(probabilities, ("recurrence", "rice"), list(range(args.folds)))
    print(f"device: {device}; threads: {torch.get_num_threads()}; input {args.channels}x{args.size}^3; "
          f"conv1_t_stride={args.conv1_stride}")
    print(f"FLOPs per forward pass: {flops / 1e12:.3f} TFLOP")
    print(f"ensemble of {args.folds} folds: {seconds:.2f} s ({seconds / args.folds:.2f} s per fold, "
          f"{flops * args.folds / seconds / 1e9:.1f} GFLOP/s)")
    shape = (args.size,) * 3
    for name, settings in OCCLUSION_PRESETS.items():
        passes = forward_passes(shape, settings, models=args.folds)
        print(f"occlusion preset {name} (box {settings.mask_size}, stride {settings.stride}): "
              f"{count_boxes(shape, settings)} boxes, {passes} forward passes over {args.folds} folds; "
              f"brute force at this speed: {passes * seconds / args.folds / 3600:.1f} h")


if __name__ == "__main__":
    main()
