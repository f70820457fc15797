"""Benchmark: 5-fold cross-validation on a synthetic cohort, and optionally the modality ablation.

    python benchmarks/synthetic_cv.py                                     # 60 cases, 3 channels, 48³
    python benchmarks/synthetic_cv.py --ablation --epochs 20              # + the 7-combination table
    python benchmarks/synthetic_cv.py --device cuda --input-size 64 --conv1-stride 1 --epochs 100

Writes the synthetic cohort (``ricenet synth``'s generator; the class rule is
in RICENetLib.synthetic), preprocesses it through the cache, trains with the
engine (``train_ensemble`` / ``run_ablation``, the same code as ``ricenet
train`` / ``ricenet ablate``) and prints the validation macro F1 per fold,
mean ± sd, the wall time, and with ``--ablation`` the paper-shaped table.
Everything goes under ``--out`` (default benchmarks/results/synthetic_cv), so
a second run reuses the cohort, the preprocessing cache, the folds and any
finished folds (it resumes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from RICENetLib.cohort import load_cohort
from RICENetLib.metrics import format_mean_sd
from RICENetLib.model import default_architecture
from RICENetLib.preprocessing import CROP_CENTRES
from RICENetLib.synthetic import write_cohort
from RICENetTrainingLib import LR_SCHEDULES
from RICENetTrainingLib.ablation import COMBINATIONS, ablation_markdown, run_ablation
from RICENetTrainingLib.dataset import load_cases, pipeline_loader
from RICENetTrainingLib.folds import folds_for_cohort
from RICENetTrainingLib.training import TrainingParameters, train_ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/synthetic_cv")
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--cohort-seed", type=int, default=0)
    parser.add_argument("--synth-size", type=int, default=64, help="voxels across the synthetic head (default 64)")
    parser.add_argument("--spacing", type=float, default=3.75, help="preprocessing voxel size, mm (default 3.75)")
    parser.add_argument("--input-size", type=int, default=48, help="model input, voxels (default 48)")
    parser.add_argument("--skull-strip", default="none", help="default none: deepbet is not made for 3.75 mm voxels")
    parser.add_argument("--crop-centre", default="brain", choices=CROP_CENTRES,
                        help="input box on the brain (default) or on the high-dose region (finer voxels)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fold", type=int, action="append", help="train only this fold (repeat); default all")
    parser.add_argument("--conv1-stride", type=int, default=2, choices=(1, 2))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--ablation", action="store_true", help="also train the 7 modality combinations")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    cohort_csv = out / "cohort" / "cohort.csv"
    start = time.perf_counter()
    if not cohort_csv.exists():
        write_cohort(out / "cohort", cases=args.cases, seed=args.cohort_seed, spacing_mm=None, size=args.synth_size)
    cases = load_cohort(cohort_csv)
    load, preprocessing = pipeline_loader({"spacing_mm": args.spacing, "input_size": args.input_size,
                                           "skull_strip": args.skull_strip, "crop_centre": args.crop_centre},
                                          out / "cache")
    data = load_cases(cases, load)
    prepared = time.perf_counter()
    params = TrainingParameters(n_folds=args.folds, epochs=args.epochs, batch_size=args.batch_size,
                                learning_rate=args.lr, lr_schedule=args.lr_schedule,
                                weight_decay=args.weight_decay, folds=tuple(args.fold) if args.fold else None, seed=args.seed, device=args.device,
                                architecture=default_architecture(3, conv1_t_stride=args.conv1_stride))
    folds = folds_for_cohort(cases, out / "folds.json", args.folds, args.seed)
    labels = [c.label for c in cases]
    print(f"{len(cases)} synthetic cases ({labels.count('recurrence')} recurrence, {labels.count('rice')} RICE), "
          f"input 3×{args.input_size}³ at {args.spacing} mm centred on the {args.crop_centre}, skull strip "
          f"{args.skull_strip}; prepared in "
          f"{prepared - start:.0f} s", flush=True)
    print(f"training: resnet18 (conv1 stride {args.conv1_stride}), {args.folds} folds, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr:g} ({args.lr_schedule}), weight decay {args.weight_decay:g}, seed {args.seed}, device {args.device}, "
          f"{torch.get_num_threads()} CPU threads", flush=True)

    progress_state = {"last": 0.0}

    def on_epoch(fold: int, epoch: int, row: dict) -> None:
        if time.perf_counter() - progress_state["last"] > 60 or epoch == args.epochs:
            progress_state["last"] = time.perf_counter()
            print(f"  fold {fold} epoch {epoch}: train loss {row['train_loss']:.3f}, val loss {row['val_loss']:.3f}, "
                  f"val macro F1 {row['val_macro_f1']:.3f}", flush=True)

    # The three-modality run is also the ablation's last row: --ablation then only re-reads it.
    result = train_ensemble(cases, out / "ablation" / "postop+event+dose", params, data=data, folds=folds, preprocessing=preprocessing,
                            resume=True, on_epoch=on_epoch)
    trained = time.perf_counter()
    figures = {"cases": len(cases), "input_size": args.input_size, "epochs": args.epochs,
               "fold_macro_f1": [f.metrics["macro_f1"] for f in result.folds],
               "kept_epochs": [f.epoch for f in result.folds], "macro_f1": result.summary["macro_f1"],
               "auc": result.summary["auc"], "seconds_training": round(trained - prepared)}
    for fold in result.folds:
        print(f"fold {fold.fold}: validation macro F1 {fold.metrics['macro_f1']:.3f}, AUC {fold.metrics['auc']:.3f} "
              f"(epoch {fold.epoch})")
    print(f"three modalities: validation macro F1 {format_mean_sd(result.summary['macro_f1'], 3)} "
          f"(AUC {format_mean_sd(result.summary['auc'], 3)}); training {trained - prepared:.0f} s; "
          f"bundle {result.bundle}", flush=True)

    if args.ablation:
        rows = run_ablation(cases, out / "ablation", params, combinations=COMBINATIONS, data=data,
                            preprocessing=preprocessing, folds_file=out / "folds.json", resume=True,
                            on_epoch=lambda combo, fold, epoch, row: on_epoch(fold, epoch, row))
        print(ablation_markdown(rows, params), end="")
        figures["ablation"] = {"+".join(r.modalities): r.f1 for r in rows}
        figures["seconds_ablation"] = round(time.perf_counter() - trained)
    (out / "figures.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
