"""Skull stripping backends against the synthetic brain mask (RICENetLib.skull_strip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib import skull_strip as strip_module
from RICENetLib.errors import PreprocessingError
from RICENetLib.skull_strip import backend_status, dice, skull_strip
from RICENetLib.synthetic import generate_case


@pytest.fixture(scope="module")
def case():
    """3 mm synthetic head (skull, scalp, CSF, a resection cavity with an enhancing rim)."""
    return generate_case("BET", "rice", seed=8, size=80)


@pytest.mark.skipif(backend_status()["deepbet"] is not None, reason="deepbet is not installed")
def test_deepbet_matches_the_synthetic_brain(case):
    mask = skull_strip(case.postop, "deepbet", name="postop image")
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == case.postop.GetSize() and mask.GetOrigin() == case.postop.GetOrigin()
    score = dice(mask, case.brain_mask)
    print(f"deepbet Dice vs synthetic brain mask (3 mm head): {score:.4f}")
    assert score >= 0.95


@pytest.mark.skipif(backend_status()["deepbet"] is not None, reason="deepbet is not installed")
def test_deepbet_on_a_blank_image_names_it():
    blank = sitk.Image([40, 40, 40], sitk.sitkFloat32)
    blank.SetSpacing((4.0, 4.0, 4.0))
    with pytest.raises(PreprocessingError, match="postop image blank.nii"):
        skull_strip(blank, "deepbet", name="postop image blank.nii")


def test_deepbet_refuses_modified_weights(monkeypatch):
    if backend_status()["deepbet"] is not None:
        pytest.skip("deepbet is not installed")
    from deepbet.utils import DATA_PATH

    model = str((Path(DATA_PATH) / "models" / "model.pt").resolve())
    monkeypatch.setattr(strip_module, "_deepbet_model", None)
    monkeypatch.setattr(strip_module, "_record_digests", lambda name: {model: "0" * 64})
    with pytest.raises(PreprocessingError, match="modified"):
        strip_module._deepbet_extractor()


def test_none_backend_takes_the_non_zero_voxels(case):
    stripped = sitk.Mask(case.postop, case.brain_mask)
    mask = skull_strip(stripped, "none", name="postop image")
    assert dice(mask, case.brain_mask) > 0.99


def test_empty_mask_is_an_error_naming_the_image(case):
    blank = sitk.Image(case.postop.GetSize(), sitk.sitkInt16)
    blank.CopyInformation(case.postop)
    with pytest.raises(PreprocessingError, match="postop image p.nii.gz.*0 ml of brain"):
        skull_strip(blank, "none", name="postop image p.nii.gz")


@pytest.mark.skipif(backend_status()["hd-bet"] is None, reason="HD-BET and its weights are installed here")
def test_hdbet_missing_says_what_is_missing(case):
    with pytest.raises(PreprocessingError, match="backend 'hd-bet' cannot run: .*(HD_BET|weights)"):
        skull_strip(case.postop, "hd-bet", name="postop image")


def test_unknown_backend(case):
    with pytest.raises(PreprocessingError, match="Unknown skull-stripping backend 'bet2'"):
        skull_strip(case.postop, "bet2")


def test_dice():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(3), np.zeros(3)) == 1.0


def test_nibabel_view_keeps_voxels_and_geometry():
    """deepbet sees the image through nibabel (RAS): same voxel, same physical point, any orientation."""
    array = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 1.3, 2.0))
    image.SetOrigin((12.0, -7.0, 30.0))
    image = sitk.PermuteAxes(sitk.Flip(image, [True, False, True]), [2, 0, 1])
    image.SetDirection(tuple((np.array(sitk.Euler3DTransform((0, 0, 0), 0.2, -0.3, 0.1).GetMatrix()).reshape(3, 3)
                              @ np.array(image.GetDirection()).reshape(3, 3)).ravel()))
    nifti = strip_module._to_nibabel(image)
    data = np.asarray(nifti.dataobj)
    index = (3, 1, 4)  # (x, y, z) in ITK order = (i, j, k) in nibabel order
    assert data[index] == sitk.GetArrayViewFromImage(image)[index[::-1]]
    ras = nifti.affine @ np.array([*index, 1.0])
    lps = image.TransformIndexToPhysicalPoint(index)
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]])
