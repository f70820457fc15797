"""``ricenet synth --format dicom``: the DICOM case is the NIfTI case, read through the project's own readers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from RICENetLib.cohort import load_cohort
from RICENetLib.image_io import DOSE_SUMMATION_KEY, DOSE_TYPE_KEY, DOSE_UNITS_KEY, FRAME_OF_REFERENCE_KEY, \
    PATIENT_ID_KEY, read_image
from RICENetLib.preprocessing import PreprocessParameters, preprocess_case
from dicom_data import DICOM_PREPROCESSING, dciodvfy
from RICENetLib.cli import main
from RICENetLib.synthetic_dicom import STORED_MAX, write_mr_series, write_rtdose

@pytest.fixture(scope="module")
def first_case(dicom_cohort, small_cohort):
    """The first case of the DICOM cohort, and the same case as the NIfTI cohort holds it."""
    case = load_cohort(dicom_cohort)[0]
    return case, next(c for c in load_cohort(small_cohort) if c.patient_id == case.patient_id)


def _same_geometry(image: sitk.Image, truth: sitk.Image) -> None:
    assert image.GetSize() == truth.GetSize()
    assert np.allclose(image.GetOrigin(), truth.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetSpacing(), truth.GetSpacing(), atol=1e-6)
    assert np.allclose(image.GetDirection(), truth.GetDirection(), atol=1e-6)


def test_dicom_case_reads_back_as_the_nifti_case(first_case):
    case, nifti = first_case
    images = {role: read_image(case.paths[role]) for role in ("postop", "event", "dose")}
    truth = SimpleNamespace(**{role: read_image(nifti.paths[role]) for role in ("postop", "event", "dose")})
    for role in ("postop", "event"):
        _same_geometry(images[role], getattr(truth, role))
        assert np.array_equal(sitk.GetArrayFromImage(images[role]), sitk.GetArrayFromImage(getattr(truth, role)))
    _same_geometry(images["dose"], truth.dose)
    dose, dose_truth = sitk.GetArrayFromImage(images["dose"]), sitk.GetArrayFromImage(truth.dose)
    step = float(dose_truth.max()) / STORED_MAX  # DoseGridScaling: one stored unit
    assert 0 < np.abs(dose - dose_truth).max() <= step  # the integer rescale, nothing more
    assert (images["dose"].GetMetaData(DOSE_UNITS_KEY), images["dose"].GetMetaData(DOSE_TYPE_KEY),
            images["dose"].GetMetaData(DOSE_SUMMATION_KEY)) == ("GY", "PHYSICAL", "PLAN")
    # One patient; the dose in the post-op (planning) frame of reference, the event MRI in its own.
    assert {image.GetMetaData(PATIENT_ID_KEY) for image in images.values()} == {case.patient_id}
    frames = {role: image.GetMetaData(FRAME_OF_REFERENCE_KEY) for role, image in images.items()}
    assert frames["dose"] == frames["postop"] != frames["event"]
    postop = pydicom.dcmread(sorted(case.paths["postop"].iterdir())[0], stop_before_pixels=True)
    event = pydicom.dcmread(sorted(case.paths["event"].iterdir())[0], stop_before_pixels=True)
    rtdose = pydicom.dcmread(case.paths["dose"], stop_before_pixels=True)
    assert postop.StudyInstanceUID != event.StudyInstanceUID and postop.StudyDate < event.StudyDate
    assert len({postop.SeriesInstanceUID, event.SeriesInstanceUID, rtdose.SeriesInstanceUID}) == 3
    assert len(list(case.paths["postop"].iterdir())) == truth.postop.GetSize()[2]  # one file per slice
    assert int(rtdose.NumberOfFrames) == truth.dose.GetSize()[2] and rtdose.Modality == "RTDOSE"
    # The dose grid is coarser than the MRI, as in the NIfTI cases.
    assert min(images["dose"].GetSpacing()) > max(images["postop"].GetSpacing())


def test_synthetic_dicom_is_valid(first_case):
    """dciodvfy (dicom3tools) finds nothing to say about an MR slice or the RTDOSE."""
    case, _ = first_case
    for path in (sorted(case.paths["postop"].iterdir())[0], sorted(case.paths["event"].iterdir())[-1], case.paths["dose"]):
        assert dciodvfy(path) == ([], []), path


def test_dicom_and_nifti_give_the_same_model_inputs(first_case, dicom_preprocessed):
    case, nifti = first_case
    from_dicom = dicom_preprocessed[case.patient_id]
    from_memory = preprocess_case(nifti.paths["postop"], nifti.paths["event"], nifti.paths["dose"],
                                  PreprocessParameters.from_dict(DICOM_PREPROCESSING))
    a, b = from_dicom.stack(), from_memory.stack()
    assert a.shape == b.shape == (3, 32, 32, 32)
    # MRIs: identical voxels, so only the registration's sampling can differ; dose: within the rescale step / 60 Gy.
    assert np.abs(a[:2] - b[:2]).mean() < 1e-3 and np.abs(a[:2] - b[:2]).max() < 0.05
    assert np.abs(a[2] - b[2]).max() < 1e-3


def test_oblique_series_and_dose_keep_their_geometry(tmp_path):
    """Any orientation is written: an oblique MRI and dose come back on the same grid."""
    angle = np.deg2rad(17.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    tilt = np.deg2rad(9.0)
    rotation = rotation @ np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    rng = np.random.default_rng(0)
    mri = sitk.GetImageFromArray(rng.integers(0, 900, size=(6, 10, 12)).astype(np.int16))
    dose = sitk.GetImageFromArray(rng.uniform(0, 62, size=(5, 7, 8)).astype(np.float32))
    for image, spacing in ((mri, (1.1, 0.9, 2.5)), (dose, (3.0, 3.0, 2.5))):
        image.SetDirection(tuple(rotation.ravel()))
        image.SetSpacing(spacing)
        image.SetOrigin((-40.5, 12.25, 7.0))
    frame = "1.2.826.0.1.3680043.8.498.77"
    folder = write_mr_series(mri, tmp_path / "mr", "OBL1", "postop", frame, 1, "oblique")
    path = write_rtdose(dose, tmp_path / "dose.dcm", "OBL1", frame, 2)
    for written, original in ((read_image(folder), mri), (read_image(path), dose)):
        _same_geometry(written, original)
    assert np.array_equal(sitk.GetArrayFromImage(read_image(folder)), sitk.GetArrayFromImage(mri))


def test_synth_command_writes_a_dicom_cohort(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert main(["synth", "--out", str(out), "--cases", "1", "--seed", "3", "--size", "16", "--format", "dicom"]) == 0
    capsys.readouterr()
    case = load_cohort(out / "cohort.csv")[0]
    assert case.paths["postop"].is_dir() and case.paths["event"].is_dir() and case.paths["dose"].name == "RTDOSE.dcm"
    image = read_image(case.paths["postop"])
    assert image.GetSize()[2] == len(list(case.paths["postop"].iterdir()))  # one file per slice
    assert read_image(case.paths["dose"]).GetSpacing()[0] > image.GetSpacing()[0]
    assert (out / case.patient_id / "truth" / "lesion_mask.nii.gz").exists()
    assert pydicom.dcmread(case.paths["dose"], stop_before_pixels=True).DoseSummationType == "PLAN"
