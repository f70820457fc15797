"""Rigid registration: known poses recovered, failures named (RICENetLib.registration)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.errors import Cancelled, InputError, PreprocessingError
from RICENetLib.registration import (
    RegistrationParameters,
    ants_available,
    mean_displacement_mm,
    register_rigid,
    rotation_angle_deg,
    transform_matrix,
)
from RICENetLib.resampling import Geometry
from RICENetLib.synthetic import generate_case


def _affine(transform: sitk.Transform) -> sitk.AffineTransform:
    matrix, translation = transform_matrix(transform)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(tuple(matrix.ravel()))
    affine.SetTranslation(tuple(translation))
    return affine


def repose(case, angle_deg: float, shift_mm: float, seed: int):
    """The case's event MRI moved so that it sits ``angle_deg``/``shift_mm`` from the post-op MRI.

    Returns the new event image and the true transform (post-op points →
    new event points): the ground truth the registration must recover.
    """
    rng = np.random.default_rng(seed)
    mask = sitk.GetArrayViewFromImage(case.brain_mask)
    centre = case.brain_mask.TransformContinuousIndexToPhysicalPoint(
        tuple(float(v) for v in np.argwhere(mask)[:, ::-1].mean(0)))
    axis = rng.standard_normal(3)
    shift = rng.standard_normal(3)
    wanted = sitk.VersorRigid3DTransform()
    wanted.SetCenter(centre)
    wanted.SetRotation(tuple(axis / np.linalg.norm(axis)), float(np.radians(angle_deg)))
    wanted.SetTranslation(tuple(shift / np.linalg.norm(shift) * shift_mm))
    # new event point q shows the head at post-op point wanted⁻¹(q), i.e. old event point F(wanted⁻¹(q))
    to_old_event = sitk.CompositeTransform([case.event_from_reference, wanted.GetInverse()])
    event = sitk.Resample(case.event, case.event, to_old_event, sitk.sitkLinear, 0.0, case.event.GetPixelID())
    return event, _affine(wanted)


@pytest.fixture(scope="module")
def case():
    """A synthetic case at 3 mm voxels (70×80×70): post-op with cavity, event with a lesion."""
    return generate_case("REG", "recurrence", seed=3, size=80)


@pytest.fixture(scope="module")
def brain_points(case):
    mask = sitk.GetArrayFromImage(case.brain_mask)
    return Geometry.from_image(case.brain_mask).index_to_point(np.argwhere(mask)[:, ::-1].astype(float))


@pytest.mark.parametrize("angle, shift", [(15.0, 20.0), (10.0, 8.0), (3.0, 20.0)])
def test_known_pose_is_recovered_within_1mm(case, brain_points, angle, shift):
    event, truth = repose(case, angle, shift, seed=int(angle * 10 + shift))
    result = register_rigid(case.postop, event, reference_name="postop", moving_name="event")
    error = mean_displacement_mm(result.transform, truth, brain_points)
    assert error < 1.0, f"mean displacement error {error:.2f} mm over the brain at {angle}°/{shift} mm"
    assert abs(result.rotation_deg - angle) < 1.0
    assert result.converged and result.metric < result.initial_metric


def test_synthetic_pose_and_resampling_convention(case, brain_points):
    """The transform maps post-op points to event points: resampling the event through it matches the post-op."""
    result = register_rigid(case.postop, case.event)
    assert mean_displacement_mm(result.transform, case.event_from_reference, brain_points) < 1.0
    moved = sitk.Resample(case.lesion_mask, case.postop, result.transform, sitk.sitkNearestNeighbor, 0)
    truth = sitk.Resample(case.lesion_mask, case.postop, case.event_from_reference, sitk.sitkNearestNeighbor, 0)
    a, b = sitk.GetArrayFromImage(moved) > 0, sitk.GetArrayFromImage(truth) > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.8


def test_same_inputs_give_the_same_transform_bit_for_bit(case):
    first = register_rigid(case.postop, case.event)
    second = register_rigid(case.postop, case.event)
    assert first.transform.GetParameters() == second.transform.GetParameters()
    assert first.metric == second.metric


def test_running_out_of_iterations_is_an_error_naming_both_images(case):
    params = RegistrationParameters(max_iterations=2)
    with pytest.raises(PreprocessingError) as error:
        register_rigid(case.postop, case.event, params, reference_name="postop image p.nii.gz",
                       moving_name="event image e.nii.gz")
    message = str(error.value)
    assert "did not converge" in message and "e.nii.gz" in message and "p.nii.gz" in message


def test_unrelated_image_is_an_error(case):
    noise = sitk.GetImageFromArray(np.random.default_rng(0).random(sitk.GetArrayViewFromImage(case.event).shape).astype(np.float32))
    noise.CopyInformation(case.event)
    with pytest.raises(PreprocessingError, match="event image.*did not converge.*too little information"):
        register_rigid(case.postop, noise, RegistrationParameters(max_iterations=30), moving_name="event image")


def test_unchecked_result_reports_non_convergence(case):
    result = register_rigid(case.postop, case.event, RegistrationParameters(max_iterations=2), check=False)
    assert not result.converged
    assert result.to_dict()["iterations"] == 2


def test_cancel_stops_the_optimiser(case):
    with pytest.raises(Cancelled):
        register_rigid(case.postop, case.event, cancel=lambda: True)


def test_two_dimensional_input_is_refused(case):
    flat = sitk.Image([32, 32], sitk.sitkFloat32)
    with pytest.raises(InputError, match="event slice is 2D"):
        register_rigid(case.postop, flat, moving_name="event slice")


def test_parameters_round_trip_and_validation():
    params = RegistrationParameters(shrink_factors=(2, 1), smoothing_sigmas_mm=(1.0, 0.0), seed=4)
    assert RegistrationParameters.from_dict(params.to_dict()) == params
    with pytest.raises(InputError, match="smoothing_sigmas_mm"):
        RegistrationParameters(shrink_factors=(4, 2, 1), smoothing_sigmas_mm=(1.0,)).validate()
    with pytest.raises(InputError, match="Unknown registration parameter"):
        RegistrationParameters.from_dict({"bins": 32})
    with pytest.raises(InputError, match="backend"):
        RegistrationParameters(backend="elastix").validate()


def test_rotation_angle_of_known_transform():
    t = sitk.Euler3DTransform((0, 0, 0), 0.0, 0.0, np.radians(12.0), (1, 2, 3))
    assert rotation_angle_deg(t) == pytest.approx(12.0, abs=1e-6)


@pytest.mark.skipif(ants_available(), reason="ANTsPy is installed here")
def test_ants_backend_without_antspy_names_what_is_missing(case):
    with pytest.raises(PreprocessingError, match="antspyx"):
        register_rigid(case.postop, case.event, RegistrationParameters(backend="ants"))


@pytest.mark.skipif(not ants_available(), reason="ANTsPy (antspyx) is not installed")
def test_ants_backend_recovers_the_pose(case, brain_points):  # pragma: no cover - only where antspyx exists
    event, truth = repose(case, 10.0, 10.0, seed=1)
    result = register_rigid(case.postop, event, RegistrationParameters(backend="ants"))
    assert mean_displacement_mm(result.transform, truth, brain_points) < 1.0
