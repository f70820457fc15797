"""Reading and writing images with their geometry: files, DICOM series, RTDOSE.

Everything comes back as a :class:`SimpleITK.Image` in ITK's LPS convention
(origin, spacing, direction), which is what the whole pipeline works in. The
MRML bridge converts to Slicer's RAS at the boundary.

Before ITK reads a file, :mod:`.file_integrity` checks that it is whole (and
counts NIfTI's NaN/inf voxels, which SimpleITK reads as 0); NIfTI-2 is read
through nibabel (:mod:`.nifti`). A DICOM series is checked slice by slice
(:mod:`.dicom_series`); an Enhanced multi-frame image is read by
:mod:`.dicom_enhanced`. Images read from DICOM carry PatientID and
FrameOfReferenceUID as metadata for :mod:`.dicom_identity`.

DICOM RTDOSE is read with pydicom rather than through ITK's generic reader,
because its physics and geometry live in RT-specific tags: dose = stored value ×
DoseGridScaling (in DoseUnits), slice positions from GridFrameOffsetVector along
the normal of ImageOrientationPatient.

>>> image = read_image("case/dose.dcm")                    # doctest: +SKIP
>>> image.GetMetaData(DOSE_UNITS_KEY)                      # doctest: +SKIP
'GY'
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .dicom_series import check_series, enhanced_kind
from .errors import InputError
from .file_integrity import check_complete

#: Metadata keys set on images read from RTDOSE, kept by :func:`write_image` for NRRD/MHA.
MODALITY_KEY = "ricenet_modality"
DOSE_UNITS_KEY = "ricenet_dose_units"
DOSE_SCALING_KEY = "ricenet_dose_grid_scaling"
DOSE_TYPE_KEY = "ricenet_dose_type"
DOSE_SUMMATION_KEY = "ricenet_dose_summation_type"
#: Set on every image read from DICOM, so that the inputs of one case can be checked against each other.
PATIENT_ID_KEY = "ricenet_patient_id"
FRAME_OF_REFERENCE_KEY = "ricenet_frame_of_reference_uid"

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_image(path: str | os.PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read a NIfTI/NRRD/MHA file, a DICOM series directory or a DICOM (RTDOSE) file.

    A directory must hold exactly one DICOM series unless ``series_uid`` picks
    one; a single DICOM image file reads the whole series it belongs to.
    Raises :class:`InputError` naming the path and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Image {path} does not exist.")
    if path.is_dir():
        image = _read_dicom_directory(path, series_uid)
    elif _has_suffix(path, DICOM_SUFFIXES) or _is_dicom_file(path):
        image = _read_dicom_file(path)
    elif _has_suffix(path, IMAGE_SUFFIXES):
        image = _read_image_file(path)
    else:
        raise InputError(
            f"Image {path} has an unsupported format; use NIfTI (.nii/.nii.gz), NRRD, MHA, "
            "a DICOM file or a folder holding one DICOM series."
        )
    check_volume(image, str(path))
    return image


def _read_image_file(path: Path) -> sitk.Image:
    """A NIfTI/NRRD/MHA file, refused if truncated or (NIfTI) holding NaN/inf; NIfTI-2 through nibabel."""
    from . import nifti

    if path.stat().st_size == 0:
        raise InputError(f"Image {path} could not be read: the file is empty.")
    bad = check_complete(path)  # also counts NIfTI's NaN/inf voxels: SimpleITK would read them as 0
    if bad:
        raise InputError(f"Image {path} contains {bad} NaN or infinite voxel value(s) "
                         "(SimpleITK would read them as 0).")
    if _has_suffix(path, (".nii", ".nii.gz")) and nifti.is_nifti2(path):
        return nifti.read_with_nibabel(path)  # SimpleITK cannot read NIfTI-2
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"Image {path} could not be read: {_itk_reason(error)}") from None


def _itk_reason(error: Exception) -> str:
    """The useful part of an ITK exception: its description, not the file/line banner or a matrix row."""
    text = str(error)
    for marker in ("Description:", "ERROR:"):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = " ".join(lines)
    return (reason[:300] + "…") if len(reason) > 300 else (reason or "unknown reason")


def _dicom_header(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as error:  # pydicom raises several types for broken files
        raise InputError(f"DICOM file {path} could not be read: {error}") from None


def _single_file_volume(path: Path, header: Any = None) -> sitk.Image | None:
    """The volume a DICOM file holds by itself (an RTDOSE, an Enhanced multi-frame image), else None."""
    header = header if header is not None else _dicom_header(path)
    if getattr(header, "Modality", "") == "RTDOSE":
        return read_rtdose(path)
    if enhanced_kind(header) is not None:
        from .dicom_enhanced import read_enhanced

        return read_enhanced(path)
    return None


def _read_dicom_file(path: Path) -> sitk.Image:
    header = _dicom_header(path)
    single = _single_file_volume(path, header)
    if single is not None:
        return single
    series_uid = getattr(header, "SeriesInstanceUID", None)
    return _read_dicom_directory(path.parent, series_uid)


@contextlib.contextmanager
def _itk_warnings_off():
    """ITK prints warnings such as GDCM's "No Series were found" (its source file and line) to stderr;
    the caller turns an empty answer into a clear error instead."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom_directory(directory: Path, series_uid: str | None) -> sitk.Image:
    try:
        with _itk_warnings_off():
            series = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(directory)) or [])
    except RuntimeError as error:
        raise InputError(f"Folder {directory} could not be scanned for DICOM series: {_itk_reason(error)}") from None
    if not series:
        doses = [p for p in sorted(directory.iterdir()) if p.is_file() and _is_rtdose(p)]
        if len(doses) == 1:
            return read_rtdose(doses[0])
        raise InputError(f"Folder {directory} holds no DICOM image series.")
    if series_uid is None:
        if len(series) > 1:
            raise InputError(
                f"Folder {directory} holds {len(series)} DICOM series ({', '.join(series)}); "
                "put each series in its own folder or name the series UID."
            )
        series_uid = series[0]
    elif series_uid not in series:
        raise InputError(f"Folder {directory} has no DICOM series {series_uid}; it has {', '.join(series)}.")
    try:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(directory), series_uid))
    except RuntimeError as error:
        raise InputError(f"DICOM series {series_uid} in {directory} could not be listed: "
                         f"{_itk_reason(error)}") from None
    if len(files) == 1:
        single = _single_file_volume(Path(files[0]))
        if single is not None:
            return single
    facts = check_series(files, directory, series_uid)
    if len(files) < 2:
        raise InputError(f"{facts.name} is not a 3D volume (only {len(files)} slice).")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{facts.name} could not be read: {_itk_reason(error)}") from None
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise InputError(f"{facts.name} is not a 3D volume (only {len(files)} slice(s)).")
    image.SetMetaData(PATIENT_ID_KEY, facts.patient_id)
    image.SetMetaData(FRAME_OF_REFERENCE_KEY, facts.frame_of_reference_uid)
    return image


