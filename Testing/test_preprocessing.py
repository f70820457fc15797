"""The whole preprocessing pipeline on a synthetic case, and the way back to the patient."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib import MODALITIES
from RICENetLib.errors import Cancelled, InputError, PreprocessingError
from RICENetLib.preprocessing import PreprocessParameters, PreprocessResult, preprocess_case
from RICENetLib.registration import RegistrationParameters, mean_displacement_mm
from RICENetLib.resampling import Geometry, resample_to
from RICENetLib.skull_strip import backend_status, dice
from RICENetLib.synthetic import generate_case, write_case

#: 2 mm model voxels on a 3 mm post-op: to_reference has to interpolate between different grids.
PARAMS = PreprocessParameters(spacing_mm=2.0, input_size=96,
                              skull_strip="deepbet" if backend_status()["deepbet"] is None else "none")
FAST = PARAMS.with_updates(skull_strip="none")


@pytest.fixture(scope="module")
def case():
    return generate_case("PRE", "recurrence", seed=21, size=80)


@pytest.fixture(scope="module")
def result(case):
    return preprocess_case(case.postop, case.event, case.dose, PARAMS, case_id="PRE")


@pytest.fixture(scope="module")
def case_files(case, tmp_path_factory):
    return write_case(case, tmp_path_factory.mktemp("case") / "PRE")


@pytest.fixture(scope="module")
def brain_points(case):
    mask = sitk.GetArrayFromImage(case.brain_mask)
    return Geometry.from_image(case.brain_mask).index_to_point(np.argwhere(mask)[:, ::-1].astype(float))


def _model_index(result: PreprocessResult, point) -> tuple[int, int, int]:
    """The (z, y, x) model voxel nearest to a physical point of the reference."""
    return tuple(int(v) for v in np.round(result.reference_point_to_model_index(point)))


def _argmax_index(image: sitk.Image) -> tuple[int, int, int]:
    array = sitk.GetArrayViewFromImage(image)
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(array)), array.shape)[::-1])  # (x, y, z)


# ----------------------------------------------------------------------------- the model input


def test_model_input_shapes_and_order(result):
    x = result.stack()
    assert x.shape == (3, 96, 96, 96) and x.dtype == np.float32
    assert np.array_equal(x[2], result.arrays["dose"])
    pair = result.stack(("dose", "event"))
    assert np.array_equal(pair[0], result.arrays["dose"]) and np.array_equal(pair[1], result.arrays["event"])
    assert result.brain_mask.dtype == np.uint8 and result.brain_mask.shape == (96, 96, 96)
    assert result.info["skull_strip"]["brain_fraction_in_input"] == 1.0
    with pytest.raises(InputError, match="Cannot stack"):
        result.stack(("flair",))


def test_mri_channels_are_zscored_in_the_brain(result):
    inside = result.brain_mask > 0
    for modality in ("postop", "event"):
        channel = result.arrays[modality]
        assert channel[inside].mean() == pytest.approx(0.0, abs=1e-3)
        assert channel[inside].std() == pytest.approx(1.0, abs=1e-3)
        assert np.all(channel[~inside] == 0.0)


def test_registration_in_the_pipeline_recovers_the_pose(result, case, brain_points):
    error = mean_displacement_mm(result.event_to_reference, case.event_from_reference, brain_points)
    assert error < 1.0
    assert result.info["registration"]["converged"]


def test_brain_mask_matches_the_synthetic_truth(result, case):
    truth = resample_to(case.brain_mask, result.model_geometry, interpolator="nearest", pixel=sitk.sitkUInt8)
    score = dice(result.brain_mask, truth)
    print(f"{PARAMS.skull_strip} Dice in model space (2 mm): {score:.4f}")
    if PARAMS.skull_strip == "deepbet":
        assert score >= 0.95


def test_dose_maximum_and_position_survive_into_model_space(result, case):
    dose = sitk.GetArrayViewFromImage(case.dose)
    where_in = np.unravel_index(int(np.argmax(dose)), dose.shape)[::-1]
    point_in = np.array(case.dose.TransformIndexToPhysicalPoint([int(v) for v in where_in]))
    gy = result.arrays["dose"] * PARAMS.prescription_gy
    where_out = np.unravel_index(int(np.argmax(gy)), gy.shape)[::-1]
    point_out = result.model_geometry.index_to_point(np.array(where_out, dtype=float))
    assert float(gy.max()) == pytest.approx(float(dose.max()), rel=0.01)
    assert np.linalg.norm(point_out - point_in) <= np.linalg.norm(case.dose.GetSpacing())  # one dose voxel
    assert result.info["dose"]["unit_of_input"] == "Gy"


def test_dose_centred_box_holds_the_high_dose_region_at_finer_voxels(case):
    """A box smaller than the brain, on the dose: the region above half the maximum dose and the maximum
    itself stay inside it, and the way back from model space still lands on the patient's dose maximum."""
    small = FAST.with_updates(spacing_mm=2.0, input_size=48)
    on_dose = preprocess_case(case.postop, case.event, case.dose, small.with_updates(crop_centre="dose"))
    on_brain = preprocess_case(case.postop, case.event, case.dose, small)
    dose = sitk.GetArrayViewFromImage(case.dose)
    point = np.array(case.dose.TransformIndexToPhysicalPoint(
        [int(v) for v in np.unravel_index(int(np.argmax(dose)), dose.shape)[::-1]]))
    gy = on_dose.arrays["dose"] * small.prescription_gy
    assert float(gy.max()) == pytest.approx(float(dose.max()), rel=0.02)
    high = on_dose.arrays["dose"] >= 0.5 * float(on_dose.arrays["dose"].max())
    assert not (high[0].any() or high[-1].any() or high[:, 0].any() or high[:, -1].any()
                or high[:, :, 0].any() or high[:, :, -1].any()), "the high-dose region touches the box's faces"
    assert on_dose.crop != on_brain.crop and on_dose.params.crop_centre == "dose"
    assert on_dose.info["skull_strip"]["brain_fraction_in_input"] < 1.0  # the box is smaller than the brain
    index = np.round(on_dose.reference_point_to_model_index(point)).astype(int)
    assert ((index >= 0) & (index < 48)).all() and gy[tuple(index)] >= 0.9 * float(dose.max())


