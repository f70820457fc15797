"""What an RTDOSE must be to serve as the dose channel: the planned cumulative physical dose, in Gy.

The model learnt the dose of the whole treatment course as planned. An RTDOSE
says what it holds in three tags, and each is checked here:

* DoseSummationType: PLAN and MULTI_PLAN are used; a missing one is warned
  about; FRACTION (one fraction), BEAM and CONTROL_POINT (part of a plan),
  BRACHY, the *_SESSION kinds and RECORD (not the planned course) and any
  other value are refused.
* DoseType: PHYSICAL is used; EFFECTIVE (biologically weighted) and a missing
  one are warned about; ERROR (a difference of two doses) and any other value
  are refused.
* DoseUnits: GY and CGY (not a DICOM term, but some exports write it) are
  used; a missing one leaves the unit to the value range, as for NIfTI;
  RELATIVE (no Gy) and any other value are refused.

Whatever the unit, the maximum must be plausible for it (:func:`check_dose_peak`):
a label can be wrong, and a factor of 100 in the dose silently ruins every
prediction. The tags come from the file (:func:`RICENetLib.image_io.read_rtdose`
keeps them as image metadata); a volume from the Slicer scene has none, and
then only the maximum is checked.

>>> check_rtdose(dose_image, "dose image plan.dcm")          # doctest: +SKIP
"""

from __future__ import annotations

import logging

import SimpleITK as sitk

from .errors import InputError

log = logging.getLogger(__name__)

ACCEPTED_SUMMATIONS = ("PLAN", "MULTI_PLAN")
REFUSED_SUMMATIONS = {
    "FRACTION": "the dose of a single fraction, not of the whole course",
    "FRACTION_SESSION": "the dose of a single fraction session, not of the whole course",
    "BEAM": "the dose of one beam, not of the whole plan",
    "BEAM_SESSION": "the dose of one beam in one session, not of the whole plan",
    "CONTROL_POINT": "the dose of part of one beam, not of the whole plan",
    "BRACHY": "a brachytherapy dose, not the external-beam course the model learnt",
    "BRACHY_SESSION": "a brachytherapy session dose, not the external-beam course the model learnt",
    "RECORD": "a delivered-dose record, not the planned course",
}

#: No external-beam course for a brain tumour has a maximum near this: 60 Gy plans peak at ~66 Gy, and even
#: re-irradiation sums or radiosurgery hot spots stay below ~120 Gy. A higher "Gy" maximum is cGy mislabelled.
MAX_PLAUSIBLE_GY = 150.0
#: The shortest glioblastoma course (25 Gy in 5 fractions) peaks well above this; a map in Gy mislabelled cGy
#: (maximum <= 150 "cGy" = 1.5 Gy) falls far below it.
MIN_PLAUSIBLE_CGY_PEAK_GY = 5.0


def _tag(image: sitk.Image, key: str) -> str:
    return image.GetMetaData(key).strip().upper() if image.HasMetaDataKey(key) else ""


def rtdose_findings(image: sitk.Image) -> tuple[list[str], list[str]]:
    """(reasons to refuse, reasons to warn) from the RTDOSE tags on ``image``; both empty for a non-RTDOSE."""
    from .image_io import DOSE_SUMMATION_KEY, DOSE_TYPE_KEY, DOSE_UNITS_KEY, MODALITY_KEY

    if _tag(image, MODALITY_KEY) != "RTDOSE":
        return [], []
    errors, warnings = [], []
    summation = _tag(image, DOSE_SUMMATION_KEY)
    if not summation:
        warnings.append("it has no DoseSummationType, so it may not be the whole planned course")
    elif summation in REFUSED_SUMMATIONS:
        errors.append(f"its DoseSummationType is {summation}: {REFUSED_SUMMATIONS[summation]}")
    elif summation not in ACCEPTED_SUMMATIONS:
        errors.append(f"its DoseSummationType {summation} is not a planned course ({' or '.join(ACCEPTED_SUMMATIONS)})")
    dose_type = _tag(image, DOSE_TYPE_KEY)
    if not dose_type:
        warnings.append("it has no DoseType, so it may not be the physical dose")
    elif dose_type == "EFFECTIVE":
        warnings.append("its DoseType is EFFECTIVE (biologically weighted); the model learnt physical dose")
    elif dose_type == "ERROR":
        errors.append("its DoseType is ERROR: a difference between two doses, not a dose")
    elif dose_type != "PHYSICAL":
        errors.append(f"its DoseType {dose_type} is not PHYSICAL")
    units = _tag(image, DOSE_UNITS_KEY)
    if units == "RELATIVE":
        errors.append("its DoseUnits is RELATIVE: the values are not in Gy")
    elif units not in ("", "GY", "CGY"):
        errors.append(f"its DoseUnits {units} is neither GY nor CGY")
    return errors, warnings


def check_rtdose(image: sitk.Image, name: str) -> None:
    """Refuse an RTDOSE that is not the planned cumulative physical dose; log the doubtful cases."""
    errors, warnings = rtdose_findings(image)
    if errors:
        raise InputError(f"{name} cannot be the dose channel: {'; '.join(errors)}. Export the plan's total "
                         "physical dose (DoseSummationType PLAN, DoseType PHYSICAL, DoseUnits GY) from the "
                         "planning system.")
    for warning in warnings:
        log.warning("%s: %s.", name, warning)


def check_dose_peak(peak: float, unit: str, name: str, source: str) -> None:
    """Refuse a maximum that cannot be a treatment course in ``unit``; ``source`` says who stated the unit."""
    peak_gy = peak * (0.01 if unit == "cGy" else 1.0)
    if peak_gy > MAX_PLAUSIBLE_GY:
        raise InputError(
            f"{name} has a maximum of {peak:g} {unit} ({source}), more than any brain treatment course "
            f"(over {MAX_PLAUSIBLE_GY:g} Gy); the values look like cGy. Check the export"
            + ("" if unit == "cGy" else " or state the unit cGy (--dose-unit cGy; in Slicer, Dose unit)") + "."
        )
    if unit == "cGy" and peak_gy < MIN_PLAUSIBLE_CGY_PEAK_GY:
        raise InputError(
            f"{name} has a maximum of {peak:g} cGy ({source}) = {peak_gy:g} Gy, less than any glioblastoma course "
            f"reaches; the values look like Gy labelled cGy. Check the export or state the unit Gy "
            "(--dose-unit Gy; in Slicer, Dose unit)."
        )
