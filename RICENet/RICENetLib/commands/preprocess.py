"""``ricenet preprocess``: one case or a whole cohort into model space, with the way back."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "preprocess"
HELP = "register, resample, skull-strip, normalise and crop one case (or a cohort) into model space"
DESCRIPTION = (
    "Preprocess post-op MRI, event MRI and dose the way the model sees them: the event MRI registered rigidly "
    "onto the post-op MRI, the dose resampled onto it, isotropic voxels, a brain mask, z-scored MRIs, the dose "
    "divided by the prescription, cropped to the input size around the brain. Writes OUT/postop.nii.gz, "
    "event.nii.gz, dose.nii.gz, brain_mask.nii.gz (model space), event_to_reference.tfm (ITK transform mapping "
    "post-op points to event points) and preprocess.json (every grid, the crop box, metrics, timings). "
    "With --cohort, each patient goes to OUT/<patient_id>/."
)


def input_size(text: str) -> int | tuple[int, int, int]:
    """argparse type of ``--input-size``: one voxel count, or three as z,y,x."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a voxel count like 224 or 160,192,160 (z,y,x)") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 3:
        return (values[0], values[1], values[2])
    raise argparse.ArgumentTypeError(f"'{text}': give one size or three (z,y,x)")


def add_preprocessing_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The pipeline's options, shared by ``preprocess``, ``train`` and ``ablate`` so they cannot drift apart."""
    from ..normalisation import DOSE_NORMALISATIONS, DOSE_UNITS
    from ..preprocessing import CROP_CENTRES
    from ..registration import BACKENDS as REGISTRATION_BACKENDS
    from ..skull_strip import BACKENDS as SKULL_STRIP_BACKENDS

    parser.add_argument("--skull-strip", choices=SKULL_STRIP_BACKENDS, default="deepbet",
                        help="skull-stripping backend (default deepbet; 'none' for already stripped MRIs)")
    parser.add_argument("--dose-unit", choices=DOSE_UNITS, default=None,
                        help="unit of the dose files (default: Gy, or the RTDOSE's own; a maximum over 100 is refused)")
    parser.add_argument("--spacing", type=float, default=1.0, metavar="MM", help="isotropic voxel size in mm (default 1)")
    parser.add_argument("--input-size", type=input_size, default=224, metavar="VOX",
                        help="model input size in voxels: 224, or z,y,x (default 224; small sizes make quick runs)")
    parser.add_argument("--crop-centre", choices=CROP_CENTRES, default="brain",
                        help="centre of the input box: the brain (default; the paper's whole-brain input) or the "
                        "region of at least half the maximum dose (fine voxels in a small input)")
    parser.add_argument("--dose-normalisation", choices=DOSE_NORMALISATIONS, default="prescription",
                        help="dose channel: Gy / prescription (default) or z-score (the paper)")
    parser.add_argument("--prescription", type=float, default=60.0, metavar="GY",
                        help="prescription dose in Gy the dose is divided by (default 60)")
    parser.add_argument("--registration-backend", choices=REGISTRATION_BACKENDS, default="sitk",
                        help="registration engine: SimpleITK (default) or ANTsPy when installed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--postop", metavar="P", help="post-operative T1c MRI (file or DICOM folder): the reference")
    parser.add_argument("--event", metavar="E", help="T1c MRI at the event (file or DICOM folder)")
    parser.add_argument("--dose", metavar="D", help="planned dose (RTDOSE file, NIfTI, NRRD...)")
    parser.add_argument("--cohort", metavar="CSV", help="cohort table or folder: preprocess every patient into OUT/<id>/")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_preprocessing_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (cohort: redo finished patients)")


def preprocessing_parameters(args: argparse.Namespace):
    """The checked :class:`PreprocessParameters` the options of :func:`add_preprocessing_arguments` describe."""
    from ..preprocessing import PreprocessParameters
    from ..registration import RegistrationParameters

    return PreprocessParameters(
        spacing_mm=args.spacing, input_size=args.input_size, skull_strip=args.skull_strip,
        dose_normalisation=args.dose_normalisation, prescription_gy=args.prescription, dose_unit=args.dose_unit,
        crop_centre=args.crop_centre, registration=RegistrationParameters(backend=args.registration_backend),
    ).validate()


