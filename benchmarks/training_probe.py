"""Benchmark: can the network learn a relational rule from a few dozen patients? (issue 4)

    python benchmarks/training_probe.py                         # 60 cases, 32³, 30 epochs, no mirroring
    python benchmarks/training_probe.py --flip 0.5              # the same with mirroring (--flip of ricenet train)

The synthetic cohort's main rule is relational: a recurrence touches the
resection-cavity wall, a RICE focus lies away from it. This probe strips the
rule of everything else — in-memory 32³ volumes, a dark ball ("cavity") in
the post-op and event channels, a bright ball ("lesion") of the same size
range in both classes, touching the cavity (recurrence) or 5–8 voxels from it
(RICE), a "dose" centred on the cavity — and trains the real engine
(``train_ensemble``, MONAI resnet18, the paper's augmentation) on one fold.
It prints each epoch's training loss and validation AUC and macro F1, and the
means over the last epochs: whether the network learns the rule or memorises
its training patients, in minutes on a CPU rather than hours.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from RICENetLib.cohort import Case
from RICENetTrainingLib.augmentation import AugmentationParameters
from RICENetTrainingLib.training import TrainingParameters, train_ensemble


def relational_cohort(cases: int, size: int, seed: int) -> tuple[list[Case], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.mgrid[:size, :size, :size]).astype(np.float32)

    def distance(centre: np.ndarray) -> np.ndarray:
        return np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0))

    cohort, arrays = [], {}
    for number in range(cases):
        label = "recurrence" if number % 5 < 3 else "rice"  # the paper's 60 : 40
        image = rng.normal(0.0, 0.3, size=(3, size, size, size)).astype(np.float32)
        cavity_centre = rng.uniform(0.35 * size, 0.65 * size, size=3)
        cavity_radius = rng.uniform(4.0, 6.0)
        lesion_radius = rng.uniform(2.5, 4.5)
        gap = rng.uniform(-1.0, 1.0) if label == "recurrence" else rng.uniform(5.0, 8.0)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        lesion_centre = cavity_centre + direction * (cavity_radius + gap + lesion_radius)
        to_cavity, to_lesion = distance(cavity_centre), distance(lesion_centre)
        image[:2][:, to_cavity < cavity_radius] -= 1.0
        image[1][(to_lesion < lesion_radius) & (to_cavity >= cavity_radius)] += 1.5
        image[2] += np.exp(-to_cavity / 12.0)
        patient = f"R{number:03d}"
        cohort.append(Case(patient, label, {}))
        arrays[patient] = image
    return cohort, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5, help="folds of the split; one of them (--fold) is trained")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--flip", type=float, default=0.0, help="mirroring probability per axis (default 0)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--last", type=int, default=10, help="report the means over the last N epochs")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases, arrays = relational_cohort(args.cases, args.size, args.seed)
    params = TrainingParameters(n_folds=args.folds, folds=(args.fold,), epochs=args.epochs, learning_rate=args.lr,
                                seed=args.seed, device="cpu", selection="last",
                                augmentation=AugmentationParameters(flip_probability=args.flip))
    print(f"{args.cases} cases at {args.size}³, fold {args.fold} of {args.folds}, {args.epochs} epochs, "
          f"lr {args.lr:g}, mirroring {args.flip:g}, {torch.get_num_threads()} threads", flush=True)

    def on_epoch(fold: int, epoch: int, row: dict) -> None:
        print(f"  epoch {epoch:3d}: train loss {row['train_loss']:.3f}  validation AUC {row['val_auc']:.3f}  "
              f"macro F1 {row['val_macro_f1']:.3f}", flush=True)

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = train_ensemble(cases, f"{work}/bundle", params, load=lambda case: arrays[case.patient_id],
                                preprocessing={"input_size": [args.size] * 3}, on_epoch=on_epoch)
    history = result.folds[0].history[-args.last:]
    mean = {key: float(np.mean([row[key] for row in history])) for key in ("train_loss", "val_auc", "val_macro_f1")}
    print(f"last {len(history)} epochs: train loss {mean['train_loss']:.3f}, validation AUC {mean['val_auc']:.3f}, "
          f"macro F1 {mean['val_macro_f1']:.3f}; {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
