"""A case's DICOM inputs: one patient, and the dose in the post-op MRI's frame of reference."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
from dicom_data import FRAME_UID, write_mr_series, write_rtdose

from RICENetLib.dicom_identity import check_same_patient_and_frame
from RICENetLib.errors import InputError
from RICENetLib.image_io import read_image
from RICENetLib.preprocessing import preprocess_case

POSITIONS = [2.0 * k for k in range(6)]
NAMES = {"postop": "postop image", "event": "event image", "dose": "dose image"}


@pytest.fixture()
def mri(tmp_path):
    write_mr_series(tmp_path / "postop", POSITIONS, description="T1c planning")
    write_mr_series(tmp_path / "event", POSITIONS, description="T1c follow-up", frame="1.2.826.0.1.3680043.8.498.77")
    return tmp_path / "postop", tmp_path / "event"


def test_dose_in_another_frame_of_reference_is_refused(mri, tmp_path):
    postop, event = mri
    dose = write_rtdose(tmp_path / "dose.dcm", frame="1.2.826.0.1.3680043.8.498.99")
    with pytest.raises(InputError, match=r"case P1: dose image .*dose.dcm is in another DICOM frame of reference "
                                         r"\(1.2.826.0.1.3680043.8.498.99\) than the case P1: postop image .*postop "
                                         f"\\({FRAME_UID}\\)"):
        preprocess_case(postop, event, dose, case_id="P1")


def test_dose_or_event_of_another_patient_is_refused(mri, tmp_path):
    postop, event = mri
    with pytest.raises(InputError, match="dose image .* belongs to patient 'SOMEONE-ELSE'"):
        preprocess_case(postop, event, write_rtdose(tmp_path / "dose.dcm", patient="SOMEONE-ELSE"))
    write_mr_series(tmp_path / "other", POSITIONS, patient="SOMEONE-ELSE")
    with pytest.raises(InputError, match="event image .*other belongs to patient 'SOMEONE-ELSE'"):
        preprocess_case(postop, tmp_path / "other", write_rtdose(tmp_path / "dose2.dcm"))


def test_event_in_its_own_frame_and_untagged_inputs_pass(mri, tmp_path):
    postop, event = mri
    postop_image, event_image = read_image(postop), read_image(event)
    dose = read_image(write_rtdose(tmp_path / "dose.dcm"))
    check_same_patient_and_frame(postop_image, event_image, dose, NAMES)  # the event MRI is registered anyway
    untagged = sitk.Image(dose)
    for key in untagged.GetMetaDataKeys():
        untagged.EraseMetaData(key)
    check_same_patient_and_frame(postop_image, event_image, untagged, NAMES)  # NIfTI/Slicer: nothing to compare
    foreign = read_image(write_rtdose(tmp_path / "far.dcm", frame="1.2.3.4"))
    with pytest.raises(InputError, match="another DICOM frame of reference"):
        check_same_patient_and_frame(postop_image, event_image, foreign, NAMES)