def _summary(result, out: Path) -> dict:
    registration = result.info["registration"]
    return {
        "out": str(out),
        "case_id": result.info.get("case_id"),
        "registration": {k: registration[k] for k in ("metric", "rotation_deg", "translation_mm", "iterations")},
        "brain_volume_ml": result.info["skull_strip"]["brain_volume_ml"],
        "dose_max_gy": result.info["dose"]["model_max_gy"],
        "timings_s": result.info["timings_s"],
    }


def _own(name: str) -> bool:
    """What ``ricenet preprocess`` writes into a case's folder (``--overwrite`` replaces nothing else)."""
    from ..preprocessing import JSON_FILE, MASK_FILE, RESULT_FILES, TRANSFORM_FILE

    return name in {*RESULT_FILES.values(), MASK_FILE, TRANSFORM_FILE, JSON_FILE}


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..output_folder import check_replaceable, check_writable, writing
    from .progressbar import progress_bar

    single = [args.postop, args.event, args.dose]
    if args.cohort:
        if any(single):
            raise InputError("Give either --cohort or --postop/--event/--dose, not both.")
        return _run_cohort(args)
    if not all(single):
        missing = [f"--{n}" for n, v in zip(("postop", "event", "dose"), single) if not v]
        raise InputError(f"Missing {', '.join(missing)} (or give --cohort CSV).")
    from ..preprocessing import preprocess_case

    params = preprocessing_parameters(args)
    out = Path(args.out)
    check_writable(out)
    check_replaceable(out, _own, args.overwrite, NAME)
    with progress_bar("preprocessing") as progress:
        result = preprocess_case(args.postop, args.event, args.dose, params, progress=progress)
    with writing(out):
        result.save(out, overwrite=args.overwrite)
    print(json.dumps(_summary(result, out), indent=2))
    return 0


def _run_cohort(args: argparse.Namespace) -> int:
    from ..cohort import check_patient_id, load_cohort
    from ..errors import Cancelled, RICENetError
    from ..output_folder import check_replaceable, check_writable, writing
    from ..preprocessing import JSON_FILE, preprocess_case
    from ..progress import as_progress
    from .progressbar import progress_bar

    params = preprocessing_parameters(args)
    cases = load_cohort(args.cohort, require_labels=False)
    out = Path(args.out)
    check_writable(out)
    finished = set()
    for case in cases:  # before the work: a folder this command did not write is never replaced
        target = out / check_patient_id(case.patient_id, f"Cohort {args.cohort}")
        if (target / JSON_FILE).exists() and not args.overwrite:
            finished.add(case.patient_id)
        else:
            check_replaceable(target, _own, args.overwrite, NAME)
    done, skipped, failed = [], [], []
    with progress_bar(f"preprocessing {len(cases)} cases") as callback:
        report = as_progress(callback)
        for index, case in enumerate(cases):
            target = out / case.patient_id
            step = report.sub(index / len(cases), (index + 1) / len(cases))
            if case.patient_id in finished:
                skipped.append(case.patient_id)
                step(1.0, f"{case.patient_id} already done")
                continue
            step(0.0, case.patient_id)
            try:
                result = preprocess_case(case.paths["postop"], case.paths["event"], case.paths["dose"], params,
                                         case_id=case.patient_id, progress=step)
                with writing(target):
                    result.save(target, overwrite=True)  # checked above: nothing but this command's own files
                done.append(case.patient_id)
            except Cancelled:
                raise
            except RICENetError as error:
                failed.append({"patient_id": case.patient_id, "error": str(error)})
                print(f"ricenet preprocess: {case.patient_id}: {error}", file=sys.stderr)
    print(json.dumps({"out": str(out), "preprocessed": len(done), "already_done": len(skipped),
                      "failed": failed}, indent=2))
    if failed:
        print(f"ricenet preprocess: {len(failed)} of {len(cases)} cases failed", file=sys.stderr)
        return 2
    return 0
