"""Truncated, corrupt and non-finite image files, and NIfTI-2: refused by name, or read right."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.cli import main
from RICENetLib.errors import InputError
from RICENetLib.image_io import read_image


def _volume() -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(3).normal(size=(32, 32, 32)).astype(np.float32))
    image.SetSpacing((1.1, 0.9, 2.0))
    image.SetOrigin((-10.0, 5.0, 30.0))
    return image


@pytest.mark.parametrize("suffix, compress", [(".nii.gz", True), (".nii", False), (".nrrd", True),
                                              (".nrrd", False), (".mha", True), (".mha", False)])
@pytest.mark.parametrize("fraction", [0.9, 0.5])
def test_truncated_files_are_refused_as_truncated(tmp_path, suffix, compress, fraction):
    whole = tmp_path / f"whole{suffix}"
    sitk.WriteImage(_volume(), str(whole), compress)
    data = whole.read_bytes()
    cut = tmp_path / f"postop{suffix}"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError, match="is truncated or corrupt") as error:
        read_image(cut)
    assert str(cut) in str(error.value)
    assert read_image(whole).GetSize() == (32, 32, 32)


def test_truncated_nifti_gz_is_refused_by_the_cli(tmp_path, capsys):
    path = tmp_path / "event.nii.gz"
    sitk.WriteImage(_volume(), str(path), True)
    path.write_bytes(path.read_bytes()[: int(0.9 * path.stat().st_size)])
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"Image {path} is truncated or corrupt: its compressed data ends early" in err and "Traceback" not in err


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_damaged_compressed_data_is_refused(tmp_path, suffix):
    path = tmp_path / f"dose{suffix}"
    sitk.WriteImage(_volume(), str(path), True)
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="truncated or corrupt: its compressed data is damaged"):
        read_image(path)


def test_gzip_in_several_members_with_padding_reads(tmp_path):
    path = tmp_path / "whole.nii.gz"
    sitk.WriteImage(_volume(), str(path), True)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]) + b"\0" * 64)
    assert np.array_equal(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(_volume()))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_nifti_voxels_are_seen(tmp_path, value, suffix):
    array = sitk.GetArrayFromImage(_volume())
    array[4, 5, 6] = value
    path = tmp_path / f"dose{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    assert np.all(np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))))  # what SimpleITK 2.5 hands over
    with pytest.raises(InputError, match=f"Image {path} contains 1 NaN or infinite voxel"):
        read_image(path)


def test_nifti_scaling_that_makes_every_voxel_infinite_is_seen(tmp_path):
    import struct

    path = tmp_path / "scaled.nii"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.int16), np.eye(4)), path)
    data = bytearray(path.read_bytes())
    data[112:116] = struct.pack("<f", np.inf)  # scl_slope (nibabel refuses to write it)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="contains 512 NaN or infinite voxel"):
        read_image(path)


def test_nifti2_reads_with_the_geometry_of_the_same_nifti1(tmp_path):
    data = np.random.default_rng(4).normal(size=(10, 12, 14)).astype(np.float32)
    affine = np.array([[0, -1.5, 0, 10], [2.0, 0, 0, -20], [0, 0, 3, 5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "one.nii.gz")
    nib.save(nib.Nifti2Image(data, affine), tmp_path / "two.nii.gz")
    one, two = read_image(tmp_path / "one.nii.gz"), read_image(tmp_path / "two.nii.gz")
    assert two.GetSize() == one.GetSize() == (10, 12, 14)
    assert np.allclose(two.GetSpacing(), one.GetSpacing()) and np.allclose(two.GetOrigin(), one.GetOrigin())
    assert np.allclose(two.GetDirection(), one.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(two), sitk.GetArrayFromImage(one))


def test_nifti2_info_and_truncation(tmp_path, capsys):
    path = tmp_path / "two.nii"
    nib.save(nib.Nifti2Image(np.ones((6, 7, 8), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    assert main(["info", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == [6, 7, 8]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(path)


def test_sheared_nifti2_is_refused(tmp_path):
    affine = np.array([[1.0, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    path = tmp_path / "shear.nii"
    nib.save(nib.Nifti2Image(np.ones((6, 6, 6), np.float32), affine), path)
    with pytest.raises(InputError, match="sheared affine"):
        read_image(path)
