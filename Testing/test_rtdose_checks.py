"""RTDOSE semantics (summation, type, units) and the dose maximum against its unit, on real RTDOSE files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pydicom.data
import pytest
import SimpleITK as sitk
from dicom_data import write_rtdose

from RICENetLib.cli import main
from RICENetLib.errors import InputError
from RICENetLib.image_io import read_image
from RICENetLib.normalisation import dose_in_gy


def _gy(path, unit=None):
    image, used = dose_in_gy(read_image(path), unit, f"dose image {path.name}")
    return float(sitk.GetArrayViewFromImage(image).max()), used


def test_a_plan_dose_in_gy_is_used(tmp_path):
    peak, used = _gy(write_rtdose(tmp_path / "plan.dcm", peak=61.5))
    assert used == "Gy" and peak == pytest.approx(61.5, rel=1e-5)
    peak, used = _gy(write_rtdose(tmp_path / "cgy.dcm", peak=6150.0, units="CGY"))
    assert used == "cGy" and peak == pytest.approx(61.5, rel=1e-5)
    peak, used = _gy(write_rtdose(tmp_path / "multi.dcm", peak=70.0, summation="MULTI_PLAN"))
    assert peak == pytest.approx(70.0, rel=1e-5)


def test_gy_label_on_cgy_values_is_refused(tmp_path):
    path = write_rtdose(tmp_path / "plan.dcm", peak=6178.0, units="GY")
    with pytest.raises(InputError, match=r"dose image plan.dcm has a maximum of 6178 Gy \(its DoseUnits\), more than"):
        _gy(path)
    peak, used = _gy(path, "cGy")  # the user states the real unit: it wins, and the maximum is then plausible
    assert used == "cGy" and peak == pytest.approx(61.78, rel=1e-5)


def test_cgy_label_on_gy_values_is_refused(tmp_path):
    path = write_rtdose(tmp_path / "plan.dcm", peak=60.0, units="CGY")
    with pytest.raises(InputError, match=r"maximum of 60 cGy \(its DoseUnits\) = 0.6 Gy.*look like Gy labelled cGy"):
        _gy(path)
    assert _gy(path, "Gy") == (pytest.approx(60.0, rel=1e-5), "Gy")


@pytest.mark.parametrize("summation, why", [("BEAM", "one beam"), ("FRACTION", "a single fraction"),
                                            ("CONTROL_POINT", "part of one beam"), ("BRACHY", "brachytherapy"),
                                            ("RECORD", "delivered-dose record"), ("WHATEVER", "not a planned course")])
def test_dose_that_is_not_the_planned_course_is_refused(tmp_path, summation, why):
    path = write_rtdose(tmp_path / "part.dcm", summation=summation)
    with pytest.raises(InputError, match=f"part.dcm cannot be the dose channel: its DoseSummationType .*{why}"):
        _gy(path)
    with pytest.raises(InputError, match="cannot be the dose channel"):
        _gy(path, "Gy")  # stating a unit does not change what the dose is


def test_error_dose_refused_and_effective_dose_warned(tmp_path, caplog):
    with pytest.raises(InputError, match="DoseType is ERROR: a difference between two doses"):
        _gy(write_rtdose(tmp_path / "diff.dcm", dose_type="ERROR"))
    with caplog.at_level(logging.WARNING, logger="RICENetLib.rtdose"):
        peak, _ = _gy(write_rtdose(tmp_path / "eff.dcm", dose_type="EFFECTIVE"))
    assert peak == pytest.approx(60.0, rel=1e-5)
    assert "EFFECTIVE (biologically weighted)" in caplog.text


def test_relative_dose_is_refused_even_with_a_stated_unit(tmp_path):
    path = write_rtdose(tmp_path / "rel.dcm", units="RELATIVE", peak=1.0)
    for unit in (None, "Gy", "cGy"):
        with pytest.raises(InputError, match=r"is a relative dose \(DoseUnits RELATIVE\)"):
            _gy(path, unit)


def test_info_says_whether_an_rtdose_can_be_the_dose(tmp_path, capsys):
    assert main(["info", pydicom.data.get_testdata_file("rtdose.dcm")]) == 0  # BEAM, RELATIVE: shown, not refused
    info = json.loads(capsys.readouterr().out)
    assert info["usable_as_dose"] is False
    assert any("BEAM" in p for p in info["dose_problems"]) and any("RELATIVE" in p for p in info["dose_problems"])
    assert main(["info", str(write_rtdose(tmp_path / "plan.dcm"))]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["usable_as_dose"] is True and "dose_problems" not in info and info["patient_id"]


def test_dose_without_tags_gets_the_maximum_check(tmp_path):
    """What a dose volume from the Slicer scene is: an image with no DICOM tags, so only the maximum can be judged."""
    from slicer import vtkMRMLScalarVolumeNode, vtkMRMLScene

    from RICENetLib import mrml

    dose = sitk.GetImageFromArray(np.full((4, 5, 6), 6178.0, np.float32))
    scene = vtkMRMLScene()
    node = mrml.image_to_volume(dose, scene, name="Dose")
    assert isinstance(node, vtkMRMLScalarVolumeNode)
    from_scene = mrml.volume_to_image(node)
    with pytest.raises(InputError, match=r"maximum of 6178 Gy \(as stated\)"):
        dose_in_gy(from_scene, "Gy", "dose volume 'Dose'")
    with pytest.raises(InputError, match=r"maximum of 6178.0, which looks like cGy"):
        dose_in_gy(from_scene, None, "dose volume 'Dose'")
    assert dose_in_gy(from_scene, "cGy", "dose")[1] == "cGy"
