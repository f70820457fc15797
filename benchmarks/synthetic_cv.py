"""Benchmark: 5-fold cross-validation on a synthetic cohort, and optionally the modality ablation.

    python benchmarks/synthetic_cv.py                                     # 60 cases, 3 channels, 48³
    python benchmarks/synthetic_cv.py --ablation --epochs 20              # + the 7-combination table
    python benchmarks/synthetic_cv.py --fold 0 --combinations "event;event+dose" --bf16   # some rows, one fold
    python benchmarks/synthetic_cv.py --device cuda --input-size 64 --conv1-stride 1 --epochs 100

Writes the synthetic cohort (``ricenet synth``'s generator; the class rule is
in RICENetLib.synthetic), preprocesses it through the cache, trains with the
engine (``train_ensemble`` / ``run_ablation``, the same code as ``ricenet
train`` / ``ricenet ablate``) and prints the validation macro F1 per fold at
its kept (best) epoch, mean ± sd, the mean of each fold's last epochs
(steadier: the best of many epochs scored on a dozen patients is partly luck),
the wall time, and with ``--ablation`` the paper-shaped table. With
``--test-cases N`` it then makes N new patients (``--test-seed``) and scores
the ensemble's majority vote on them: whether the models generalise.
``--workers N`` makes and preprocesses the patients in N processes.
Everything goes under ``--out`` (default benchmarks/results/synthetic_cv), so
a second run reuses the cohort, the preprocessing cache, the folds and any
finished folds (it resumes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from RICENetLib import MODALITIES
from RICENetLib.bundle import mean_sd
from RICENetLib.cohort import load_cohort
from RICENetLib.metrics import format_mean_sd, macro_f1
from RICENetLib.model import default_architecture
from RICENetLib.preprocessing import CROP_CENTRES
from RICENetLib.synthetic import write_cohort
from RICENetTrainingLib import LR_SCHEDULES
from RICENetTrainingLib.ablation import COMBINATIONS, ablation_markdown, run_ablation
from RICENetTrainingLib.augmentation import AugmentationParameters
from RICENetTrainingLib.commands.ablate import combinations_argument
from RICENetTrainingLib.dataset import load_cases, pipeline_loader
from RICENetTrainingLib.folds import folds_for_cohort
from RICENetTrainingLib.training import TrainingParameters, train_ensemble


_worker_load = None


def _start_worker(preprocessing: dict, cache_dir: Path) -> None:
    global _worker_load
    torch.set_num_threads(1)
    _worker_load, _ = pipeline_loader(preprocessing, cache_dir)


def _prepare(case) -> None:
    _worker_load(case)


def warm_cache(cases, preprocessing: dict, cache_dir: Path, workers: int) -> None:
    """Preprocess the cases not yet in the cache in ``workers`` processes (training then reads the cache)."""
    if workers <= 1:
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(preprocessing, cache_dir)) as pool:
        list(pool.map(_prepare, cases))


def score_new_patients(bundle_path: Path, folder: Path, args: argparse.Namespace, load, warm) -> dict:
    """The ensemble's majority vote on ``--test-cases`` new synthetic patients, prepared like the training cases."""
    from RICENetLib.bundle import load_bundle
    from RICENetLib.inference import combine_folds, fold_probabilities, select_device
    from RICENetLib.metrics import classification_metrics

    if args.test_seed == args.cohort_seed:
        raise SystemExit("--test-seed must differ from --cohort-seed: the new patients must be new")
    csv_path = folder / "cohort.csv"
    if not csv_path.exists():
        write_cohort(folder, cases=args.test_cases, seed=args.test_seed, spacing_mm=None, size=args.synth_size,
                     workers=args.workers)
    test_cases = load_cohort(csv_path)
    warm(test_cases)
    bundle = load_bundle(bundle_path)
    device = select_device(args.device)
    models = bundle.models(device)
    truth, mean_probabilities, voted = [], [], []
    for case in test_cases:
        combined = combine_folds(fold_probabilities(models, torch.from_numpy(load(case)), device),
                                 bundle.class_names, [f.index for f in bundle.folds])
        truth.append(bundle.class_names.index(case.label))
        voted.append(bundle.class_names.index(combined["label"]))
        mean_probabilities.append([combined["probabilities"][c] for c in bundle.class_names])
    metrics = classification_metrics(truth, mean_probabilities)
    vote_f1 = macro_f1(truth, voted, len(bundle.class_names))
    correct = sum(t == v for t, v in zip(truth, voted))
    print(f"{len(test_cases)} new patients (cohort seed {args.test_seed}): majority vote {correct} correct, "
          f"macro F1 {vote_f1:.3f}; mean probability: AUC {metrics['auc']:.3f}", flush=True)
    return {"cases": len(test_cases), "seed": args.test_seed, "correct": correct, "vote_macro_f1": vote_f1,
            "auc": metrics["auc"]}


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
    parser.add_argument("--flip", type=float, default=0.0, metavar="P",
                        help="also mirror each axis with probability P in training (not in the paper; default 0)")
    parser.add_argument("--fold", type=int, action="append", help="train only this fold (repeat); default all")
    parser.add_argument("--conv1-stride", type=int, default=2, choices=(1, 2))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--ablation", action="store_true", help="also train the 7 modality combinations")
    parser.add_argument("--combinations", metavar="LIST", type=combinations_argument,
                        help="train only these combinations, e.g. 'postop;event+dose' (implies --ablation; the "
                             "three-modality run and its new patients are skipped unless listed)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (also on CPUs with AMX or AVX-512 BF16)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last-3d memory format")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes that make and preprocess the patients (default 1; training is not affected)")
    parser.add_argument("--last-epochs", type=int, default=5, help="also report each fold's mean over its last N epochs")
    parser.add_argument("--test-cases", type=int, default=0, help="score the ensemble on N new synthetic patients")
    parser.add_argument("--test-seed", type=int, default=7, help="cohort seed of the new patients (not --cohort-seed)")
    args = parser.parse_args()
    combinations = args.combinations or list(COMBINATIONS)
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    cohort_csv = out / "cohort" / "cohort.csv"
    start = time.perf_counter()
    if not cohort_csv.exists():
        write_cohort(out / "cohort", cases=args.cases, seed=args.cohort_seed, spacing_mm=None, size=args.synth_size,
                     workers=args.workers)
    cases = load_cohort(cohort_csv)
    wanted = {"spacing_mm": args.spacing, "input_size": args.input_size, "skull_strip": args.skull_strip,
              "crop_centre": args.crop_centre}
    load, preprocessing = pipeline_loader(wanted, out / "cache")

    def warm(some_cases) -> None:
        warm_cache(some_cases, wanted, out / "cache", args.workers)

    warm(cases)
    data = load_cases(cases, load)
    prepared = time.perf_counter()
    params = TrainingParameters(n_folds=args.folds, epochs=args.epochs, batch_size=args.batch_size,
                                learning_rate=args.lr, lr_schedule=args.lr_schedule,
                                weight_decay=args.weight_decay, folds=tuple(args.fold) if args.fold else None, seed=args.seed, device=args.device,
                                architecture=default_architecture(3, conv1_t_stride=args.conv1_stride),
                                augmentation=AugmentationParameters(flip_probability=args.flip),
                                bf16=args.bf16, channels_last=args.channels_last)
    folds = folds_for_cohort(cases, out / "folds.json", args.folds, args.seed)
    labels = [c.label for c in cases]
    print(f"{len(cases)} synthetic cases ({labels.count('recurrence')} recurrence, {labels.count('rice')} RICE), "
          f"input 3×{args.input_size}³ at {args.spacing} mm centred on the {args.crop_centre}, skull strip "
          f"{args.skull_strip}; prepared in "
          f"{prepared - start:.0f} s", flush=True)
    print(f"training: resnet18 (conv1 stride {args.conv1_stride}), {args.folds} folds, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr:g} ({args.lr_schedule}), weight decay {args.weight_decay:g}, "
          f"mirroring {args.flip:g}, bf16 {'on' if args.bf16 else 'off'}, channels-last "
          f"{'on' if args.channels_last else 'off'}, seed {args.seed}, device {args.device}, "
          f"{torch.get_num_threads()} CPU threads", flush=True)

    progress_state = {"last": 0.0}

    def on_epoch(fold: int, epoch: int, row: dict, combination: str = "postop+event+dose") -> None:
        if time.perf_counter() - progress_state["last"] > 60 or epoch == args.epochs:
            progress_state["last"] = time.perf_counter()
            print(f"  {combination} fold {fold} epoch {epoch}: train loss {row['train_loss']:.3f}, val loss {row['val_loss']:.3f}, "
                  f"val macro F1 {row['val_macro_f1']:.3f}", flush=True)

    n_late = min(args.last_epochs, args.epochs)

    def late_f1(result) -> list[float]:
        return [float(np.mean([row["val_macro_f1"] for row in f.history[-n_late:]])) for f in result.folds]

    figures = {"cases": len(cases), "input_size": args.input_size, "epochs": args.epochs, "bf16": args.bf16}
    trained = prepared
    if MODALITIES in combinations:
        # The three-modality run is also the ablation's last row: --ablation then only re-reads it.
        result = train_ensemble(cases, out / "ablation" / "postop+event+dose", params, data=data, folds=folds,
                                preprocessing=preprocessing, resume=True, on_epoch=on_epoch)
        trained = time.perf_counter()
        late = late_f1(result)
        figures.update({
            "fold_macro_f1": [f.metrics["macro_f1"] for f in result.folds],
            "kept_epochs": [f.epoch for f in result.folds], "macro_f1": result.summary["macro_f1"],
            "auc": result.summary["auc"], f"macro_f1_last_{n_late}_epochs": mean_sd(late),
            "seconds_training": round(trained - prepared),
            # Summed over every epoch of every fold, also those trained by earlier or parallel runs.
            "seconds_epochs_summed": round(sum(row["seconds"] for f in result.folds for row in f.history))})
        for fold, fold_late in zip(result.folds, late):
            print(f"fold {fold.fold}: validation macro F1 {fold.metrics['macro_f1']:.3f}, AUC {fold.metrics['auc']:.3f} "
                  f"(epoch {fold.epoch}); mean of the last {n_late} epochs {fold_late:.3f}")
        print(f"three modalities: validation macro F1 {format_mean_sd(result.summary['macro_f1'], 3)} "
              f"(AUC {format_mean_sd(result.summary['auc'], 3)}) at the kept epochs, "
              f"{format_mean_sd(mean_sd(late), 3)} over each fold's last {n_late}; "
              f"training {trained - prepared:.0f} s in this run ({figures['seconds_epochs_summed']} s summed over all "
              f"folds' epochs); bundle {result.bundle}", flush=True)
        if args.test_cases and result.bundle is not None:
            figures["test"] = score_new_patients(result.bundle, out / f"test_seed{args.test_seed}", args, load, warm)

    if args.ablation or args.combinations:
        rows = run_ablation(cases, out / "ablation", params, combinations=combinations, data=data,
                            preprocessing=preprocessing, folds_file=out / "folds.json", resume=True,
                            on_epoch=lambda combo, fold, epoch, row: on_epoch(fold, epoch, row, "+".join(combo)))
        print(ablation_markdown(rows, params), end="")
        # The steadier figure beside the table's best-epoch one (the table ranks on noisy maxima).
        figures["ablation"] = {}
        for row in rows:
            row_late = mean_sd(late_f1(row.result))
            print(f"{row.name}: mean of each fold's last {n_late} epochs {format_mean_sd(row_late, 3)} (folds "
                  f"{', '.join(str(f.fold) for f in row.result.folds)})")
            figures["ablation"]["+".join(row.modalities)] = {"best_epoch": row.f1, f"last_{n_late}": row_late}
        figures["seconds_ablation"] = round(time.perf_counter() - trained)
    (out / "figures.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