# ----------------------------------------------------------------------------- the way back


def test_marker_in_model_space_lands_on_the_right_reference_voxel(result, case):
    rng = np.random.default_rng(0)
    brain = np.argwhere(sitk.GetArrayViewFromImage(case.brain_mask))[:, ::-1]
    targets = [tuple(int(v) for v in brain[i]) for i in rng.choice(len(brain), 5, replace=False)]
    lesion = case.postop.TransformPhysicalPointToIndex(case.truth["lesion_centre_postop_mm"])
    for target in targets + [tuple(lesion)]:
        point = case.postop.TransformIndexToPhysicalPoint(target)
        marker = np.zeros(result.model_geometry.shape, np.float32)
        marker[_model_index(result, point)] = 1.0
        for interpolator in ("linear", "nearest"):
            back = result.to_reference(marker, interpolator=interpolator)
            assert Geometry.from_image(back) == result.reference_geometry
            assert _argmax_index(back) == target, f"{interpolator}: marker for {target} came back elsewhere"
        label = result.to_reference(marker > 0, interpolator=sitk.sitkNearestNeighbor)
        assert label.GetPixelID() == sitk.sitkUInt8 and _argmax_index(label) == target


def test_identity_grids_round_trip_exactly(case):
    """With a 3 mm model grid on a 3 mm post-op, model voxels are reference voxels: the round trip is lossless."""
    exact = preprocess_case(case.postop, case.event, case.dose, FAST.with_updates(spacing_mm=3.0, input_size=64))
    values = np.random.default_rng(1).random(exact.model_geometry.shape).astype(np.float32)
    back = sitk.GetArrayFromImage(exact.to_reference(values))
    start = np.array(exact.crop.start_zyx)
    stop = np.minimum(start + 64, back.shape)
    low = np.maximum(start, 0)
    np.testing.assert_allclose(back[tuple(slice(a, b) for a, b in zip(low, stop))],
                               values[tuple(slice(a - s, b - s) for a, b, s in zip(low, stop, start))], atol=1e-6)


def test_marker_at_the_lesion_lands_on_the_event_lesion(result, case):
    point = case.truth["lesion_centre_postop_mm"]
    marker = np.zeros(result.model_geometry.shape, np.float32)
    marker[_model_index(result, point)] = 1.0
    on_event = result.to_event(marker)
    assert Geometry.from_image(on_event) == result.event_geometry
    landed = np.array(on_event.TransformIndexToPhysicalPoint(_argmax_index(on_event)))
    assert np.linalg.norm(landed - case.truth["lesion_centre_event_mm"]) <= np.linalg.norm(case.event.GetSpacing())


