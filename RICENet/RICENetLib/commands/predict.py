"""``ricenet predict``: classify a case (or every case of a cohort) with a model bundle."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from pathlib import Path

NAME = "predict"
HELP = "classify a case (or a cohort) with a model bundle; optional occlusion heatmap and report"
DESCRIPTION = (
    "Preprocess the three images with the bundle's own parameters, run every fold model, and write "
    "prediction.json (label, probabilities, votes, agreement, per-fold results), registration.tfm (event → post-op), "
    "overview.png, report.html "
    "and with --occlusion the heatmap occlusion.nii.gz in the post-op (reference) space; with --dicom-out "
    "also DICOM results (Parametric Map, Segmentation, Structured Report) for DICOM inputs. Every case is checked "
    "by quality gates (registration, brain volume, dose grid and maximum, and the distance of the case's network "
    "features from the training cohort's), printed and recorded under 'quality'; a failed gate makes the verdict "
    "start 'Not reliable: ...'."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="model bundle folder (bundle.json + fold*.safetensors)")
    parser.add_argument("--postop", help="post-operative T1c MRI (file or DICOM folder)")
    parser.add_argument("--event", help="event T1c MRI (file or DICOM folder)")
    parser.add_argument("--dose", help="dose map (RTDOSE file, NIfTI/NRRD in Gy)")
    parser.add_argument("--cohort", help="cohort CSV or folder: classify every case (labels optional)")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per case with --cohort)")
    parser.add_argument("--occlusion", nargs="?", const="standard", default=None, metavar="PRESET",
                        help="also compute the occlusion heatmap (preset quick, standard or fine; default standard)")
    parser.add_argument("--occlusion-mask", type=int, default=None, metavar="VOX",
                        help="with --occlusion: box edge in model voxels instead of the preset's (presets suit 224³ inputs)")
    parser.add_argument("--occlusion-stride", type=int, default=None, metavar="VOX",
                        help="with --occlusion: step between boxes in model voxels instead of the preset's")
    parser.add_argument("--occlusion-precision", choices=("float32", "tf32", "float16"), default=None,
                        help="with --occlusion: arithmetic of the map (default: tf32 on CUDA, torch's default for "
                        "convolutions there; float32 elsewhere). float32 is exact; tf32 is faster on a GPU and float16 "
                        "halves the memory there; neither is exact (README, 'Occlusion precision'). On a CPU without "
                        "AVX-512 FP16 or AMX-FP16, float16 is emulated and about 100x slower than float32 (a warning "
                        "says so)")
    parser.add_argument("--per-modality", action="store_true",
                        help="with --occlusion: also one map per channel (occlude one modality at a time)")
    parser.add_argument("--lesion", metavar="MASK",
                        help="lesion mask (label image, nonzero = lesion, any grid of the post-op frame): its dose "
                        "(mean, max, D95, V95) and the heatmap's share in it go into prediction.json (dose_overlap)")
    parser.add_argument("--lesion-space", choices=("reference", "event"), default="reference",
                        help="frame the --lesion mask was drawn in: reference (post-op/planning, default) or event "
                        "(moved through the registration)")
    parser.add_argument("--dicom-out", metavar="DIR",
                        help="also write the results as DICOM into DIR (inputs must be DICOM: MR series and RTDOSE): "
                        "heatmap.dcm (Parametric Map, with --occlusion), regions.dcm (isodose regions and the "
                        "--lesion as a Segmentation) and report.dcm (TID 1500 Structured Report: verdict, "
                        "probabilities, bundle, quality gates), in the post-op MRI's patient and study")
    parser.add_argument("--case-id", metavar="ID",
                        help="the case's name in the report and prediction.json (default: the post-op MRI's DICOM "
                        "PatientID; with --cohort: each case's patient_id)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    from ..skull_strip import BACKENDS as SKULL_STRIP_BACKENDS

    parser.add_argument("--skull-strip", choices=SKULL_STRIP_BACKENDS, default=None,
                        help="override the bundle's skull-stripping backend (default: the bundle's own)")
    parser.add_argument("--dose-unit", choices=("Gy", "cGy"), default=None, help="unit of the dose values if not Gy")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--coverage", type=float, default=None, metavar="FRACTION",
                        help="coverage of the conformal prediction set (default 0.9: the set holds the true class "
                        "for at least 90 %% of patients like the bundle's validation patients)")


#: What ``ricenet predict`` writes into a case's folder (``--overwrite`` replaces a folder holding nothing else).
OUTPUT_FILES = re.compile(r"prediction\.json|overview\.png|report\.html|registration\.tfm|occlusion(_[a-z]+)?\.nii\.gz")


def _own(name: str) -> bool:
    return OUTPUT_FILES.fullmatch(name) is not None


def run(args: argparse.Namespace) -> int:
    from ..bundle import load_bundle
    from ..cpu_half_precision import slow_half_precision_warning
    from ..errors import InputError
    from ..inference import resolve_occlusion, select_device
    from ..output_folder import check_replaceable, check_writable

    single = [args.postop, args.event, args.dose]
    if args.cohort and any(single):
        raise InputError("Give either --cohort or --postop/--event/--dose, not both.")
    if not args.cohort and not all(single):
        raise InputError("Give --postop, --event and --dose (or --cohort CSV).")
    bundle = load_bundle(args.bundle)
    flags = {"--per-modality": args.per_modality or None, "--occlusion-mask": args.occlusion_mask,
             "--occlusion-stride": args.occlusion_stride, "--occlusion-precision": args.occlusion_precision}
    if args.occlusion is None and any(v is not None for v in flags.values()):
        raise InputError(f"{', '.join(k for k, v in flags.items() if v is not None)} need(s) --occlusion.")
    occlusion = resolve_occlusion(args.occlusion, per_modality=args.per_modality or None,
                                  mask_size=args.occlusion_mask, stride=args.occlusion_stride,
                                  precision=args.occlusion_precision)
    if occlusion is not None:
        from ..occlusion_resolution import settings_warning

        coarse = settings_warning(bundle.input_size, occlusion)
        if coarse:
            logging.getLogger("ricenet").warning("--occlusion %s: %s", args.occlusion, coarse)
    device = select_device(args.device)
    if occlusion is not None and occlusion.precision == "float16":
        warning = slow_half_precision_warning("float16", device)
        if warning:
            logging.getLogger("ricenet").warning("--occlusion-precision float16: %s", warning)
    options = dict(device=device, occlusion=occlusion, skull_strip=args.skull_strip, dose_unit=args.dose_unit)
    if args.cohort and args.lesion:
        raise InputError("--lesion is for one case; give a cohort's masks in its table's optional lesion column.")
    if args.cohort and args.case_id:
        raise InputError("--case-id is for one case; a cohort's cases are named by its table's patient_id column.")
    if args.coverage is not None:
        from ..conformal import check_coverage

        try:
            options["coverage"] = check_coverage(args.coverage)
        except ValueError as error:
            raise InputError(f"--coverage: {error}.") from None
    out = Path(args.out)
    check_writable(out)  # before minutes of work, not after
    if args.dicom_out:
        if args.cohort:
            raise InputError("--dicom-out is for one case (--postop/--event/--dose), not a --cohort.")
        from ..dicom_export import FILES, dicom_sources

        args.dicom_sources = dicom_sources(args.postop, args.event, args.dose)  # says why an input is not DICOM
        check_writable(Path(args.dicom_out))
        check_replaceable(Path(args.dicom_out), set(FILES.values()).__contains__, args.overwrite, NAME)
    if not args.cohort:
        check_replaceable(out, _own, args.overwrite, NAME)
        return _run_case(args, bundle, out, options)
    return _run_cohort(args, bundle, out, options)


def _run_case(args: argparse.Namespace, bundle, out: Path, options: dict) -> int:
    from ..dose_overlap import check_lesion_overlaps, prediction_dose_overlap, read_lesion_mask
    from ..inference import predict_case, preprocessing_share
    from ..output_folder import writing
    from ..prediction_outputs import write_prediction
    from ..quality import attach, report_of
    from ..report import prediction_verdict
    from .progressbar import progress_bar

    lesion = read_lesion_mask(args.lesion) if args.lesion else None  # a bad mask fails before the long part
    if lesion is not None:
        space = (args.event, "the event MRI") if args.lesion_space == "event" else (args.postop, "the post-op MRI")
        check_lesion_overlaps(lesion, space[0], f"Lesion mask {args.lesion}", f"{space[1]} {space[0]}")
    with progress_bar("predicting", timed_from=preprocessing_share(options["occlusion"])) as progress:
        prediction = predict_case(bundle, args.postop, args.event, args.dose, progress=progress, **options)
    overlap = prediction_dose_overlap(prediction, args.dose, lesion=lesion,
                                      lesion_name=f"Lesion mask {args.lesion}", lesion_space=args.lesion_space)
    with writing(out):
        paths = write_prediction(prediction, out, args.postop, args.event, args.dose, overwrite=args.overwrite,
                                 dose_overlap=overlap, case_id=args.case_id, lesion=lesion,
                                 lesion_space=args.lesion_space)
    if args.dicom_out:
        from ..dicom_export import export_prediction

        data = json.loads(paths["prediction"].read_text(encoding="utf-8"))
        with writing(Path(args.dicom_out)):
            paths.update({f"dicom_{k}": v for k, v in export_prediction(
                args.dicom_out, prediction, data, args.dicom_sources, args.dose, lesion=lesion,
                lesion_space=args.lesion_space, overwrite=args.overwrite).items()})
    from ..trust import validation_line

    print(prediction_verdict(attach(prediction.to_dict(), prediction)))
    print(validation_line(prediction.to_dict()))
    print("".join(f"  {quantity}: {value}\n" for quantity, value in (overlap.rows() if overlap else ())), end="")
    quality = report_of(prediction)
    print(f"quality: {quality.worst}\n{quality.summary()}" if quality else "quality: not computed")
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def _run_cohort(args: argparse.Namespace, bundle, out: Path, options: dict) -> int:
    """Every case, whatever happens to the others: a failing case is a row with its error, and the exit status
    says how many failed."""
    from ..atomic import atomic_path
    from ..cohort import check_patient_id, load_cohort
    from ..dose_overlap import csv_columns as overlap_columns
    from ..dose_overlap import prediction_dose_overlap
    from ..errors import Cancelled, RICENetError
    from ..inference import predict_case, preprocessing_share
    from ..output_folder import OutputError, check_replaceable, writing
    from ..prediction_outputs import write_prediction
    from ..quality import csv_columns, report_of
    from .progressbar import progress_bar

    cases = load_cohort(args.cohort, require_labels=False)
    table = out / "predictions.csv"
    if table.exists() and not args.overwrite:
        raise OutputError(f"{table} already exists; choose another --out or add --overwrite.")
    for case in cases:  # every folder checked before the first case is computed
        check_replaceable(out / check_patient_id(case.patient_id, f"Cohort {args.cohort}"), _own, args.overwrite, NAME)
    rows, scored, failed = [], [], []
    # Timed from the end of the first case's preprocessing: the later cases' preprocessing is in the pace.
    with progress_bar(f"predicting {len(cases)} cases",
                      timed_from=preprocessing_share(options["occlusion"]) / max(len(cases), 1)) as progress:
        for index, case in enumerate(cases):
            def case_progress(fraction: float, message: str, index: int = index) -> None:
                progress((index + fraction) / len(cases), f"{case.patient_id}: {message}")

            p = case.paths
            try:
                prediction = predict_case(bundle, p["postop"], p["event"], p["dose"], progress=case_progress, **options)
                overlap = prediction_dose_overlap(prediction, p["dose"], lesion=p.get("lesion"),
                                                  lesion_space=args.lesion_space)
                with writing(out / case.patient_id):
                    write_prediction(prediction, out / case.patient_id, p["postop"], p["event"], p["dose"],
                                     overwrite=args.overwrite, dose_overlap=overlap, case_id=case.patient_id,
                                     lesion=p.get("lesion"), lesion_space=args.lesion_space)
            except Cancelled:
                raise
            except RICENetError as error:
                failed.append(case.patient_id)
                print(f"ricenet predict: {case.patient_id}: {error}", file=sys.stderr)
                rows.append([case.patient_id, case.label or "", "", ""] + [""] * len(bundle.class_names)
                            + [""] * (len(csv_columns(None)) + len(overlap_columns())) + [str(error)])
                continue
            data = prediction.to_dict()
            rows.append([case.patient_id, case.label or "", data["label"], data["agreement"]]
                        + [f"{data['probabilities'][c]:.4f}" for c in bundle.class_names]
                        + list(csv_columns(report_of(prediction)).values())
                        + list(overlap.csv_fields().values() if overlap else [""] * len(overlap_columns())) + [""])
            scored.append((case.label, data["label"], [data["probabilities"][c] for c in bundle.class_names]))
    with writing(table), atomic_path(table) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "true_label", "predicted_label", "agreement"]
                        + [f"p_{c}" for c in bundle.class_names] + list(csv_columns(None))
                        + overlap_columns() + ["error"])
        writer.writerows(rows)
    print(f"{len(scored)} of {len(cases)} cases classified; table: {table}")
    labelled = [(truth, label, p) for truth, label, p in scored if truth in bundle.class_names]
    if labelled:
        print(labelled_summary(labelled, bundle.class_names, len(scored)))
    if failed:
        print(f"ricenet predict: {len(failed)} of {len(cases)} cases failed ({', '.join(failed[:5])}"
              f"{', ...' if len(failed) > 5 else ''}); their errors are in {table}", file=sys.stderr)
        return 2
    return 0


def labelled_summary(scored, class_names, total: int) -> str:
    """Accuracy, macro F1 and AUC of the ensemble's votes against the cohort's labels (a test set's figures)."""
    from ..metrics import macro_f1, roc_auc

    index = {name: k for k, name in enumerate(class_names)}
    truth = [index[t] for t, _, _ in scored]
    voted = [index[label] for _, label, _ in scored]
    correct = sum(t == v for t, v in zip(truth, voted))
    text = (f"against the cohort's labels ({len(scored)} of {total} cases labelled): {correct} correct "
            f"(accuracy {correct / len(scored):.3f}), macro F1 {macro_f1(truth, voted, len(class_names)):.3f}")
    if len(class_names) == 2 and len(set(truth)) == 2:
        text += f", AUC {roc_auc(truth, [p[1] for _, _, p in scored]):.3f} (mean probability of {class_names[1]})"
    return text
