"""``ricenet info PATH``: geometry and value range of an image, as one JSON object."""

from __future__ import annotations

import argparse
import json

NAME = "info"
HELP = ("print size, spacing, origin, direction (LPS), pixel type and value range of an image as JSON, "
        "or what a model bundle folder holds")
DESCRIPTION = (
    "Check an image before a run. Reads NIfTI (-1 and -2)/NRRD/MHA files, DICOM series folders and DICOM RTDOSE "
    "files (dose = stored value x DoseGridScaling, in the file's DoseUnits) and prints one JSON object. "
    "Truncated or corrupt files, NaN/infinite voxels and irregular DICOM series (missing or repeated slices, "
    "uneven spacing, mixed orientations or sizes) are refused as they would be in a run; for an RTDOSE, "
    "'usable_as_dose' and 'dose_problems' say whether it can be the dose channel (the planned total physical dose). "
    "Given a model bundle folder (one holding bundle.json), it loads the bundle as predict would and prints what "
    "it says instead: folds, validation figures, calibration (temperature, ECE and Brier score before and after), "
    "the training-cohort features of the out-of-distribution check."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image file, DICOM file or folder holding one DICOM series, or a model bundle folder")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bundle import BUNDLE_FILE, describe_bundle, load_bundle
    from ..image_io import image_info

    if (Path(args.path) / BUNDLE_FILE).is_file():
        print("\n".join(describe_bundle(load_bundle(args.path))))
        return 0
    print(json.dumps(image_info(args.path), indent=2))
    return 0