def _is_rtdose(path: Path) -> bool:
    import pydicom

    try:
        return getattr(pydicom.dcmread(str(path), stop_before_pixels=True), "Modality", "") == "RTDOSE"
    except Exception:
        return False


def read_rtdose(path: str | os.PathLike) -> sitk.Image:
    """Read a DICOM RTDOSE file as a float32 dose image (stored × DoseGridScaling).

    The unit (``GY``, ``CGY``, ``RELATIVE``; empty when missing), the scaling,
    DoseType, DoseSummationType, PatientID and FrameOfReferenceUID are kept
    as metadata (``*_KEY``); :mod:`RICENetLib.rtdose` judges them where the
    dose is put in Gy, and :mod:`RICENetLib.dicom_identity` compares the last
    two with the post-op MRI's. The file is read as it is, so ``ricenet info``
    can show any RTDOSE.
    """
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as error:
        raise InputError(f"RTDOSE file {path} could not be read: {error}") from None
    if getattr(ds, "Modality", "") != "RTDOSE":
        raise InputError(f"DICOM file {path} is not an RTDOSE (Modality is {getattr(ds, 'Modality', 'missing')}).")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "DoseGridScaling"):
        if tag not in ds:
            raise InputError(f"RTDOSE file {path} lacks {tag}; its geometry or dose scale is unknown.")
    try:
        stored = ds.pixel_array
    except Exception as error:
        raise InputError(f"RTDOSE file {path} has unreadable pixel data: {error}") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    stored = np.asarray(stored).reshape(frames, int(ds.Rows), int(ds.Columns))
    scaling = float(ds.DoseGridScaling)
    dose = stored.astype(np.float64) * scaling

    row_cosine = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
    col_cosine = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
    normal = np.cross(row_cosine, col_cosine)
    position = np.array([float(v) for v in ds.ImagePositionPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)

    if frames > 1:
        if "GridFrameOffsetVector" not in ds:
            raise InputError(f"RTDOSE file {path} has {frames} frames but no GridFrameOffsetVector.")
        offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
        if offsets.size != frames:
            raise InputError(
                f"RTDOSE file {path}: GridFrameOffsetVector has {offsets.size} values for {frames} frames."
            )
        if offsets[0] != 0.0:
            # Absolute form (only defined for axial orientation): offsets are
            # positions along the normal; make them relative to the first frame.
            offsets = offsets - float(np.dot(position, normal))
            position = position + offsets[0] * normal
            offsets = offsets - offsets[0]
        steps = np.diff(offsets)
        slice_spacing = float(np.mean(steps))
        if slice_spacing == 0 or np.max(np.abs(steps - slice_spacing)) > 1e-3 * abs(slice_spacing) + 1e-4:
            raise InputError(
                f"RTDOSE file {path} has unevenly spaced frames (GridFrameOffsetVector steps "
                f"{np.unique(np.round(steps, 3)).tolist()} mm); resample it in the planning system."
            )
        if slice_spacing < 0:
            normal = -normal
            slice_spacing = -slice_spacing
    else:
        slice_spacing = float(getattr(ds, "SliceThickness", 0) or 1.0)

    image = sitk.GetImageFromArray(dose.astype(np.float32))
    image.SetSpacing((col_spacing, row_spacing, slice_spacing))
    image.SetOrigin(tuple(float(v) for v in position))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row_cosine, col_cosine, normal]).ravel()))
    image.SetMetaData(MODALITY_KEY, "RTDOSE")
    image.SetMetaData(DOSE_UNITS_KEY, str(getattr(ds, "DoseUnits", "") or "").strip().upper())
    image.SetMetaData(DOSE_SCALING_KEY, repr(scaling))
    image.SetMetaData(DOSE_TYPE_KEY, str(getattr(ds, "DoseType", "") or "").strip().upper())
    image.SetMetaData(DOSE_SUMMATION_KEY, str(getattr(ds, "DoseSummationType", "") or "").strip().upper())
    image.SetMetaData(PATIENT_ID_KEY, str(getattr(ds, "PatientID", "") or ""))
    image.SetMetaData(FRAME_OF_REFERENCE_KEY, str(getattr(ds, "FrameOfReferenceUID", "") or ""))
    return image


