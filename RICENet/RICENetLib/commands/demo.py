"""``ricenet demo``: the whole pipeline on a built-in synthetic cohort."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "demo"
HELP = "run the pipeline end to end on a synthetic cohort (the README's main job)"
DESCRIPTION = (
    "Synthesise a small cohort with known ground truth and print its summary. "
    "Later stages (training a quick 5-fold ensemble and classifying a held-out case "
    "with an occlusion map) are added as they land."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="ricenet-demo", help="output folder (default ./ricenet-demo)")
    parser.add_argument("--cases", type=int, default=20, help="synthetic patients (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from ..synthetic import summarise_cohort, write_cohort
    from .progressbar import progress_bar

    out = Path(args.out)
    cohort = out / "cohort" / "cohort.csv"
    if not cohort.exists():
        with progress_bar("synthesising cohort") as progress:
            write_cohort(cohort.parent, cases=args.cases, seed=args.seed, size=64, progress=progress)
    print(json.dumps(summarise_cohort(cohort), indent=2))
    print(f"Synthetic cohort: {cohort}")
    return 0
