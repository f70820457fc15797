"""Is a DICOM image series one regular 3D grid? Checked from the slice headers before ITK stacks them.

ITK's series reader stacks whatever files share a SeriesInstanceUID: a missing
slice, uneven spacing or two slices at one position only print a warning, and
the volume gets the average spacing (slices then sit up to a spacing out of
place). Here every slice's ImagePositionPatient is projected on the slice
normal (the cross product of ImageOrientationPatient's row and column), and
the series is refused unless the slices share one orientation, one size and
one pixel spacing and sit at evenly spaced, distinct positions along that
normal, stacked straight (no shear). The frames of an Enhanced (multi-frame)
file pass the same checks (:mod:`RICENetLib.dicom_enhanced`).

>>> facts = check_series(files, Path("case/postop"), "1.2.3")   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError

#: A step between slice positions may differ from the median step by this fraction of it (plus 0.01 mm):
#: DICOM writes positions as decimal strings of at most 16 characters, so rounding stays far below 1 %.
STEP_TOLERANCE = 0.01
#: Orientation cosines and pixel spacings that differ by less than this count as equal.
COSINE_TOLERANCE = 1e-4
#: The in-plane drift of consecutive slice origins (gantry tilt, shear) allowed, as a fraction of the pixel spacing.
SHEAR_TOLERANCE = 0.05

ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR",
}


@dataclass(frozen=True)
class SeriesFacts:
    """What the pipeline needs from a series' headers besides the pixels."""

    patient_id: str
    frame_of_reference_uid: str
    name: str  # how messages name the series (description, UID, folder)


def describe_series(directory: Path, header: Any, series_uid: str) -> str:
    """How messages name a series: its description, its UID and its folder."""
    description = str(getattr(header, "SeriesDescription", "") or "").strip()
    label = f"'{description}' ({series_uid})" if description else series_uid
    return f"DICOM series {label} in {directory}"


def enhanced_kind(header: Any) -> str | None:
    """The name of an Enhanced (multi-frame) image storage class, or None for a classic single-frame file."""
    kind = ENHANCED_SOP_CLASSES.get(str(getattr(header, "SOPClassUID", "")))
    if kind is None and int(getattr(header, "NumberOfFrames", 1) or 1) > 1:
        kind = "multi-frame"
    return kind


def refuse_multiframe_in_series(path: Path, header: Any, count: int) -> None:
    """A multi-frame file among several of one series: which frames belong where is not defined."""
    kind = enhanced_kind(header)
    if kind is not None:
        frames = int(getattr(header, "NumberOfFrames", 1) or 1)
        raise InputError(
            f"DICOM file {path} is an {kind} image ({frames} frames in one file) in a series of {count} files; "
            "give that file alone (an Enhanced image holds the whole volume), or export the series as classic "
            "single-frame images (one file per slice)."
        )


def read_headers(files: Sequence[str], name: str) -> list[Any]:
    """Every file's header (no pixels); a file pydicom cannot parse is named."""
    import pydicom

    headers = []
    for file in files:
        try:
            headers.append(pydicom.dcmread(file, stop_before_pixels=True))
        except Exception as error:  # pydicom raises several types for broken files
            raise InputError(f"{name}: file {file} could not be read as DICOM ({error}).") from None
    return headers


def _floats(header: Any, tag: str, count: int, file: str, name: str) -> np.ndarray:
    value = getattr(header, tag, None)
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        values = np.array([])
    if values.size != count or not np.all(np.isfinite(values)):
        raise InputError(f"{name}: file {file} lacks a valid {tag}; the slice cannot be placed in space.")
    return values


def check_series(files: Sequence[str], directory: Path, series_uid: str) -> SeriesFacts:
    """Refuse a series that is not one regular grid; messages name it (see :func:`describe_series`)."""
    headers = read_headers(files, f"DICOM series {series_uid} in {directory}")
    name = describe_series(directory, headers[0], series_uid)
    for file, header in zip(files, headers):
        refuse_multiframe_in_series(Path(file), header, len(files))
    slices = [
        Slice(str(file), _floats(h, "ImageOrientationPatient", 6, file, name),
              _floats(h, "PixelSpacing", 2, file, name),
              (int(getattr(h, "Rows", 0) or 0), int(getattr(h, "Columns", 0) or 0)),
              _floats(h, "ImagePositionPatient", 3, file, name))
        for file, h in zip(files, headers)
    ]
    check_stack(slices, name)
    first = headers[0]
    return SeriesFacts(
        patient_id=str(getattr(first, "PatientID", "") or ""),
        frame_of_reference_uid=str(getattr(first, "FrameOfReferenceUID", "") or ""),
        name=name,
    )