def check_volume(image: sitk.Image, name: str) -> None:
    """Refuse images the pipeline cannot use, naming ``name`` in the message."""
    if image.GetDimension() != 3:
        raise InputError(f"{name} is {image.GetDimension()}D; a 3D volume is needed.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar volume is needed.")
    size = image.GetSize()
    if min(size) < 2:
        raise InputError(f"{name} has size {size}; a 3D volume needs at least 2 voxels along every axis.")
    spacing = image.GetSpacing()
    if any(not math.isfinite(s) or s <= 0 for s in spacing):
        raise InputError(f"{name} has an invalid voxel spacing {spacing}.")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
        raise InputError(f"{name} has a singular direction (orientation) matrix; its geometry is broken.")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise InputError(f"{name} contains {bad} NaN or infinite voxel value(s).")


class _ShortWrite(Exception):
    def __init__(self, error_number: int) -> None:
        super().__init__(error_number)
        self.errno = error_number


def _check_written(tmp: Path) -> None:
    """ITK's NIfTI writer only prints "wrote only N of M bytes" on a full disk: read the file back."""
    try:
        check_complete(tmp)
    except InputError:
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE) if resource else (-1, -1)
        over_limit = soft not in (-1, getattr(resource, "RLIM_INFINITY", -1)) and tmp.stat().st_size >= soft
        raise _ShortWrite(errno.EFBIG if over_limit else errno.ENOSPC) from None


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically with its geometry; the format follows the suffix."""
    path = Path(path)
    if not _has_suffix(path, IMAGE_SUFFIXES):
        raise InputError(f"Cannot write {path}: use .nii.gz, .nii, .nrrd or .mha.")
    try:
        with atomic_path(path) as tmp:
            sitk.WriteImage(image, str(tmp), compress)
            if _has_suffix(path, (".nii", ".nii.gz")):
                _check_written(Path(tmp))
    except _ShortWrite as short:  # raised outside atomic_path, so the error names the file, not its temporary
        raise OSError(short.errno, os.strerror(short.errno), str(path)) from None
    return path


def image_info(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of an image file: a quick check before a run."""
    image = read_image(path)
    array = sitk.GetArrayViewFromImage(image)
    info: dict[str, Any] = {
        "path": str(path),
        "size": list(image.GetSize()),
        "spacing": [float(v) for v in image.GetSpacing()],
        "origin": [float(v) for v in image.GetOrigin()],
        "direction": [float(v) for v in image.GetDirection()],
        "coordinate_system": "LPS",
        "pixel_type": image.GetPixelIDTypeAsString(),
        "min": float(array.min()),
        "max": float(array.max()),
    }
    if image.HasMetaDataKey(MODALITY_KEY) and image.GetMetaData(MODALITY_KEY) == "RTDOSE":
        info["modality"] = "RTDOSE"
        info["dose_units"] = image.GetMetaData(DOSE_UNITS_KEY)
        info["dose_grid_scaling"] = float(image.GetMetaData(DOSE_SCALING_KEY))
        info["dose_type"] = image.GetMetaData(DOSE_TYPE_KEY)
        info["dose_summation_type"] = image.GetMetaData(DOSE_SUMMATION_KEY)
        info["values"] = "stored pixel value x DoseGridScaling"
        from .rtdose import rtdose_findings

        refusals, warnings = rtdose_findings(image)
        info["usable_as_dose"] = not refusals
        if refusals or warnings:
            info["dose_problems"] = refusals + warnings
    for key, field_name in ((PATIENT_ID_KEY, "patient_id"), (FRAME_OF_REFERENCE_KEY, "frame_of_reference_uid")):
        if image.HasMetaDataKey(key):
            info[field_name] = image.GetMetaData(key)
    return info
