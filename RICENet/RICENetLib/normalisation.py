"""Intensity normalisation: MRI z-score in the brain, dose in Gy relative to the prescription.

MRI intensities have no unit: each scanner and protocol scales them
differently, so each MRI is z-scored over its own brain voxels. The dose has a
physical unit, and keeping it physical (dose / prescription, so 1.0 = the
prescribed dose) keeps "inside the high-dose region" meaning the same for every
patient; the paper's choice, a z-score, is the alternative.

A dose map in cGy read as Gy would be 100× too high and silently ruin every
prediction, so a dose whose maximum looks like cGy is refused unless its unit
is stated.

>>> dose_gy = dose_in_gy(dose, unit=None, name="dose.nii.gz")     # doctest: +SKIP
>>> normalise_dose(array, "prescription", prescription_gy=60.0)     # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from .errors import InputError

log = logging.getLogger(__name__)

DOSE_UNITS = ("Gy", "cGy")
DOSE_NORMALISATIONS = ("prescription", "zscore")

#: A dose maximum above this many "Gy" is taken for cGy unless the unit is given.
CGY_SUSPECT_GY = 100.0


def declared_dose_unit(dose: sitk.Image) -> Optional[str]:
    """The unit an RTDOSE read by :mod:`RICENetLib.image_io` declares (``"Gy"``), else ``None``."""
    from .image_io import DOSE_UNITS_KEY

    if dose.HasMetaDataKey(DOSE_UNITS_KEY):
        value = dose.GetMetaData(DOSE_UNITS_KEY).strip().upper()
        if value == "GY":
            return "Gy"
        if value == "CGY":
            return "cGy"
    return None


def dose_in_gy(dose: sitk.Image, unit: Optional[str] = None, name: str = "dose image") -> tuple[sitk.Image, str]:
    """``dose`` as float32 Gy, and the unit it was taken to be in (for the record).

    ``unit`` is what the user states (``"Gy"``/``"cGy"``); without it, the
    RTDOSE's own DoseUnits is used, and failing that Gy is assumed unless the
    maximum exceeds :data:`CGY_SUSPECT_GY`, which raises :class:`InputError`.
    A relative dose (RTDOSE DoseUnits RELATIVE) is refused whatever ``unit``
    says: it has no Gy. An RTDOSE that is not the planned cumulative physical
    dose, and a maximum implausible for the unit used, are refused
    (:mod:`RICENetLib.rtdose`).
    """
    if unit is not None and unit not in DOSE_UNITS:
        raise InputError(f"Unknown dose unit '{unit}' for {name}; use one of {', '.join(DOSE_UNITS)}.")
    from .image_io import DOSE_UNITS_KEY
    from .rtdose import check_dose_peak, check_rtdose

    if dose.HasMetaDataKey(DOSE_UNITS_KEY) and dose.GetMetaData(DOSE_UNITS_KEY).strip().upper() == "RELATIVE":
        # Stating a unit does not make a relative dose physical.
        raise InputError(f"{name} is a relative dose (DoseUnits RELATIVE), not Gy; export the plan's physical dose.")
    check_rtdose(dose, name)
    array = sitk.GetArrayViewFromImage(dose)
    if array.size == 0:
        raise InputError(f"{name} is empty.")
    peak = float(np.max(array))
    lowest = float(np.min(array))
    if not np.isfinite(peak) or not np.isfinite(lowest):
        raise InputError(f"{name} contains NaN or infinite values.")
    if lowest < -1e-3 * max(abs(peak), 1.0):
        raise InputError(f"{name} has negative dose values (minimum {lowest:g}); a dose map is never negative.")
    if peak <= 0:
        raise InputError(f"{name} has no positive dose (maximum {peak:g}); is it the right file?")
    declared = declared_dose_unit(dose)
    if unit is not None and declared is not None and unit != declared:
        log.warning("%s: the stated dose unit %s overrides the file's DoseUnits (%s).", name, unit, declared)
    used = unit or declared
    if used is None:
        if peak > CGY_SUSPECT_GY:
            raise InputError(
                f"{name} has a maximum of {peak:.1f}, which looks like cGy, not Gy; "
                "state the unit (--dose-unit cGy, or Gy if the plan really exceeds 100 Gy)."
            )
        used = "Gy"
    source = "as stated" if unit is not None else ("its DoseUnits" if declared is not None else "assumed")
    check_dose_peak(peak, used, name, source)
    scale = 0.01 if used == "cGy" else 1.0
    result = sitk.Cast(dose, sitk.sitkFloat32)
    if scale != 1.0:
        result = sitk.ShiftScale(result, 0.0, scale)
    return result, used


def zscore(array: np.ndarray, mask: np.ndarray, name: str = "image", zero_outside: bool = True) -> tuple[np.ndarray, dict[str, float]]:
    """``(array - mean) / std`` over the ``mask`` voxels, as float32, and the mean/std used.

    With ``zero_outside`` voxels outside the mask become 0 (the skull-stripped
    background), as in nnU-Net. A constant brain (std 0) is an error: the
    image carries no information to normalise.
    """
    inside = np.asarray(mask) > 0
    if not inside.any():
        raise InputError(f"Cannot normalise {name}: the brain mask is empty.")
    values = np.asarray(array, dtype=np.float64)[inside]
    mean = float(values.mean())
    std = float(values.std())
    if not std > 1e-6 * max(abs(mean), 1.0):
        raise InputError(f"Cannot normalise {name}: its intensity is constant inside the brain ({mean:g}).")
    out = ((np.asarray(array, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)
    if zero_outside:
        out[~inside] = 0.0
    return out, {"mean": mean, "std": std}


def normalise_dose(array_gy: np.ndarray, method: str = "prescription", prescription_gy: float = 60.0,
                   mask: Optional[np.ndarray] = None, name: str = "dose") -> tuple[np.ndarray, dict[str, Any]]:
    """The dose channel: Gy / prescription, or its z-score over ``mask`` (the paper's choice).

    The dose is never masked: dose outside the brain is still dose.
    """
    if method == "prescription":
        if not (np.isfinite(prescription_gy) and prescription_gy > 0):
            raise InputError(f"Prescription {prescription_gy} Gy is not a positive dose.")
        out = (np.asarray(array_gy, dtype=np.float32) / np.float32(prescription_gy)).astype(np.float32)
        return out, {"method": method, "prescription_gy": float(prescription_gy)}
    if method == "zscore":
        if mask is None:
            mask = np.ones(np.shape(array_gy), dtype=bool)
        out, stats = zscore(array_gy, mask, name=name, zero_outside=False)
        return out, {"method": method, **stats}
    raise InputError(f"Unknown dose normalisation '{method}'; use one of {', '.join(DOSE_NORMALISATIONS)}.")