@dataclass(frozen=True)
class Slice:
    """One slice's geometry: ``label`` names it in messages (a file, or a frame of a file)."""

    label: str
    orientation: np.ndarray  # ImageOrientationPatient: row cosines, then column cosines
    pixel_spacing: np.ndarray  # PixelSpacing: between rows, between columns (mm)
    shape: tuple[int, int]  # Rows, Columns
    position: np.ndarray  # ImagePositionPatient (mm, LPS)


def check_stack(slices: Sequence[Slice], name: str, single_thickness: float = 1.0) -> tuple[list[int], float]:
    """The slices' order along their normal and the spacing between them; refuses anything but one regular grid.

    ``single_thickness`` is the spacing reported for a single slice.
    """
    first = slices[0]
    for other in slices[1:]:
        if np.max(np.abs(other.orientation - first.orientation)) > COSINE_TOLERANCE:
            raise InputError(f"{name} mixes slice orientations ({np.round(first.orientation, 4).tolist()} in "
                             f"{first.label}, {np.round(other.orientation, 4).tolist()} in {other.label}); it is not "
                             "one volume. Separate the series.")
        if other.shape != first.shape:
            raise InputError(f"{name} mixes slice sizes ({first.shape[0]}×{first.shape[1]} in {first.label}, "
                             f"{other.shape[0]}×{other.shape[1]} in {other.label}); it is not one volume.")
        spacing_tolerance = COSINE_TOLERANCE * max(1.0, float(first.pixel_spacing.max()))
        if np.max(np.abs(other.pixel_spacing - first.pixel_spacing)) > spacing_tolerance:
            raise InputError(f"{name} mixes pixel spacings ({first.pixel_spacing.tolist()} mm in {first.label}, "
                             f"{other.pixel_spacing.tolist()} mm in {other.label}); it is not one volume.")
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(f"{name}: ImageOrientationPatient {first.orientation.tolist()} is not two orthogonal "
                         "unit vectors.")
    positions = np.array([s.position for s in slices])
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    along, positions = along[order], positions[order]
    ordered = [slices[i].label for i in order]
    steps = np.diff(along)
    if not steps.size:
        return order, single_thickness
    at = int(np.argmin(steps))
    if steps[at] < 0.01:
        raise InputError(f"{name} has two slices at one position ({along[at]:.2f} mm along the slice normal): "
                         f"{ordered[at]} and {ordered[at + 1]}. A series holding repeated or mixed acquisitions "
                         "(echoes, phases, time points) is not one volume; keep one slice per position.")
    step = float(np.median(steps))
    off = np.abs(steps - step) > STEP_TOLERANCE * step + 0.01
    if off.any():
        k = int(np.argmax(np.abs(steps - step)))
        missing = int(round(steps[k] / step)) - 1 if steps[k] > step else 0
        what = f"{missing} missing slice(s)" if missing > 0 and np.isclose(steps[k], (missing + 1) * step, rtol=0.05) \
            else "uneven slice spacing"
        raise InputError(
            f"{name} is not evenly spaced ({what}): slices sit {step:.2f} mm apart, but {ordered[k]} and "
            f"{ordered[k + 1]} at {along[k]:.2f} and {along[k + 1]:.2f} mm along the slice normal are "
            f"{steps[k]:.2f} mm apart. Reading it as a regular grid would put slices up to "
            f"{_worst_misplacement(along):.1f} mm out of place; export the complete series."
        )
    drift = np.diff(positions, axis=0) - np.outer(steps, normal)
    in_plane = np.abs(drift @ np.column_stack([row, column]))
    if np.max(in_plane) > SHEAR_TOLERANCE * float(first.pixel_spacing.min()):
        raise InputError(f"{name}: consecutive slices are shifted in-plane by up to {np.max(in_plane):.2f} mm "
                         "(gantry tilt or a sheared stack); resample it to a regular grid first.")
    return order, step


def _worst_misplacement(along: np.ndarray) -> float:
    """How far the slices lie from where an evenly spaced grid from the first to the last would put them."""
    regular = np.linspace(along[0], along[-1], along.size)
    return float(np.max(np.abs(along - regular)))
