"""``ricenet train``: the paper's 5-fold cross-validation on a cohort, written as a model bundle.

Also the shared options of ``ricenet ablate`` (:func:`add_training_arguments`,
:func:`training_parameters`, :func:`case_loader`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

NAME = "train"
HELP = "train the cross-validated RICE-NET ensemble on a labelled cohort and write a model bundle"
DESCRIPTION = (
    "Train MONAI's 3D ResNet-18 with 5-fold cross-validation (patient-level, stratified folds saved once per "
    "cohort in folds.json), Adam, cross-entropy, a class-balancing weighted sampler and augmentation; keep each "
    "fold's weights from the epoch with the best validation macro F1, and write the ensemble to OUT as a model "
    "bundle (bundle.json + one safetensors file per fold, training log, curves). Cases are preprocessed through "
    "the preprocessing cache first. Checkpoints after every epoch go to OUT.work/; --resume continues a stopped "
    "run. --fold k trains one fold (run five jobs in parallel; the last one writes the bundle); under "
    "'torchrun --nproc_per_node N' each fold is trained data-parallel; on a CPU, --processes N trains the folds "
    "in N processes side by side."
)


def _modalities(text: str) -> tuple[str, ...]:
    from RICENetLib import MODALITIES

    names = [n.strip().lower() for n in text.replace("+", ",").split(",") if n.strip()]
    unknown = [n for n in names if n not in MODALITIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"'{text}': use one or more of {', '.join(MODALITIES)}, comma-separated")
    return tuple(m for m in MODALITIES if m in names)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``ablate``: cohort, folds, optimisation, device, preprocessing."""
    from RICENetLib.commands.preprocess import add_preprocessing_arguments

    from .. import LR_SCHEDULES

    parser.add_argument("--cohort", required=True, metavar="CSV",
                        help="cohort table (patient_id,label,postop,event,dose) or folder of patient folders")
    folds = parser.add_argument_group("folds")
    folds.add_argument("--folds", type=int, default=5, metavar="N", help="number of cross-validation folds (default 5)")
    folds.add_argument("--fold", type=int, action="append", metavar="K",
                       help="train only fold K (0-based; repeat for several); default: all folds")
    folds.add_argument("--folds-file", metavar="JSON",
                       help="the cohort's fixed folds, made on first use (default: folds.json beside the cohort)")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=800, metavar="N", help="epochs per fold (default 800)")
    training.add_argument("--lr", type=float, default=1e-4, metavar="RATE", help="Adam learning rate (default 1e-4)")
    training.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                          help="constant rate (default), or cosine decay to 0 over the epochs")
    training.add_argument("--weight-decay", type=float, default=0.0, metavar="W", help="Adam weight decay (default 0)")
    training.add_argument("--batch-size", type=int, default=4, metavar="B",
                          help="samples per step and process (default 4)")
    training.add_argument("--seed", type=int, default=0, help="seed of the folds, initial weights, sampler, augmentation")
    training.add_argument("--select", choices=("best_f1", "last"), default="best_f1",
                          help="weights kept per fold: best validation macro F1 (default) or the last epoch")
    training.add_argument("--no-augment", action="store_true", help="train without augmentation")
    training.add_argument("--flip", type=float, default=0.0, metavar="P",
                          help="also mirror each axis with probability P (not in the paper; default 0: off)")
    training.add_argument("--conv1-stride", type=int, choices=(1, 2), default=1,
                          help="stride of the first convolution (MONAI default 1; 2 halves every axis: 8x cheaper)")
    training.add_argument("--widen-factor", type=float, default=1.0, metavar="W",
                          help="channels of every layer × W (MONAI's widen_factor; default 1, the paper's ResNet-18; "
                               "0.5 is about 3x cheaper, for quick runs)")
    training.add_argument("--resume", action="store_true", help="continue from the checkpoints of a stopped run")
    training.add_argument("--overwrite", action="store_true", help="start afresh, replacing earlier checkpoints and outputs")
    training.add_argument("--work-dir", metavar="DIR", help="checkpoints, logs and curves (default: OUT.work)")
    device = parser.add_argument_group("device")
    device.add_argument("--device", default="auto", help="auto (a CUDA GPU if any), cpu, cuda, cuda:N or mps")
    device.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast (GPUs with bf16). On a CPU without AVX-512 BF16 or AMX-BF16 it is "
                        "emulated and about 100x slower than float32 (a warning says so): docs/TRAINING.md")
    device.add_argument("--channels-last", action="store_true", help="channels-last-3d memory format")
    device.add_argument("--augment-on", choices=("device", "cpu"), default="device",
                        help="augment on the training device (default; GPU-side on a GPU) or in CPU loader workers")
    device.add_argument("--workers", type=int, default=0, metavar="N", help="data-loader processes (default 0)")
    prep = parser.add_argument_group("preprocessing (stored in the bundle; new cases are prepared the same way)")
    add_preprocessing_arguments(prep)
    prep.add_argument("--cache", metavar="DIR",
                      help="preprocessing cache (default $RICENET_CACHE or ~/.cache/ricenet/preprocessed)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--out", required=True, metavar="BUNDLE", help="model bundle folder to write")
    parser.add_argument("--modalities", type=_modalities, default=("postop", "event", "dose"),
                        help="input channels, comma-separated (default postop,event,dose)")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="CPU only: train the folds in N processes side by side, each on cores/N threads "
                             "(at least 1; default 1). For small inputs on a 2-core CPU, 3 trains 5 folds in about "
                             "0.7 of the time one process takes")