# ----------------------------------------------------------------------------- files


def test_save_and_load_round_trip(result, tmp_path):
    folder = result.save(tmp_path / "out")
    names = {p.name for p in folder.iterdir()}
    assert names == {"postop.nii.gz", "event.nii.gz", "dose.nii.gz", "brain_mask.nii.gz",
                     "event_to_reference.tfm", "preprocess.json"}
    record = json.loads((folder / "preprocess.json").read_text(encoding="utf-8"))
    assert record["parameters"] == PARAMS.to_dict() and record["case_id"] == "PRE"
    assert record["crop"] == result.crop.to_dict()
    written = sitk.ReadImage(str(folder / "postop.nii.gz"))
    assert np.allclose(written.GetOrigin(), result.model_geometry.origin, atol=1e-4)
    loaded = PreprocessResult.load(folder)
    for modality in MODALITIES:
        assert np.array_equal(loaded.arrays[modality], result.arrays[modality])
    assert np.array_equal(loaded.brain_mask, result.brain_mask)
    assert loaded.model_geometry == result.model_geometry and loaded.crop == result.crop
    assert loaded.reference_geometry == result.reference_geometry and loaded.params == result.params
    assert loaded.event_to_reference.GetParameters() == result.event_to_reference.GetParameters()
    marker = np.zeros(result.model_geometry.shape, np.float32)
    marker[40, 50, 45] = 1.0
    assert np.array_equal(sitk.GetArrayViewFromImage(loaded.to_reference(marker)),
                          sitk.GetArrayViewFromImage(result.to_reference(marker)))
    with pytest.raises(InputError, match="loaded from disk"):
        loaded.reference_image()
    with pytest.raises(InputError, match="already exists"):
        result.save(folder)


def test_transform_file_maps_reference_points_to_event_points(result, case, tmp_path):
    folder = result.save(tmp_path / "out")
    transform = sitk.ReadTransform(str(folder / "event_to_reference.tfm"))
    moved = np.array(transform.TransformPoint(tuple(case.truth["lesion_centre_postop_mm"])))
    assert np.linalg.norm(moved - case.truth["lesion_centre_event_mm"]) < 1.5


def test_load_refuses_a_foreign_folder(tmp_path):
    with pytest.raises(InputError, match="preprocess.json is missing"):
        PreprocessResult.load(tmp_path)
    (tmp_path / "preprocess.json").write_text(json.dumps({"format": "ricenet-preprocess", "version": 99}))
    with pytest.raises(InputError, match="format version 99"):
        PreprocessResult.load(tmp_path)


# ----------------------------------------------------------------------------- parameters


def test_parameters_round_trip_and_validation():
    params = PreprocessParameters(input_size=(96, 112, 96), dose_normalisation="zscore", dose_unit="cGy",
                                  crop_centre="dose", registration=RegistrationParameters(seed=3))
    data = json.loads(json.dumps(params.to_dict()))
    assert PreprocessParameters.from_dict(data) == params
    assert PreprocessParameters.from_dict({}) == PreprocessParameters()
    for bad, name in (({"spacing_mm": 0}, "spacing_mm"), ({"skull_strip": "bet2"}, "skull_strip"),
                      ({"dose_unit": "Sv"}, "dose_unit"), ({"prescription_gy": -1}, "prescription_gy"),
                      ({"input_size": [4, 4]}, "Input size"), ({"dose_normalisation": "max"}, "dose_normalisation"),
                      ({"crop_centre": "lesion"}, "crop_centre")):
        with pytest.raises(InputError, match=name):
            PreprocessParameters.from_dict(bad)
    with pytest.raises(InputError, match="Unknown preprocessing parameter"):
        PreprocessParameters.from_dict({"spacing": 1.0})


# ----------------------------------------------------------------------------- bad inputs


