"""A synthetic case as the hospital sends it: two MR series (one file per slice) and a multi-frame RTDOSE.

PACS delivers MRIs as classic single-frame MR Image Storage series and the
planning system exports the dose as an RTDOSE. The DICOM path of the pipeline
(reading, the same-patient and frame-of-reference checks, the RTDOSE rules,
and DICOM results with ``--dicom-out``) can only be tested on such files, so
:func:`write_dicom_case` writes the very images of a
:class:`~RICENetLib.synthetic.SyntheticCase` this way:

* post-op and event T1c: each its own study (scan date) and series, the same
  patient; the post-op MRI is in the planning Frame of Reference, the event MRI
  (another session) in its own;
* the dose: RTDOSE (PHYSICAL, PLAN, GY, 16-bit stored values × DoseGridScaling,
  so within half a step, 1/131070 of the maximum)
  in the post-op study and Frame of Reference, on its own coarser grid.

Any orientation is written (ImageOrientationPatient from the image's
direction), oblique ones included. UIDs are derived from the case id, so the
same case always gives the same files.

>>> paths = write_dicom_case(generate_case("P1", "rice", seed=2, size=48), "cohort/P1")  # doctest: +SKIP
>>> paths["postop"]                                                                      # doctest: +SKIP
PosixPath('cohort/P1/postop')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_directory, atomic_path
from .errors import InputError

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
#: The scan dates of the synthetic studies: the post-op (planning) MRI, the event MRI months later.
STUDY_DATES = {"postop": "20250310", "event": "20251104"}
MANUFACTURER = "RICE-NET synthetic"
#: The largest stored RTDOSE value (16-bit unsigned).
STORED_MAX = 2**16 - 1


def uid(*parts: object) -> str:
    """A UID derived from ``parts``: the same case gives the same UIDs (and so the same files)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["ricenet-synthetic", *map(str, parts)])


def _geometry(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine, slice normal (LPS) and spacing of ``image``."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return direction[:, 0], direction[:, 1], direction[:, 2], np.array(image.GetSpacing(), dtype=np.float64)


def _ds(value: float) -> str:
    """A decimal string DICOM accepts (at most 16 characters) with as many digits as fit."""
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.4g}"


