"""Image I/O against real files: pydicom's RTDOSE, DICOM series written by ITK, NIfTI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk

from RICENetLib.cli import main
from RICENetLib.errors import InputError
from RICENetLib.image_io import DOSE_UNITS_KEY, image_info, read_image, read_rtdose, write_image


@pytest.fixture(scope="module")
def rtdose_path() -> Path:
    return Path(pydicom.data.get_testdata_file("rtdose.dcm"))


def test_rtdose_values_are_stored_times_scaling(rtdose_path):
    ds = pydicom.dcmread(rtdose_path)
    image = read_rtdose(rtdose_path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert np.allclose(sitk.GetArrayFromImage(image), expected, rtol=1e-6, atol=0)
    assert image.GetMetaData(DOSE_UNITS_KEY) == str(ds.DoseUnits).upper()


def test_rtdose_geometry(rtdose_path):
    ds = pydicom.dcmread(rtdose_path)
    image = read_image(rtdose_path)
    assert image.GetSize() == (int(ds.Columns), int(ds.Rows), int(ds.NumberOfFrames))
    assert np.allclose(image.GetOrigin(), [float(v) for v in ds.ImagePositionPatient])
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
    assert np.allclose(image.GetSpacing(), [float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]), offsets[1] - offsets[0]])
    iop = [float(v) for v in ds.ImageOrientationPatient]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    assert np.allclose(direction[:, 0], iop[:3]) and np.allclose(direction[:, 1], iop[3:])
    # The last frame sits at the last GridFrameOffsetVector entry along the normal.
    last = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))
    assert np.isclose(last[2], float(ds.ImagePositionPatient[2]) + offsets[-1])


def _rewrite_rtdose(src: Path, dst: Path, **changes) -> Path:
    ds = pydicom.dcmread(src)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(dst)
    return dst


def test_rtdose_decreasing_offsets_flip_the_normal(rtdose_path, tmp_path):
    ds = pydicom.dcmread(rtdose_path)
    offsets = [-float(v) for v in ds.GridFrameOffsetVector]
    path = _rewrite_rtdose(rtdose_path, tmp_path / "flipped.dcm", GridFrameOffsetVector=offsets)
    image = read_image(path)
    assert image.GetSpacing()[2] > 0
    assert np.allclose(np.array(image.GetDirection()).reshape(3, 3)[:, 2], [0, 0, -1])
    last = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))
    assert np.isclose(last[2], float(ds.ImagePositionPatient[2]) + offsets[-1])


def test_rtdose_uneven_frames_refused(rtdose_path, tmp_path):
    ds = pydicom.dcmread(rtdose_path)
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    offsets[-1] += 2.0
    path = _rewrite_rtdose(rtdose_path, tmp_path / "uneven.dcm", GridFrameOffsetVector=offsets)
    with pytest.raises(InputError, match="unevenly spaced"):
        read_image(path)


def test_info_cli_reports_rtdose(rtdose_path, capsys):
    assert main(["info", str(rtdose_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modality"] == "RTDOSE"
    assert info["dose_grid_scaling"] == pytest.approx(float(pydicom.dcmread(rtdose_path).DoseGridScaling))
    assert info["coordinate_system"] == "LPS" and len(info["direction"]) == 9


def _oblique_image() -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(size=(7, 9, 11)).astype(np.float32))
    image.SetSpacing((0.7, 1.3, 2.9))
    image.SetOrigin((-12.5, 33.25, 101.0))
    angle = np.deg2rad(17)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(tuple((rotation @ np.diag([1, -1, 1])).ravel()))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry_exactly(tmp_path, suffix):
    image = _oblique_image()
    path = write_image(image, tmp_path / f"img{suffix}")
    back = read_image(path)
    assert back.GetSize() == image.GetSize()
    assert np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6)
    assert np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-5)
    assert np.allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def _write_dicom_series(image: sitk.Image, folder: Path, series_uid: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR",
            "0020|000e": series_uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in direction[0:9:3] + direction[1:9:3]),
            "0020|0013": str(k + 1),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{series_uid[-1]}slice{k:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series_folder_and_file(tmp_path):
    image = sitk.GetImageFromArray(np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10))
    image.SetSpacing((0.9, 0.9, 2.5))
    image.SetOrigin((-40.0, 20.0, 7.5))
    _write_dicom_series(image, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.2")
    for source in (tmp_path / "series", tmp_path / "series" / "s2slice003.dcm"):
        back = read_image(source)
        assert back.GetSize() == image.GetSize()
        assert np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-4)
        assert np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_two_series_in_one_folder_is_an_error(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((3, 4, 4), dtype=np.int16))
    _write_dicom_series(image, tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.3")
    _write_dicom_series(image, tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.4")
    with pytest.raises(InputError, match="DICOM series"):
        read_image(tmp_path / "mixed")


@pytest.mark.parametrize(
    "content, message",
    [(b"not an image at all", "could not be read"), (b"", "could not be read")],
)
def test_unreadable_image_names_the_file(tmp_path, content, message):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nothing.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported format"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM image series"):
        read_image(tmp_path / "empty")


def test_2d_and_nan_images_refused(tmp_path):
    flat = sitk.GetImageFromArray(np.zeros((5, 5), dtype=np.float32))
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match="2D"):
        read_image(tmp_path / "flat.nii.gz")
    bad = np.zeros((4, 4, 4), dtype=np.float32)
    bad[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(bad), str(tmp_path / "nan.mha"))
    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / "nan.mha")


def test_image_info_of_nifti(tmp_path):
    path = write_image(_oblique_image(), tmp_path / "x.nii.gz")
    info = image_info(path)
    assert info["size"] == [11, 9, 7] and "modality" not in info
    assert info["min"] < 0 < info["max"]


def test_singular_direction_gets_the_reason(tmp_path):
    path = tmp_path / "singular.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)), str(path))
    text = path.read_bytes().replace(b"space directions: (1,0,0) (0,1,0) (0,0,1)", b"space directions: (1,0,0) (1,0,0) (0,0,1)")
    path.write_bytes(text)
    with pytest.raises(InputError, match="determinant is 0") as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_written_files_have_ordinary_permissions(tmp_path):
    import os

    path = write_image(_oblique_image(), tmp_path / "shared.nii.gz")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_write_image_refuses_a_short_nifti_on_a_full_disk(tmp_path):
    """ITK's NIfTI writer only prints 'wrote only N of M bytes' when the disk is full; write_image must raise.

    A child process with a 16 KB file-size limit (SIGXFSZ ignored, so writes fail with EFBIG as on a full disk)."""
    import subprocess
    import sys

    target = tmp_path / "out" / "image.nii.gz"
    code = f"""
import errno, resource, signal, numpy as np, SimpleITK as sitk
from RICENetLib.image_io import write_image
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32))
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
try:
    write_image(image, {str(target)!r})
except OSError as error:
    print("REFUSED:", errno.errorcode[error.errno], error.filename)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"REFUSED: EFBIG {target}"  # the file itself, not its temporary
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing half-written, no temporary


def test_info_on_a_folder_without_dicom_prints_no_itk_internals(tmp_path, capfd):
    """GDCM's "No Series were found" warning (with ITK's source path) is not shown: only the clear error."""
    (tmp_path / "notes.txt").write_text("not DICOM\n", encoding="utf-8")
    assert main(["info", str(tmp_path)]) == 2
    captured = capfd.readouterr()
    assert f"Folder {tmp_path} holds no DICOM image series." in captured.err
    assert "GDCM" not in captured.err + captured.out and ".cxx" not in captured.err
    assert sitk.ProcessObject.GetGlobalWarningDisplay(), "ITK's warnings are on again afterwards"