def _float(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(image, sitk.sitkFloat32)


def test_empty_image_is_refused_by_name(case):
    empty = sitk.Image(case.postop.GetSize(), sitk.sitkInt16)
    empty.CopyInformation(case.postop)
    with pytest.raises(InputError, match="case X: postop image is empty"):
        preprocess_case(empty, case.event, case.dose, FAST, case_id="X")


def test_two_dimensional_image_is_refused_by_name(case):
    with pytest.raises(InputError, match="event image is 2D"):
        preprocess_case(case.postop, sitk.Image([64, 64], sitk.sitkFloat32), case.dose, FAST)


def test_non_finite_voxels_are_refused_by_name(case):
    event = sitk.GetArrayFromImage(_float(case.event))
    event[10, 10, 10] = np.nan
    image = sitk.GetImageFromArray(event)
    image.CopyInformation(case.event)
    with pytest.raises(InputError, match="event image contains 1 NaN or infinite"):
        preprocess_case(case.postop, image, case.dose, FAST)
    dose = sitk.GetArrayFromImage(case.dose)
    dose[3, 3, 3] = np.inf
    image = sitk.GetImageFromArray(dose)
    image.CopyInformation(case.dose)
    with pytest.raises(InputError, match="dose image contains 1 NaN or infinite"):
        preprocess_case(case.postop, case.event, image, FAST)


def test_dose_in_cgy_is_refused_then_accepted_when_stated(case, case_files, tmp_path):
    from RICENetLib.image_io import write_image

    path = write_image(case.dose * 100.0, tmp_path / "dose_cgy.nii.gz")
    with pytest.raises(InputError, match="dose_cgy.nii.gz has a maximum of .* looks like cGy"):
        preprocess_case(case_files["postop"], case_files["event"], path, FAST)
    stated = preprocess_case(case_files["postop"], case_files["event"], path, FAST.with_updates(dose_unit="cGy"))
    assert stated.info["dose"]["unit_of_input"] == "cGy"
    assert stated.info["dose"]["input_max_gy"] == pytest.approx(float(sitk.GetArrayViewFromImage(case.dose).max()), rel=1e-5)


def test_dose_grid_elsewhere_is_refused_by_name(case):
    dose = sitk.Image(case.dose)
    dose.SetOrigin(tuple(np.array(case.dose.GetOrigin()) + 1000.0))
    with pytest.raises(InputError, match="dose image does not overlap the postop image"):
        preprocess_case(case.postop, case.event, dose, FAST)


def test_singular_direction_is_refused_by_name(case, tmp_path):
    postop = sitk.Image(case.postop)
    postop.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1e-9))  # ITK accepts it; its geometry is still broken
    with pytest.raises(InputError, match="postop image has a singular direction"):
        preprocess_case(postop, case.event, case.dose, FAST)
    header = ("NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 8 8 8\n"
              "space directions: (1,0,0) (0,1,0) (1,0,0)\nkinds: domain domain domain\nendian: little\n"
              "encoding: raw\nspace origin: (0,0,0)\n\n")
    path = tmp_path / "flat_event.nrrd"
    path.write_bytes(header.encode() + np.zeros(512, np.float32).tobytes())
    with pytest.raises(InputError, match="flat_event.nrrd"):
        preprocess_case(case.postop, path, case.dose, FAST)


def test_registration_that_does_not_converge_names_the_files(case_files):
    params = FAST.with_updates(registration=RegistrationParameters(max_iterations=2))
    with pytest.raises(PreprocessingError) as error:
        preprocess_case(case_files["postop"], case_files["event"], case_files["dose"], params, case_id="P7")
    message = str(error.value)
    assert "did not converge" in message and "case P7: event image" in message
    assert str(case_files["event"]) in message and str(case_files["postop"]) in message


def test_wrong_input_type(case):
    with pytest.raises(InputError, match="dose image: expected a SimpleITK image or a file path"):
        preprocess_case(case.postop, case.event, np.zeros((4, 4, 4)), FAST)


# ----------------------------------------------------------------------------- progress


def test_progress_is_monotonic_and_cancel_stops(case):
    seen: list[float] = []
    first = preprocess_case(case.postop, case.event, case.dose, FAST, progress=lambda f, m: seen.append(f))
    again = preprocess_case(case.postop, case.event, case.dose, FAST)
    assert all(np.array_equal(first.arrays[m], again.arrays[m]) for m in MODALITIES), "not reproducible"
    assert seen[0] == 0.0 and seen[-1] == 1.0 and all(b >= a for a, b in zip(seen, seen[1:]))
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        preprocess_case(case.postop, case.event, case.dose, FAST, cancel=cancel)
