"""``ricenet ablate``: the paper's modality ablation, seven ensembles on the same folds, one table."""

from __future__ import annotations

import argparse
import contextlib

from .train import (LOADING_SHARE, add_training_arguments, case_loader, folds_file, is_main_process,
                    training_parameters, warn_if_slow_bf16)

NAME = "ablate"
HELP = "train the 7 modality combinations on the same folds and write the ablation table"
DESCRIPTION = (
    "Train one cross-validated ensemble per modality combination (post-op MRI, event MRI, dose map and every "
    "union of them: 7 by default) with identical settings and identical folds, each into OUT/<combination>/ as a "
    "model bundle, and write OUT/ablation.csv and OUT/ablation.md: validation macro F1, mean ± sd over the "
    "folds, in the paper's table shape. Cases are preprocessed once for all combinations. --resume continues; "
    "finished combinations are only re-read."
)


def combinations_argument(text: str):
    """argparse type for ``--combinations``: a bad list is a usage error naming the part, not a traceback."""
    from RICENetLib.errors import InputError

    from ..ablation import parse_combinations

    try:
        return parse_combinations(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the bundles and the table")
    parser.add_argument("--combinations", type=combinations_argument, default="all",
                        help="'all' (default) or a ';'-separated list such as 'dose;event+dose;postop+event+dose'")


def run(args: argparse.Namespace) -> int:
    from RICENetLib.cohort import load_cohort
    from RICENetLib.commands.progressbar import progress_bar

    from ..ablation import run_ablation

    params = training_parameters(args, ("postop", "event", "dose"))
    params.validate()
    warn_if_slow_bf16(params)
    cases = load_cohort(args.cohort)
    load, preprocessing = case_loader(args)
    bar = progress_bar("ablation", timed_from=LOADING_SHARE) if is_main_process() else contextlib.nullcontext()
    with bar as progress:
        rows = run_ablation(cases, args.out, params, combinations=args.combinations, load=load,
                            preprocessing=preprocessing, folds_file=folds_file(args), resume=args.resume,
                            overwrite=args.overwrite, progress=progress)
    if is_main_process():
        from ..ablation import ablation_markdown

        print(ablation_markdown(rows, params), end="")
        print(f"tables: {args.out}/ablation.csv, {args.out}/ablation.md")
    return 0
