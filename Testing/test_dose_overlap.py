"""Dose–heatmap overlap figures against values worked out by hand on cases of known geometry."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.dose_overlap import (NO_POSITIVE_MASS, DoseOverlap, compute_dose_overlap, csv_columns, overlap_html,
                                     prediction_dose_overlap, read_lesion_mask)
from RICENetLib.errors import InputError
from RICENetLib.preprocessing import PreprocessParameters
from RICENetLib.resampling import Geometry


def image(array: np.ndarray, spacing: float = 1.0, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    """A (z, y, x) array as an axis-aligned image."""
    out = sitk.GetImageFromArray(np.asarray(array))
    out.SetSpacing((spacing,) * 3)
    out.SetOrigin(origin)
    return out


def test_box_half_inside_the_high_dose_region():
    # A heatmap box of 8³ voxels; the dose is 60 Gy where x >= 12 and 40 Gy on x = 10, 11: the box spans x = 8..15.
    heat = np.zeros((32, 32, 32), np.float32)
    heat[8:16, 8:16, 8:16] = 1.0
    heat[20:24, 20:24, 20:24] = -0.7  # negative drops are not mass
    dose = np.zeros_like(heat)
    dose[:, :, 10:12] = 40.0
    dose[:, :, 12:] = 60.0
    overlap = compute_dose_overlap(image(heat, 2.0), image(dose, 2.0), prescription_gy=60.0)
    levels = {lv.level: lv for lv in overlap.levels}
    assert levels[0.95].share == 0.5  # x = 12..15 of 8..15
    assert levels[0.5].share == 0.75  # 30 Gy: x = 10..15
    assert levels[0.95].dose_gy == pytest.approx(57.0) and levels[0.5].dose_gy == 30.0
    assert levels[0.95].volume_ml == pytest.approx(32 * 32 * 20 * 8 / 1000)
    assert overlap.heatmap_mass == pytest.approx(512 * 8 / 1000)  # 8³ voxels of 8 mm³, drop 1
    assert overlap.note == "" and overlap.lesion is None


def test_peak_and_hottest_five_percent_on_a_ramp():
    # h = x + 1 (1..20), dose = 3x Gy. The hottest 5 % of 8000 positive voxels = 400 = the x = 19 plane.
    x = np.broadcast_to(np.arange(20, dtype=np.float32), (20, 20, 20))
    overlap = compute_dose_overlap(image(x + 1), image(3 * x), prescription_gy=60.0)
    assert overlap.peak_dose_gy == 57.0
    assert overlap.peak_point_lps == [19.0, 0.0, 0.0]
    assert overlap.hottest_voxels == 400 and overlap.hottest_mean_dose_gy == 57.0
    levels = {lv.level: lv.share for lv in overlap.levels}
    assert levels[0.95] == pytest.approx(20 / 210)  # Σ(1..20) = 210; 57 Gy only at x = 19 (h = 20)
    assert levels[0.5] == pytest.approx(155 / 210)  # 30 Gy from x = 10: h = 11..20


def test_lesion_box_on_a_dose_ramp():
    # Dose = z + 35 Gy; lesion = z 6..25 (41..60 Gy) × 10 × 10 voxels; the heatmap covers x = 15..24, half the lesion.
    z = np.arange(32, dtype=np.float32)[:, None, None] * np.ones((32, 32, 32), np.float32)
    lesion = np.zeros((32, 32, 32), np.uint8)
    lesion[6:26, 10:20, 10:20] = 3  # any nonzero label
    heat = np.zeros((32, 32, 32), np.float32)
    heat[6:26, 10:20, 15:25] = 0.5
    overlap = compute_dose_overlap(image(heat), image(z + 35), 60.0, lesion=image(lesion))
    lesion_dose = overlap.lesion
    assert lesion_dose.volume_ml == 2.0 and lesion_dose.source_volume_ml == 2.0
    assert lesion_dose.mean_gy == pytest.approx(50.5)
    assert lesion_dose.max_gy == 60.0
    assert lesion_dose.d95_gy == 42.0  # 19 of 20 slices (95 %) receive >= 42 Gy
    assert lesion_dose.v95 == pytest.approx(0.2)  # >= 57 Gy: slices 57..60
    assert lesion_dose.heatmap_share == 0.5
    assert lesion_dose.fraction_in_reference == 1.0 and lesion_dose.space == "reference"
    # The report's slices go through the lesion: its central voxel (z 15 or 16, y and x 14 or 15), in LPS mm.
    centre = image(lesion).TransformPhysicalPointToIndex(lesion_dose.centre_lps)
    assert centre[2] in (15, 16) and centre[1] in (14, 15) and centre[0] in (14, 15)


def test_the_centre_of_a_lesion_in_two_parts_lies_in_one_of_them():
    from RICENetLib.dose_overlap import central_voxel

    mask = np.zeros((8, 8, 20), bool)
    mask[3:5, 3:5, 0:3] = mask[3:5, 3:5, 17:20] = True  # the centroid (x 9.5) is outside both
    assert mask[central_voxel(mask)]


def _sphere(size: int, centre: float, radius: float, spacing: float) -> np.ndarray:
    """Voxel centres (index × spacing) within ``radius`` mm of (centre, centre, centre), exactly."""
    index = np.arange(size) * spacing - centre
    zz, yy, xx = np.meshgrid(index, index, index, indexing="ij")
    return (zz ** 2 + yy ** 2 + xx ** 2 <= radius ** 2).astype(np.uint8)


def test_grids_that_differ_heatmap_2mm_lesion_and_dose_1mm():
    # Reference = the heatmap's 2 mm grid; lesion: a sphere of radius 8 mm drawn at 1 mm (2109 lattice points);
    # at 2 mm it keeps the 257 points of a radius-4 lattice ball. Dose = 60 + 1.5 (x - 24) Gy, given at 1 mm.
    x_mm = np.arange(48, dtype=np.float32)
    dose = np.broadcast_to(60.0 + 1.5 * (x_mm - 24.0), (48, 48, 48)).astype(np.float32)
    heat = np.zeros((24, 24, 24), np.float32)
    heat[:, :, 12:] = 1.0  # x >= 24 mm
    lesion = image(_sphere(48, 24.0, 8.0, 1.0), 1.0)
    overlap = compute_dose_overlap(image(heat, 2.0), image(dose, 1.0), 60.0, lesion=lesion)
    result = overlap.lesion
    assert result.source_volume_ml == pytest.approx(2109 * 0.001)
    assert result.volume_ml == pytest.approx(257 * 0.008)
    assert result.mean_gy == pytest.approx(60.0)  # a symmetric point set on a linear ramp
    assert result.max_gy == pytest.approx(72.0)  # the point 4 voxels (8 mm) along +x
    # 2 mm steps are 3 Gy steps: 1 point at 48 Gy, 21 at 51 Gy, so 256 of 257 (99.6 %) get >= 51 Gy, 235 get >= 54.
    assert result.d95_gy == pytest.approx(51.0)
    assert result.v95 == pytest.approx(198 / 257)  # >= 57 Gy: planes dx = -1..4: 45 + 49 + 45 + 37 + 21 + 1
    assert result.heatmap_share == pytest.approx((49 + 45 + 37 + 21 + 1) / (12 * 24 * 24))
    assert {lv.level: lv.share for lv in overlap.levels}[0.95] == 1.0  # x >= 24 mm receives >= 60 Gy


def test_lesion_drawn_on_the_event_mri_moves_through_the_registration():
    z = np.arange(32, dtype=np.float32)[:, None, None] * np.ones((32, 32, 32), np.float32)
    lesion = np.zeros((32, 32, 32), np.uint8)
    lesion[6:26, 10:20, 10:20] = 1
    # The event scan sits 5 mm further along x: reference point p is event point p + (5, 0, 0).
    moved = image(lesion, origin=(5.0, 0.0, 0.0))
    registration = sitk.TranslationTransform(3, (5.0, 0.0, 0.0))
    overlap = compute_dose_overlap(image(np.ones((32, 32, 32), np.float32)), image(z + 35), 60.0, lesion=moved,
                                   event_to_reference=registration)
    assert overlap.lesion.space == "event"
    assert overlap.lesion.volume_ml == 2.0 and overlap.lesion.d95_gy == 42.0
    assert overlap.lesion.heatmap_share == pytest.approx(2000 / 32 ** 3)


def test_heatmap_without_positive_mass_gives_none_never_nan():
    heat = -np.ones((16, 16, 16), np.float32)
    lesion = np.zeros((16, 16, 16), np.uint8)
    lesion[4:8, 4:8, 4:8] = 1
    overlap = compute_dose_overlap(image(heat), image(np.full((16, 16, 16), 60.0, np.float32)), 60.0, lesion=image(lesion))
    assert overlap.note == NO_POSITIVE_MASS
    assert [lv.share for lv in overlap.levels] == [None, None]
    assert overlap.peak_dose_gy is None and overlap.hottest_mean_dose_gy is None and overlap.heatmap_mass == 0.0
    assert overlap.lesion.heatmap_share is None and overlap.lesion.mean_gy == 60.0  # the lesion's dose still counts
    text = json.dumps(overlap.to_dict(), allow_nan=False)
    assert "NaN" not in text
    values = dict(overlap.rows())
    assert values["dose at the heatmap's peak"] == NO_POSITIVE_MASS
    assert values["heatmap mass in the lesion"] == NO_POSITIVE_MASS
    fields = overlap.csv_fields()
    assert fields["heatmap_in_95pct_isodose"] == "" and fields["lesion_mean_gy"] == "60.00"
    assert list(fields) == csv_columns()


def test_json_round_trip_and_report_section():
    x = np.broadcast_to(np.arange(20, dtype=np.float32), (20, 20, 20))
    lesion = np.zeros((20, 20, 20), np.uint8)
    lesion[5:10, 5:10, 5:10] = 1
    overlap = compute_dose_overlap(image(x + 1), image(3 * x), 60.0, lesion=image(lesion))
    data = json.loads(json.dumps(overlap.to_dict(), allow_nan=False))
    again = DoseOverlap.from_dict(data)
    assert again.to_dict() == data
    assert again.lesion.d95_gy == overlap.lesion.d95_gy and again.levels[1].level == 0.95
    page = overlap_html(data)
    assert 'id="dose_overlap"' in page and "lesion D95" in page and "heatmap mass in the 95 % isodose (57.0 Gy)" in page
    with pytest.raises(InputError, match="Invalid dose_overlap record"):
        DoseOverlap.from_dict({**data, "surprise": 1})


def test_empty_lesion_mask_names_the_file(tmp_path):
    path = tmp_path / "lesion.nii.gz"
    sitk.WriteImage(image(np.zeros((8, 8, 8), np.uint8)), str(path))
    with pytest.raises(InputError, match=r"Lesion mask .*lesion\.nii\.gz is empty: no voxel is nonzero"):
        read_lesion_mask(path)


def test_lesion_outside_the_reference_grid_is_refused():
    lesion = np.ones((8, 8, 8), np.uint8)
    far = image(lesion, origin=(500.0, 0.0, 0.0))
    heat = image(np.ones((16, 16, 16), np.float32))
    dose = image(np.full((16, 16, 16), 60.0, np.float32))
    with pytest.raises(InputError, match="lesion.nii lies outside the reference .post-op. grid"):
        compute_dose_overlap(heat, dose, 60.0, lesion=far, lesion_name="Lesion mask lesion.nii")
    # Half outside: the rest is used and the share on the grid is recorded.
    half = image(lesion, origin=(12.0, 0.0, 0.0))  # x = 12..19 mm on a grid of x = 0..15
    result = compute_dose_overlap(heat, dose, 60.0, lesion=half).lesion
    assert result.fraction_in_reference == 0.5 and result.volume_ml == pytest.approx(0.256)
    assert dict(compute_dose_overlap(heat, dose, 60.0, lesion=half).rows())["lesion mask on the reference grid"] == "50.0 %"


def test_bad_parameters_are_refused():
    heat = image(np.ones((4, 4, 4), np.float32))
    dose = image(np.ones((4, 4, 4), np.float32))
    with pytest.raises(InputError, match="Prescription"):
        compute_dose_overlap(heat, dose, 0.0)
    with pytest.raises(InputError, match="Isodose levels"):
        compute_dose_overlap(heat, dose, 60.0, levels=(50.0,))
    assert math.isclose(compute_dose_overlap(heat, dose, 60.0, levels=(0.01,)).levels[0].share, 1.0)


def test_a_prediction_without_heatmap_gets_the_lesion_figures_only(tmp_path, caplog):
    z = np.arange(32, dtype=np.float32)[:, None, None] * np.ones((32, 32, 32), np.float32)
    lesion = np.zeros((32, 32, 32), np.uint8)
    lesion[6:26, 10:20, 10:20] = 1
    reference = image(np.zeros((32, 32, 32), np.float32))
    event_grid = Geometry.from_image(image(lesion, origin=(5.0, 0.0, 0.0)))
    prepared = SimpleNamespace(params=PreprocessParameters(prescription_gy=60.0), info={"dose": {"unit_of_input": "Gy"}},
                               event_geometry=event_grid)
    prediction = SimpleNamespace(occlusion=None, reference=reference, preprocessed=prepared,
                                 event_to_reference=sitk.TranslationTransform(3, (5.0, 0.0, 0.0)))
    assert prediction_dose_overlap(prediction, image(z + 35)) is None  # nothing to say
    path = tmp_path / "lesion.nrrd"
    sitk.WriteImage(image(lesion, origin=(5.0, 0.0, 0.0)), str(path))  # drawn on the event MRI's grid
    with caplog.at_level(logging.WARNING):
        as_reference = prediction_dose_overlap(prediction, image(z + 35), lesion=path)
    assert "has the event MRI's grid but is taken in the post-op (reference) frame" in caplog.text
    assert as_reference.lesion.space == "reference"
    overlap = prediction_dose_overlap(prediction, image(z + 35), lesion=path, lesion_space="event")
    assert overlap.heatmap_mass is None and overlap.note == "no heatmap"
    assert overlap.lesion.d95_gy == 42.0 and overlap.lesion.heatmap_share is None
    assert overlap.lesion.name == f"Lesion mask {path}"
    assert [q for q, _ in overlap.rows()] == ["lesion volume", "lesion mean dose", "lesion maximum dose", "lesion D95",
                                              "lesion V95 % (≥ 57.0 Gy)"]
    with pytest.raises(InputError, match="Unknown lesion space 'planning'"):
        prediction_dose_overlap(prediction, image(z + 35), lesion=path, lesion_space="planning")
    prediction.event_to_reference = None
    with pytest.raises(InputError, match="lesion space 'event' needs the prediction's registration"):
        prediction_dose_overlap(prediction, image(z + 35), lesion=path, lesion_space="event")
