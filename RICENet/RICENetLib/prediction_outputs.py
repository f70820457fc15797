"""Write a prediction's files: ``prediction.json``, ``occlusion.nii.gz``, ``registration.tfm``, ``overview.png``, ``report.html``.

The same writer serves the CLI and the Slicer module's Export button, so both
produce identical reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from .atomic import atomic_directory, write_json
from .dose_overlap import prediction_dose_overlap
from .image_io import read_image, write_image
from .quality import attach as attach_quality
from .report import html_report, prediction_verdict, write_html, write_png
from .report_figure import CONVENTION, overview


def _image(value: sitk.Image | str | os.PathLike) -> sitk.Image:
    return value if isinstance(value, sitk.Image) else read_image(value)


def _patient_id(image: sitk.Image) -> str:
    from .image_io import PATIENT_ID_KEY

    return image.GetMetaData(PATIENT_ID_KEY).strip() if image.HasMetaDataKey(PATIENT_ID_KEY) else ""


def _isodose_gy(prediction: Any, overlap: Any) -> list[float]:
    """The figure's isodose lines: the dose-overlap figures' levels, else those fractions of the bundle's prescription."""
    from .dose_overlap import DEFAULT_LEVELS

    if overlap is not None and overlap.levels:
        return [float(level.dose_gy) for level in overlap.levels]
    params = getattr(getattr(prediction, "preprocessed", None), "params", None)
    return [level * float(getattr(params, "prescription_gy", 60.0)) for level in DEFAULT_LEVELS]


def _lesion_in_reference(prediction: Any, lesion: Any, space: str) -> sitk.Image | None:
    """The lesion mask on the reference grid (moved through the registration when drawn on the event MRI)."""
    if lesion is None:
        return None
    from .dose_overlap import lesion_mask
    from .resampling import Geometry, resample_to

    transform = prediction.event_to_reference if space == "event" else None
    return resample_to(lesion_mask(_image(lesion)), Geometry.from_image(prediction.reference), transform=transform,
                       interpolator="nearest", pixel=sitk.sitkUInt8)


def event_in_reference(prediction: Any, event: sitk.Image) -> sitk.Image:
    """The event MRI resampled onto the reference grid through the registration."""
    transform = prediction.event_to_reference or sitk.Transform()
    return sitk.Resample(sitk.Cast(event, sitk.sitkFloat32), prediction.reference, transform, sitk.sitkLinear, 0.0)


def prediction_record(prediction: Any, inputs: dict[str, str], dose_overlap: Any = None,
                      case_id: str | None = None) -> dict[str, Any]:
    """``prediction.json``'s content: the prediction, its quality gates and verdict, the inputs, the dose figures."""
    data = attach_quality(prediction.to_dict(), prediction)
    data["case_id"] = case_id
    data["verdict"] = prediction_verdict(data)
    data["inputs"] = inputs
    if dose_overlap is not None:
        data["dose_overlap"] = dose_overlap.to_dict()
    return data


def write_prediction(
    prediction: Any,
    out: str | os.PathLike,
    postop: sitk.Image | str | os.PathLike,
    event: sitk.Image | str | os.PathLike,
    dose: sitk.Image | str | os.PathLike,
    overwrite: bool = False,
    dose_overlap: Any = None,
    case_id: str | None = None,
    lesion: sitk.Image | str | os.PathLike | None = None,
    lesion_space: str = "reference",
) -> dict[str, Path]:
    """Write every output into ``out`` at once (built aside, then moved into place).

    ``dose_overlap`` (a :class:`~RICENetLib.dose_overlap.DoseOverlap`, e.g. with a lesion's figures) is
    computed here from the heatmap and the dose when not given; with a lesion, the overview figure has a
    row of slices through its centre, and ``lesion`` (the mask, drawn in ``lesion_space``: "reference" or
    "event") is outlined there. ``case_id`` names the case in the report (default: the post-op MRI's DICOM
    PatientID, when it has one).
    """
    # Absolute paths: review mode (review.py) reloads the three volumes from here, from any working folder.
    inputs = {name: str(Path(value).absolute()) if not isinstance(value, sitk.Image) else "(image in memory)"
              for name, value in (("postop", postop), ("event", event), ("dose", dose))}
    postop_image = _image(postop)
    if prediction.reference is None:
        prediction.reference = postop_image
    event_ref = event_in_reference(prediction, _image(event))
    dose_image = _image(dose)
    overlap = dose_overlap if dose_overlap is not None else prediction_dose_overlap(prediction, dose_image)
    data = prediction_record(prediction, inputs, overlap, case_id=case_id or _patient_id(postop_image) or None)
    figure = overview(event_ref, prediction.reference, prediction.occlusion, dose_image, _isodose_gy(prediction, overlap),
                      title=data["verdict"], lesion_centre_lps=getattr(getattr(overlap, "lesion", None), "centre_lps", None),
                      heat_label=data["label"], lesion=_lesion_in_reference(prediction, lesion, lesion_space))
    data["overview"] = {"convention": CONVENTION, "slices": [row.to_dict() for row in figure.rows],
                        "heatmap_range": list(figure.heat_range) if figure.heat_range else None}
    png = figure.png
    out = Path(out)
    names = {"prediction": "prediction.json", "overview": "overview.png", "report": "report.html"}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_json(tmp / names["prediction"], data)
        write_png(tmp / names["overview"], png)
        if prediction.occlusion is not None:
            write_image(prediction.occlusion, tmp / "occlusion.nii.gz")
            names["occlusion"] = "occlusion.nii.gz"
        if prediction.event_to_reference is not None:  # review mode shows it without recomputing the registration
            sitk.WriteTransform(prediction.event_to_reference, str(tmp / "registration.tfm"))
            names["registration"] = "registration.tfm"
        for modality, image in (prediction.occlusion_per_modality or {}).items():
            names[f"occlusion_{modality}"] = f"occlusion_{modality}.nii.gz"
            write_image(image, tmp / names[f"occlusion_{modality}"])
        write_html(tmp / names["report"], html_report(data, figure, inputs))
    return {key: out / name for key, name in names.items()}
