"""``ricenet synth``: write a synthetic cohort (MNI-template heads, known ground truth)."""

from __future__ import annotations

import argparse
import json

NAME = "synth"
HELP = "write a synthetic cohort of post-op MRI, event MRI and dose with ground truth"
DESCRIPTION = (
    "Write N synthetic patients built on the MNI ICBM152 2009a templates: a post-op T1c with a resection "
    "cavity, an event T1c in another pose with a new lesion (recurrence or RICE by the rule in the README), "
    "a dose plan on its own grid, and a truth/ folder (brain and lesion masks, poses, prescription). "
    "Also writes cohort.csv for `ricenet train` and prints a summary. With --format dicom the MRIs are DICOM MR "
    "series and the dose an RTDOSE."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (must not already hold a cohort)")
    parser.add_argument("--cases", type=int, default=10, help="number of patients (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files (default 0)")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--spacing", type=float, default=None, metavar="MM", help="post-op voxel size in mm (default 1)")
    grid.add_argument("--size", type=int, default=None, metavar="VOX",
                      help="voxels across the largest side of the field of view instead of --spacing (small test cases)")
    parser.add_argument("--label-noise", type=float, default=0.0, metavar="P",
                        help="probability of flipping each written label (default 0)")
    parser.add_argument("--format", choices=("nifti", "dicom"), default="nifti",
                        help="nifti (default): postop/event/dose .nii.gz; dicom: each MRI a DICOM MR series (one file "
                        "per slice, its own study) and the dose a multi-frame RTDOSE in the post-op's frame of "
                        "reference, as a hospital sends them (the truth/ folder stays NIfTI)")
    parser.add_argument("--classes", choices=("paper", "distinct"), default="paper",
                        help="class rule: paper (default, the README's rule) or distinct (the demo's easier cohort: "
                             "typical lesions only, larger recurrences, smaller RICE foci, 60 Gy plans)")
    parser.add_argument("--skull-stripped", action="store_true",
                        help="write brain-only MRIs (zero outside the brain), to be prepared with --skull-strip none")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="make the patients in N processes (default 1); the files are the same")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..synthetic import summarise_cohort, write_cohort
    from .progressbar import progress_bar

    if not 0.0 <= args.label_noise <= 0.5:
        raise InputError(f"--label-noise {args.label_noise} must be between 0 and 0.5.")
    with progress_bar("synthesising") as progress:
        csv_path = write_cohort(args.out, cases=args.cases, seed=args.seed,
                                spacing_mm=None if args.size else (args.spacing or 1.0), size=args.size,
                                label_noise=args.label_noise, workers=args.workers, progress=progress,
                                image_format=args.format, classes=args.classes,
                                skull_stripped=args.skull_stripped)
    print(json.dumps(summarise_cohort(csv_path), indent=2))
    return 0