def _common(ds: Any, case_id: str, role: str, modality: str, sop_class: str, sop_instance: str,
            frame_uid: str, series_number: int, description: str) -> None:
    """Patient, study, series, frame of reference, equipment and SOP common modules."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    ds.PatientName, ds.PatientID = f"SYNTHETIC^{case_id}", case_id
    ds.PatientBirthDate, ds.PatientSex = "19650101", "O"
    study = "postop" if role in ("postop", "dose") else "event"
    ds.StudyInstanceUID = uid(case_id, "study", study)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATES[study]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.StudyID, ds.AccessionNumber = study.upper()[:16], ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Post-operative MRI and RT plan" if study == "postop" else "Follow-up MRI"
    ds.Modality = modality
    ds.SeriesInstanceUID = uid(case_id, "series", role)
    ds.SeriesNumber, ds.SeriesDescription = series_number, description
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName, ds.SoftwareVersions = "synthetic.py", _version()


def _version() -> str:
    from . import __version__

    return f"ricenet {__version__}"


def _file(ds: Any) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_mr_series(image: sitk.Image, folder: str | os.PathLike, case_id: str, role: str, frame_uid: str,
                    series_number: int, description: str) -> Path:
    """``image`` (int16, any orientation) as an MR Image Storage series, one file per slice, written atomically."""
    from pydicom.dataset import Dataset

    if image.GetPixelID() != sitk.sitkInt16:
        raise InputError(f"Synthetic {role} MRI: a 16-bit signed image is needed to write DICOM, not "
                         f"{image.GetPixelIDTypeAsString()}.")
    row, column, normal, spacing = _geometry(image)
    origin = np.array(image.GetOrigin(), dtype=np.float64)
    pixels = sitk.GetArrayViewFromImage(image)  # (slices, rows, columns)
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        for k in range(pixels.shape[0]):
            ds = Dataset()
            _common(ds, case_id, role, "MR", MR_IMAGE_STORAGE, uid(case_id, role, "slice", k), frame_uid,
                    series_number, description)
            ds.BodyPartExamined, ds.PatientPosition = "BRAIN", "HFS"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.InstanceNumber = k + 1
            ds.AcquisitionNumber = 1
            ds.ImageOrientationPatient = [_ds(v) for v in (*row, *column)]
            position = origin + k * spacing[2] * normal
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.SliceLocation = _ds(float(position @ normal))
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # between rows, between columns
            ds.SliceThickness = _ds(spacing[2])
            ds.SpacingBetweenSlices = _ds(spacing[2])
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", ["SP", "SK"], ""
            ds.MRAcquisitionType = "3D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "8.2", "3.7", 1
            ds.FlipAngle, ds.MagneticFieldStrength, ds.ImagedNucleus = "12", "3", "1H"
            ds.ContrastBolusAgent = "Gadoterate meglumine"
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.PixelData = np.ascontiguousarray(pixels[k], dtype="<i2").tobytes()
            _file(ds).save_as(tmp / f"MR{k + 1:04d}.dcm", enforce_file_format=True)
    return folder


def write_rtdose(dose: sitk.Image, path: str | os.PathLike, case_id: str, frame_uid: str, series_number: int,
                 description: str = "Planned dose (sum)") -> Path:
    """``dose`` (Gy, any orientation) as one multi-frame RTDOSE: stored uint16 × DoseGridScaling, atomically.

    16 bits (not 32): dciodvfy, the validator the tests run, cannot read 32-bit RTDOSE pixel data.
    """
    from pydicom.dataset import Dataset

    row, column, normal, spacing = _geometry(dose)
    gy = sitk.GetArrayFromImage(dose).astype(np.float64)
    if not np.all(np.isfinite(gy)) or gy.min() < 0:
        raise InputError(f"Synthetic dose of {case_id}: values must be finite and not negative to write an RTDOSE.")
    peak = float(gy.max())
    scaling = float(_ds(peak / STORED_MAX)) if peak > 0 else 1.0
    stored = np.clip(np.rint(gy / scaling), 0, STORED_MAX).astype("<u2")
    ds = Dataset()
    _common(ds, case_id, "dose", "RTDOSE", RT_DOSE_STORAGE, uid(case_id, "dose", "instance"), frame_uid,
            series_number, description)
    ds.InstanceNumber = 1
    ds.OperatorsName = ""
    plan = Dataset()  # the plan itself is not written: the pipeline reads only the dose
    plan.ReferencedSOPClassUID, plan.ReferencedSOPInstanceUID = RT_PLAN_STORAGE, uid(case_id, "plan")
    ds.ReferencedRTPlanSequence = [plan]
    ds.ImageOrientationPatient = [_ds(v) for v in (*row, *column)]
    ds.ImagePositionPatient = [_ds(v) for v in dose.GetOrigin()]
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    ds.SliceThickness = _ds(spacing[2])
    ds.GridFrameOffsetVector = [_ds(k * spacing[2]) for k in range(gy.shape[0])]  # relative form: first is 0
    ds.FrameIncrementPointer = 0x3004000C  # GridFrameOffsetVector
    ds.NumberOfFrames = int(gy.shape[0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(gy.shape[1]), int(gy.shape[2])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = _ds(scaling)
    ds.TissueHeterogeneityCorrection = "IMAGE"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    path = Path(path)
    with atomic_path(path) as tmp:
        _file(ds).save_as(tmp, enforce_file_format=True)
    return path


def write_dicom_case(case: Any, folder: str | os.PathLike) -> dict[str, Path]:
    """The case's three inputs as DICOM in ``folder`` (``postop/``, ``event/``, ``dose/RTDOSE.dcm``).

    The truth sidecar is not written here (:func:`RICENetLib.synthetic.write_case` writes it in both formats).
    """
    return write_dicom_images(case.case_id, case.postop, case.event, case.dose, folder)


def write_dicom_images(case_id: str, postop: sitk.Image, event: sitk.Image, dose: sitk.Image,
                       folder: str | os.PathLike) -> dict[str, Path]:
    """Three images (e.g. a synthetic NIfTI case read back) as the DICOM of :func:`write_dicom_case`."""
    folder = Path(folder)
    planning_frame, event_frame = uid(case_id, "frame", "planning"), uid(case_id, "frame", "event")
    return {
        "postop": write_mr_series(postop, folder / "postop", case_id, "postop", planning_frame, 1,
                                  "T1c post-op (planning)"),
        "event": write_mr_series(event, folder / "event", case_id, "event", event_frame, 1, "T1c follow-up"),
        "dose": write_rtdose(dose, folder / "dose" / "RTDOSE.dcm", case_id, planning_frame, 2),
    }
