"""Benchmark: training throughput with CPU-side vs device-side augmentation (samples/s).

    python benchmarks/training.py                                   # CPU, 3×64³, quick
    python benchmarks/training.py --device cuda --size 224 --bf16 --channels-last --workers 8

DESIGN.md measured MONAI's CPU augmentation of one 3×224³ sample at seconds
(elastic 3.7 s, affine 1.2 s, noise 0.9 s): on a GPU that starves training.
This prints, on random data of the given size and with every augmentation
switched on (each sample gets all of them, the worst case):

* augmentation alone: samples/s on the CPU (one process) and on the device;
* training steps (resnet18, Adam, cross-entropy) with no augmentation, with
  CPU-side augmentation in ``--workers`` loader processes (the engine's
  ``augment_on="cpu"``), and with device-side augmentation (the default);

and the ratios. The code paths are the engine's own (``CaseSamples`` in a
``DataLoader`` for the CPU side, ``Augmenter.batch`` on the device tensors).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from RICENetLib.cohort import Case
from RICENetLib.model import build_network, default_architecture
from RICENetTrainingLib.augmentation import AugmentationParameters, Augmenter
from RICENetTrainingLib.dataset import CaseSamples, CaseTensors
from RICENetTrainingLib.training import resolve_device

EVERY = AugmentationParameters(spatial_probability=1.0, elastic_probability=1.0, noise_probability=1.0,
                               brightness_probability=1.0, gamma_probability=1.0)
MODALITIES = ("postop", "event", "dose")


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def augmentation_rate(augment: Augmenter, image: torch.Tensor, samples: int) -> float:
    augment(image, seed=0)  # warm-up (kernels, caches)
    synchronise(image.device)
    start = time.perf_counter()
    for seed in range(samples):
        augment(image, seed=seed + 1)
    synchronise(image.device)
    return samples / (time.perf_counter() - start)


def training_rate(mode: str, data: CaseTensors, args: argparse.Namespace, device: torch.device) -> float:
    """Samples/s of full training steps; ``mode`` is ``none``, ``cpu`` or ``device`` augmentation."""
    architecture = default_architecture(3, conv1_t_stride=args.conv1_stride)
    memory_format = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    model = build_network(architecture).to(device, memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    augmenter = Augmenter(MODALITIES, EVERY)
    samples = CaseSamples(data, [0, 1, 2], augmenter if mode == "cpu" else None)
    steps = args.steps + 1  # the first step is a warm-up
    keys = [(i % len(data.images), i) for i in range(steps * args.batch_size)]
    batches = [keys[i:i + args.batch_size] for i in range(0, len(keys), args.batch_size)]
    loader = torch.utils.data.DataLoader(samples, batch_sampler=batches, num_workers=args.workers if mode == "cpu" else 0,
                                         pin_memory=device.type == "cuda")
    start = None
    for number, (images, labels, seeds) in enumerate(loader):
        if number == 1:
            synchronise(device)
            start = time.perf_counter()
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if mode == "device":
            images = augmenter.batch(images, seeds.tolist())
        images = images.contiguous(memory_format=memory_format)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronise(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=64, help="input size in voxels (cube; default 64)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per mode (default 4)")
    parser.add_argument("--augment-samples", type=int, default=4, help="timed samples for augmentation alone")
    parser.add_argument("--workers", type=int, default=2, help="loader processes for CPU-side augmentation")
    parser.add_argument("--conv1-stride", type=int, default=1, choices=(1, 2))
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rng = np.random.default_rng(0)
    shape = (3, args.size, args.size, args.size)
    cases = [Case(f"B{i}", ("recurrence", "rice")[i % 2], {}) for i in range(4)]
    data = CaseTensors(cases, [torch.from_numpy(rng.normal(size=shape).astype(np.float32)) for _ in cases])
    print(f"device: {device} ({name}); input 3×{args.size}³, batch {args.batch_size}, conv1 stride "
          f"{args.conv1_stride}, bf16 {'on' if args.bf16 else 'off'}, channels-last {'on' if args.channels_last else 'off'}; "
          f"every augmentation on every sample")

    augmenter = Augmenter(MODALITIES, EVERY)
    figures = {"device": str(device), "device_name": name, "size": args.size, "batch_size": args.batch_size,
               "bf16": args.bf16, "channels_last": args.channels_last, "workers": args.workers,
               "conv1_stride": args.conv1_stride}
    figures["augment_cpu"] = augmentation_rate(augmenter, data.images[0], args.augment_samples)
    figures["augment_device"] = augmentation_rate(augmenter, data.images[0].to(device), args.augment_samples)
    print(f"augmentation alone: CPU {figures['augment_cpu']:.2f} samples/s (1 process), {device} "
          f"{figures['augment_device']:.2f} samples/s (x{figures['augment_device'] / figures['augment_cpu']:.1f})")
    for mode in ("none", "cpu", "device"):
        figures[f"train_{mode}"] = training_rate(mode, data, args, device)
    print(f"training: no augmentation {figures['train_none']:.2f} samples/s | CPU-side augmentation "
          f"({args.workers} workers) {figures['train_cpu']:.2f} | device-side augmentation "
          f"{figures['train_device']:.2f} samples/s")
    print(f"device-side / CPU-side: x{figures['train_device'] / figures['train_cpu']:.2f}; "
          f"device-side keeps {100 * figures['train_device'] / figures['train_none']:.0f} % of the "
          f"no-augmentation rate (CPU-side {100 * figures['train_cpu'] / figures['train_none']:.0f} %)")
    if device.type == "cpu":
        print("note: the device is the CPU here, so both augmentation paths share the same cores; the comparison "
              "means something on a GPU (benchmarks/gpu.sh).")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
