"""The small steps of preprocessing: grids, dose resampling, units, normalisation, crop/pad."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.crop import CropBox, crop_box_around, crop_or_pad, cropped_geometry, fraction_inside, input_size_zyx, uncrop
from RICENetLib.errors import InputError
from RICENetLib.image_io import DOSE_UNITS_KEY
from RICENetLib.normalisation import dose_in_gy, normalise_dose, zscore
from RICENetLib.resampling import Geometry, check_dose_overlap, isotropic_geometry, resample_dose, resample_to


def _image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    return image


def _oblique() -> np.ndarray:
    return np.array(sitk.Euler3DTransform((0, 0, 0), 0.2, -0.1, 0.3).GetMatrix()).reshape(3, 3)


# ----------------------------------------------------------------------------- grids


def test_geometry_matches_itk_index_to_point_for_oblique_grids():
    image = _image(np.zeros((5, 6, 7)), spacing=(0.9, 1.1, 2.5), origin=(10.0, -20.0, 30.0), direction=_oblique())
    geometry = Geometry.from_image(image)
    index = (2.5, 1.0, 3.25)
    assert np.allclose(geometry.index_to_point(index), image.TransformContinuousIndexToPhysicalPoint(index))
    assert np.allclose(geometry.point_to_index(geometry.index_to_point(index)), index)
    assert Geometry.from_dict(geometry.to_dict()) == geometry
    assert geometry.shape == (5, 6, 7)


def test_isotropic_grid_keeps_orientation_and_field_of_view():
    image = _image(np.zeros((20, 30, 40)), spacing=(0.8, 0.8, 3.0), origin=(5.0, 6.0, 7.0), direction=_oblique())
    grid = isotropic_geometry(image, 1.0)
    assert grid.spacing == (1.0, 1.0, 1.0) and grid.direction == image.GetDirection()
    assert grid.size == (32, 24, 60)  # ceil(40·0.8), ceil(30·0.8), 20·3
    original = Geometry.from_image(image).corners()
    # the first outer edge stays put; the far edge is at most one new voxel beyond the old one
    assert np.allclose(grid.corners()[0], original[0])
    overshoot = grid.point_to_index(original[-1]) - (np.array(grid.size) - 0.5)
    assert np.all(overshoot <= 1e-6) and np.all(overshoot > -1.0)


# ----------------------------------------------------------------------------- dose


def _gaussian_dose(centre_mm, sigma_mm=12.0, peak=60.0, spacing=3.0, size=40, origin=-60.0):
    axis = origin + spacing * np.arange(size)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    r2 = (x - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (z - centre_mm[2]) ** 2
    return _image(peak * np.exp(-r2 / (2 * sigma_mm**2)), spacing=(spacing,) * 3, origin=(origin,) * 3)


def _max_position(image: sitk.Image) -> tuple[float, np.ndarray]:
    array = sitk.GetArrayViewFromImage(image)
    zyx = np.unravel_index(int(np.argmax(array)), array.shape)
    return float(array[zyx]), np.array(image.TransformIndexToPhysicalPoint([int(v) for v in zyx[::-1]]))


def test_dose_maximum_and_its_position_survive_resampling():
    dose = _gaussian_dose(centre_mm=(3.0, -6.0, 9.0))  # peak on a dose voxel centre
    reference = _image(np.zeros((90, 100, 110)), spacing=(1.2, 1.2, 1.2), origin=(-66.3, -58.7, -61.1), direction=_oblique())
    resampled = resample_dose(dose, isotropic_geometry(reference, 1.0), name="dose")
    peak_in, where_in = _max_position(dose)
    peak_out, where_out = _max_position(resampled)
    assert peak_out == pytest.approx(peak_in, rel=0.01)
    assert np.all(np.abs(where_out - where_in) <= 1.0 + 1e-6)  # within one 1 mm voxel
    assert float(sitk.GetArrayViewFromImage(resampled).min()) == 0.0  # zero, not garbage, outside the dose grid


def test_synthetic_plan_maximum_survives_resampling(small_case):
    grid = isotropic_geometry(small_case.postop, 1.5)
    resampled = resample_dose(small_case.dose, grid, name="dose")
    peak_in, where_in = _max_position(small_case.dose)
    peak_out, where_out = _max_position(resampled)
    assert peak_out == pytest.approx(peak_in, rel=0.01)
    assert np.linalg.norm(where_out - where_in) <= np.linalg.norm(small_case.dose.GetSpacing())  # one dose voxel


def test_dose_grid_not_overlapping_the_mri_is_refused_by_name():
    dose = _gaussian_dose(centre_mm=(0.0, 0.0, 0.0))
    far = Geometry((50, 50, 50), (1.0, 1.0, 1.0), (400.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    with pytest.raises(InputError, match="dose image plan.dcm does not overlap the postop image"):
        check_dose_overlap(dose, far, "dose image plan.dcm", "the postop image")
    half = Geometry((60, 120, 120), (1.0, 1.0, 1.0), (-60.0 + 50.0, -60.0, -60.0), tuple(np.eye(3).ravel()))
    with pytest.raises(InputError, match="overlaps only"):
        check_dose_overlap(dose, half, "dose image", min_overlap=0.9)


def test_zero_dose_is_refused():
    with pytest.raises(InputError, match="dose image d.nii has no positive dose"):
        dose_in_gy(_image(np.zeros((4, 4, 4))), name="dose image d.nii")


def test_dose_in_cgy_is_refused_unless_stated():
    dose = _gaussian_dose(centre_mm=(0, 0, 0), peak=6000.0)
    with pytest.raises(InputError, match=r"dose image plan.nrrd has a maximum of 6000.0, which looks like cGy"):
        dose_in_gy(dose, None, "dose image plan.nrrd")
    in_gy, unit = dose_in_gy(dose, "cGy", "dose")
    assert unit == "cGy" and float(sitk.GetArrayViewFromImage(in_gy).max()) == pytest.approx(60.0, rel=1e-5)
    with pytest.raises(InputError, match=r"dose has a maximum of 6000 Gy \(as stated\), more than any brain treatment"):
        dose_in_gy(dose, "Gy", "dose")  # no course reaches 150 Gy, whoever states the unit
    as_is, unit = dose_in_gy(_gaussian_dose(centre_mm=(0, 0, 0), peak=120.0), "Gy", "dose")  # stated Gy above 100
    assert unit == "Gy" and float(sitk.GetArrayViewFromImage(as_is).max()) == pytest.approx(120.0)
    with pytest.raises(InputError, match="Unknown dose unit 'mGy'"):
        dose_in_gy(dose, "mGy", "dose")


def test_rtdose_units_are_used_and_relative_dose_refused():
    dose = _gaussian_dose(centre_mm=(0, 0, 0), peak=150.0)
    dose.SetMetaData(DOSE_UNITS_KEY, "GY")
    _, unit = dose_in_gy(dose, None, "RTDOSE")
    assert unit == "Gy"  # the file says Gy: no cGy guess
    dose.SetMetaData(DOSE_UNITS_KEY, "RELATIVE")
    with pytest.raises(InputError, match="RTDOSE is a relative dose"):
        dose_in_gy(dose, None, "RTDOSE")


def test_negative_or_nan_dose_is_refused():
    array = np.full((4, 4, 4), 2.0, dtype=np.float32)
    array[0, 0, 0] = -5.0
    with pytest.raises(InputError, match="negative dose"):
        dose_in_gy(_image(array), name="dose")
    array[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        dose_in_gy(_image(array), name="dose")


# ----------------------------------------------------------------------------- normalisation


def test_zscore_inside_the_mask():
    rng = np.random.default_rng(0)
    array = rng.normal(300.0, 40.0, size=(20, 20, 20)).astype(np.float32)
    mask = np.zeros(array.shape, np.uint8)
    mask[5:15, 5:15, 5:15] = 1
    out, stats = zscore(array, mask)
    assert out.dtype == np.float32
    assert out[mask > 0].mean() == pytest.approx(0.0, abs=1e-4) and out[mask > 0].std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[mask == 0] == 0.0)
    assert stats["mean"] == pytest.approx(float(array[mask > 0].mean()), rel=1e-6)
    kept, _ = zscore(array, mask, zero_outside=False)
    assert np.count_nonzero(kept[mask == 0]) > 0
    with pytest.raises(InputError, match="event image is constant"):
        zscore(np.ones((4, 4, 4)), np.ones((4, 4, 4)), name="event image is constant")  # the name is in the message
    with pytest.raises(InputError, match="brain mask is empty"):
        zscore(array, np.zeros(array.shape))


def test_dose_normalisations():
    dose = np.array([[[0.0, 30.0, 60.0, 66.0]]], dtype=np.float32)
    relative, record = normalise_dose(dose, "prescription", 60.0)
    assert np.allclose(relative, [[[0.0, 0.5, 1.0, 1.1]]]) and record["prescription_gy"] == 60.0
    z, record = normalise_dose(dose, "zscore", mask=np.ones(dose.shape))
    assert z.mean() == pytest.approx(0.0, abs=1e-6) and record["method"] == "zscore"
    with pytest.raises(InputError, match="Unknown dose normalisation"):
        normalise_dose(dose, "minmax")


# ----------------------------------------------------------------------------- crop / pad


def test_crop_or_pad_and_back():
    array = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    box = CropBox((-2, 1, 3), (10, 4, 8))
    cropped = crop_or_pad(array, box)
    assert cropped.shape == (10, 4, 8)
    assert np.all(cropped[:2] == 0) and np.all(cropped[8:] == 0)  # padding before and after along z
    assert np.array_equal(cropped[2:8, :, :5], array[:, 1:5, 3:8])
    back = uncrop(cropped, box, array.shape)
    assert np.array_equal(back[:, 1:5, 3:8], array[:, 1:5, 3:8]) and np.all(back[:, :1] == 0)
    assert np.all(crop_or_pad(array, CropBox((50, 0, 0), (4, 4, 4))) == 0)


def test_crop_box_is_centred_on_the_mask_and_maps_to_a_grid():
    mask = np.zeros((40, 50, 60), np.uint8)
    mask[10:20, 5:25, 30:50] = 1
    box = crop_box_around(mask, (16, 32, 32))
    assert box.start_zyx == (7, -1, 24) and box.size_zyx == (16, 32, 32)
    assert fraction_inside(mask, box) == 1.0
    grid = Geometry((60, 50, 40), (2.0, 2.0, 2.0), (1.0, 2.0, 3.0), tuple(_oblique().ravel()))
    model = cropped_geometry(grid, box)
    assert model.size == (32, 32, 16)
    assert np.allclose(model.index_to_point((0, 0, 0)), grid.index_to_point((24, -1, 7)))
    assert CropBox.from_dict(box.to_dict()) == box
    with pytest.raises(InputError, match="brain mask is empty"):
        crop_box_around(np.zeros((4, 4, 4)), (4, 4, 4))


def test_input_size_forms():
    assert input_size_zyx(224) == (224, 224, 224)
    assert input_size_zyx((160, 192, 176)) == (160, 192, 176)
    with pytest.raises(InputError, match="Input size"):
        input_size_zyx((64, 64))


def test_resample_to_with_transform_uses_itk_convention():
    image = _image(np.zeros((10, 10, 10)))
    array = sitk.GetArrayFromImage(image)
    array[5, 5, 5] = 1.0
    image = _image(array)
    shift = sitk.TranslationTransform(3, (2.0, 0.0, 0.0))  # output point p samples input point p + 2 mm in x
    moved = sitk.GetArrayFromImage(resample_to(image, Geometry.from_image(image), shift, interpolator="nearest"))
    assert moved[5, 5, 3] == 1.0
