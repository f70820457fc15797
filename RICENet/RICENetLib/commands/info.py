"""``ricenet info PATH``: geometry and value range of an image, as one JSON object."""

from __future__ import annotations

import argparse
import json

NAME = "info"
HELP = "print size, spacing, origin, direction (LPS), pixel type and value range of an image as JSON"
DESCRIPTION = (
    "Check an image before a run. Reads NIfTI/NRRD/MHA files, DICOM series folders and DICOM RTDOSE "
    "files (dose = stored value x DoseGridScaling, in the file's DoseUnits) and prints one JSON object."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image file, DICOM file or folder holding one DICOM series")


def run(args: argparse.Namespace) -> int:
    from ..image_io import image_info

    print(json.dumps(image_info(args.path), indent=2))
    return 0
