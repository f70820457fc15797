"""Enhanced (multi-frame) MR/CT: one file holding a whole volume, read with pydicom into a SimpleITK image.

ITK's GDCM reader sees such a file as a single slice. Its geometry lives in
functional groups, per frame or shared by all: PlanePositionSequence
(ImagePositionPatient), PlaneOrientationSequence (ImageOrientationPatient),
PixelMeasuresSequence (PixelSpacing) and PixelValueTransformationSequence
(RescaleSlope/Intercept). The frames must pass the same checks as a classic
series (:func:`RICENetLib.dicom_series.check_stack`): one orientation, one
pixel spacing, evenly spaced distinct positions. A file that stacks several
echoes, phases or time points has frames at one position and is refused.

>>> image = read_enhanced(Path("case/postop/IM_0001.dcm"))      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from .dicom_series import Slice, check_stack, enhanced_kind
from .errors import InputError

_CLASSIC = ("Export the series as classic single-frame images (one file per slice), or convert it to "
            "NIfTI/NRRD (e.g. with dcm2niix or 3D Slicer).")


def _group(ds: Any, k: int, sequence: str) -> Optional[Any]:
    """Frame ``k``'s item of a functional group: its own, else the shared one, else None."""
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    for item in (per_frame[k] if per_frame else None, shared[0] if shared else None):
        if item is not None and getattr(item, sequence, None):
            return getattr(item, sequence)[0]
    return None


def _values(item: Any, tag: str, count: int) -> Optional[np.ndarray]:
    try:
        values = np.array([float(v) for v in getattr(item, tag)], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return None
    return values if values.size == count and np.all(np.isfinite(values)) else None


def read_enhanced(path: Path) -> sitk.Image:
    """An Enhanced (multi-frame) MR/CT file as a 3D image in LPS; refuses what is not one regular volume."""
    import pydicom

    from .image_io import FRAME_OF_REFERENCE_KEY, PATIENT_ID_KEY

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as error:  # pydicom raises several types for broken files
        raise InputError(f"DICOM file {path} could not be read: {error}") from None
    kind = enhanced_kind(ds) or "multi-frame"
    description = str(getattr(ds, "SeriesDescription", "") or "").strip()
    name = f"{kind} file {path}" + (f" ('{description}')" if description else "")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"{name} is a colour image; a scalar MRI is needed.")
    if frames < 2:
        raise InputError(f"{name} holds {frames} frame; a 3D volume needs at least 2.")
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if not per_frame or len(per_frame) != frames:
        raise InputError(f"{name} holds {frames} frames but no per-frame geometry (PerFrameFunctionalGroupsSequence); "
                         f"it cannot be read as a volume. {_CLASSIC}")
    slices, slopes, intercepts = [], [], []
    for k in range(frames):
        label = f"frame {k + 1}"
        position = _values(_group(ds, k, "PlanePositionSequence"), "ImagePositionPatient", 3)
        orientation = _values(_group(ds, k, "PlaneOrientationSequence"), "ImageOrientationPatient", 6)
        spacing = _values(_group(ds, k, "PixelMeasuresSequence"), "PixelSpacing", 2)
        for tag, value in (("ImagePositionPatient", position), ("ImageOrientationPatient", orientation),
                           ("PixelSpacing", spacing)):
            if value is None:
                raise InputError(f"{name}: {label} lacks a valid {tag}; the frame cannot be placed in space. "
                                 f"{_CLASSIC}")
        slices.append(Slice(label, orientation, spacing, (int(ds.Rows), int(ds.Columns)), position))
        transform = _group(ds, k, "PixelValueTransformationSequence")
        slopes.append(float(getattr(transform, "RescaleSlope", 1.0) or 1.0) if transform is not None else 1.0)
        intercepts.append(float(getattr(transform, "RescaleIntercept", 0.0) or 0.0) if transform is not None else 0.0)
    thickness = _values(_group(ds, 0, "PixelMeasuresSequence"), "SliceThickness", 1)
    order, step = check_stack(slices, name, float(thickness[0]) if thickness is not None else 1.0)
    try:
        pixels = np.asarray(ds.pixel_array).reshape(frames, int(ds.Rows), int(ds.Columns))
    except Exception as error:
        raise InputError(f"{name} has unreadable pixel data: {error}") from None
    pixels = pixels[order]
    slope, intercept = np.array(slopes)[order], np.array(intercepts)[order]
    if np.all(slope == 1.0) and np.all(intercept == 0.0):
        volume = pixels
    else:
        volume = (pixels.astype(np.float32) * slope[:, None, None].astype(np.float32)
                  + intercept[:, None, None].astype(np.float32))
    first = slices[order[0]]
    row, column = first.orientation[:3], first.orientation[3:]
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume))
    image.SetSpacing((float(first.pixel_spacing[1]), float(first.pixel_spacing[0]), step))
    image.SetOrigin(tuple(float(v) for v in first.position))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, column, np.cross(row, column)]).ravel()))
    image.SetMetaData(PATIENT_ID_KEY, str(getattr(ds, "PatientID", "") or ""))
    image.SetMetaData(FRAME_OF_REFERENCE_KEY, str(getattr(ds, "FrameOfReferenceUID", "") or ""))
    return image