def training_parameters(args: argparse.Namespace, modalities: tuple[str, ...]) -> Any:
    from RICENetLib.model import default_architecture

    from ..augmentation import AugmentationParameters
    from ..training import TrainingParameters

    return TrainingParameters(
        modalities=modalities, n_folds=args.folds, folds=tuple(args.fold) if args.fold else None, epochs=args.epochs,
        learning_rate=args.lr, lr_schedule=args.lr_schedule, weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed,
        device=args.device, augment=not args.no_augment, augment_on=args.augment_on, num_workers=args.workers,
        bf16=args.bf16, channels_last=args.channels_last, selection=args.select,
        architecture=default_architecture(len(modalities), conv1_t_stride=args.conv1_stride,
                                          widen_factor=args.widen_factor),
        augmentation=AugmentationParameters(flip_probability=args.flip),
    )


def case_loader(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The preprocessing pipeline (through its cache) with the command line's parameters."""
    from RICENetLib.commands.preprocess import preprocessing_parameters

    from ..dataset import pipeline_loader

    return pipeline_loader(preprocessing_parameters(args).to_dict(), args.cache)


def folds_file(args: argparse.Namespace) -> Path:
    from ..folds import default_folds_path

    return Path(args.folds_file) if args.folds_file else default_folds_path(args.cohort)


def warn_if_slow_bf16(params: Any) -> None:
    """``--bf16`` on a CPU that emulates bfloat16: say so before hours of training, not after."""
    if not params.bf16:
        return
    import logging

    from RICENetLib.cpu_half_precision import slow_half_precision_warning

    from ..training import resolve_device

    message = slow_half_precision_warning("bfloat16", resolve_device(params.device))
    if message and is_main_process():
        logging.getLogger("ricenet").warning("--bf16: %s", message)


#: ``training.LOADING_SHARE``, the share of the progress bar that loading (preprocessing) the cohort takes: the time
#: left is estimated from the training after it. Written out, not imported, so that --help does not import torch
#: (Testing/test_training_cli.py checks that the two agree).
LOADING_SHARE = 0.05


def fold_name(index: int, n_folds: int) -> str:
    """``fold 1/5 (--fold 0)``: numbered from 1 as in the progress bar, with the 0-based index ``--fold`` takes."""
    return f"fold {index + 1}/{n_folds} (--fold {index})"


def is_main_process() -> bool:
    """Under torchrun only rank 0 draws progress and prints results."""
    return os.environ.get("RANK", "0") == "0"


def run(args: argparse.Namespace) -> int:
    from RICENetLib.cohort import load_cohort
    from RICENetLib.commands.progressbar import progress_bar
    from RICENetLib.metrics import format_mean_sd

    from ..parallel_folds import check_processes, train_in_processes

    params = training_parameters(args, args.modalities)
    params.validate()
    check_processes(args.processes, params)
    warn_if_slow_bf16(params)
    cases = load_cohort(args.cohort)
    load, preprocessing = case_loader(args)
    bar = (progress_bar(f"training {'+'.join(params.modalities)}", timed_from=LOADING_SHARE) if is_main_process()
           else contextlib.nullcontext())
    with bar as progress:
        result = train_in_processes(cases, args.out, params, args.processes, load=load, preprocessing=preprocessing,
                                    folds_file=folds_file(args), work_dir=args.work_dir, resume=args.resume,
                                    overwrite=args.overwrite, progress=progress)
    if not is_main_process():
        return 0
    for fold in result.folds:
        print(f"{fold_name(fold.fold, params.n_folds)}: validation macro F1 {fold.metrics['macro_f1']:.3f} "
              f"(epoch {fold.epoch}, loss {fold.metrics['loss']:.3f})")
    if result.folds:
        print(f"mean ± sd over {len(result.folds)} fold(s): macro F1 {format_mean_sd(result.summary['macro_f1'], 3)}")
    if result.bundle:
        from RICENetLib.bundle import read_header
        from RICENetLib.calibration import summary_line

        print(summary_line(read_header(result.bundle).get("calibration")))
        if (result.bundle / "reliability.png").exists():
            print(f"reliability diagram: {result.bundle / 'reliability.png'}")
        print(f"bundle: {result.bundle}")
    else:
        missing = result.missing_folds
        print(f"{', '.join(fold_name(k, params.n_folds) for k in missing)} still to train "
              f"({' '.join(f'--fold {k}' for k in missing)}); the bundle is written when the last fold ends "
              f"(training state in {result.work_dir})", file=sys.stderr)
    return 0
