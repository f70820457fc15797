"""DICOM MR series written with pydicom: regular ones read exactly, irregular ones refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_data import FRAME_UID, PATIENT, write_enhanced_mr, write_mr_series

from RICENetLib.cli import main
from RICENetLib.errors import InputError
from RICENetLib.image_io import FRAME_OF_REFERENCE_KEY, PATIENT_ID_KEY, read_image

EVEN = [2.5 * k for k in range(8)]


def test_regular_series_reads_with_its_spacing_and_identity(tmp_path):
    write_mr_series(tmp_path / "mr", EVEN, spacing=0.8)
    image = read_image(tmp_path / "mr")
    assert image.GetSize() == (64, 64, 8)
    assert np.allclose(image.GetSpacing(), (0.8, 0.8, 2.5))
    assert np.allclose(image.GetOrigin(), (-32.0, -32.0, 0.0))
    assert image.GetMetaData(PATIENT_ID_KEY) == PATIENT
    assert image.GetMetaData(FRAME_OF_REFERENCE_KEY) == FRAME_UID
    assert sitk.GetArrayViewFromImage(image)[5, 0, 0] == 500  # slice order follows the positions


def test_missing_slice_is_refused_with_the_gap(tmp_path):
    positions = EVEN[:4] + EVEN[5:]  # slice at 10 mm missing
    write_mr_series(tmp_path / "mr", positions, description="AX T1 POST")
    with pytest.raises(InputError) as error:
        read_image(tmp_path / "mr")
    message = str(error.value)
    assert "'AX T1 POST'" in message and str(tmp_path / "mr") in message
    assert "1 missing slice(s)" in message and "7.50 and 12.50 mm" in message and "5.00 mm apart" in message


def test_uneven_spacing_is_refused(tmp_path):
    positions = [0.0, 2.5, 5.0, 7.5, 11.0, 13.5, 16.0]
    write_mr_series(tmp_path / "mr", positions)
    with pytest.raises(InputError, match=r"not evenly spaced \(uneven slice spacing\).*7.50 and 11.00 mm.*up to \d"):
        read_image(tmp_path / "mr" / "slice002.dcm")  # a file of the series: the same check


def test_two_slices_at_one_position_are_refused(tmp_path):
    write_mr_series(tmp_path / "mr", EVEN[:5] + [EVEN[4]] + EVEN[5:])
    with pytest.raises(InputError, match=r"two slices at one position \(10.00 mm along the slice normal\)"):
        read_image(tmp_path / "mr")


def test_positions_are_taken_along_the_slice_normal_for_oblique_series(tmp_path):
    angle = np.deg2rad(20)
    row, column = np.array([1.0, 0, 0]), np.array([0, np.cos(angle), np.sin(angle)])
    normal = np.cross(row, column)

    def oblique(k, ds):
        ds.ImageOrientationPatient = [*row, *column]
        ds.ImagePositionPatient = [float(v) for v in 3.0 * k * normal]

    write_mr_series(tmp_path / "mr", range(6), tweak=oblique)
    assert np.isclose(read_image(tmp_path / "mr").GetSpacing()[2], 3.0)

    def gap(k, ds):
        oblique(k if k < 3 else k + 1, ds)

    write_mr_series(tmp_path / "gap", range(6), tweak=gap)
    with pytest.raises(InputError, match="1 missing slice"):
        read_image(tmp_path / "gap")


def test_mixed_orientations_and_sizes_are_refused(tmp_path):
    def tilted(k, ds):
        if k == 3:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.996195, 0.0871557]

    write_mr_series(tmp_path / "tilt", EVEN, tweak=tilted)
    with pytest.raises(InputError, match="mixes slice orientations"):
        read_image(tmp_path / "tilt")

    def smaller(k, ds):
        if k == 2:
            ds.Rows, ds.Columns = 32, 32
            ds.PixelData = np.zeros((32, 32), np.int16).tobytes()

    write_mr_series(tmp_path / "size", EVEN, tweak=smaller)
    with pytest.raises(InputError, match="mixes slice sizes"):
        read_image(tmp_path / "size")


def test_slice_without_position_is_refused_by_file(tmp_path):
    def no_position(k, ds):
        if k == 1:
            del ds.ImagePositionPatient

    paths = write_mr_series(tmp_path / "mr", EVEN, tweak=no_position)
    with pytest.raises(InputError, match=f"file {paths[1]} lacks a valid ImagePositionPatient"):
        read_image(tmp_path / "mr")


def test_enhanced_mr_reads_like_the_same_classic_series(tmp_path, capsys):
    positions = [5.0, 0.0, 2.5, 7.5, 10.0]  # frames out of order: sorted along the normal
    classic = read_image(write_mr_series(tmp_path / "classic", positions, spacing=0.8)[0].parent)
    path = write_enhanced_mr(tmp_path / "enh" / "enhanced.dcm", positions, spacing=0.8)
    for source in (path, path.parent):
        image = read_image(source)
        assert image.GetSize() == classic.GetSize() == (64, 64, 5)
        assert np.allclose(image.GetSpacing(), classic.GetSpacing())
        assert np.allclose(image.GetOrigin(), classic.GetOrigin())
        assert np.allclose(image.GetDirection(), classic.GetDirection())
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(classic))
        assert image.GetMetaData(FRAME_OF_REFERENCE_KEY) == FRAME_UID
    assert main(["info", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == [64, 64, 5]  # was "only 1 slice"


def test_enhanced_mr_rescale_and_irregular_frames(tmp_path):
    scaled = read_image(write_enhanced_mr(tmp_path / "s.dcm", EVEN[:4], slope=2.0, intercept=-100.0))
    assert sitk.GetArrayViewFromImage(scaled)[1, 0, 1] == pytest.approx(2.0 * (100 + 1) - 100.0)
    with pytest.raises(InputError, match=r"Enhanced MR file .*gap.dcm .*not evenly spaced \(1 missing slice\(s\)\): "
                                         r".*frame 3 and frame 4 at 5.00 and 10.00 mm"):
        read_image(write_enhanced_mr(tmp_path / "gap.dcm", [0.0, 2.5, 5.0, 10.0, 12.5]))
    with pytest.raises(InputError, match="two slices at one position.*echoes, phases, time points"):
        read_image(write_enhanced_mr(tmp_path / "echoes.dcm", [0.0, 2.5, 0.0, 2.5]))


def test_multiframe_without_per_frame_geometry_gets_a_clear_message(tmp_path, capsys):
    path = write_enhanced_mr(tmp_path / "enh" / "flat.dcm", EVEN[:4], per_frame_geometry=False)
    for source in (path, path.parent):
        with pytest.raises(InputError, match="4 frames but no per-frame geometry .*Export the series as classic "
                                             "single-frame images"):
            read_image(source)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no per-frame geometry" in err and "Traceback" not in err


def test_multiframe_file_inside_a_classic_series_is_refused(tmp_path):
    import pydicom

    paths = write_mr_series(tmp_path / "mr", EVEN)
    uid = pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID
    enhanced = write_enhanced_mr(tmp_path / "mr" / "zz_enhanced.dcm", [30.0, 32.5], series_uid=uid)
    with pytest.raises(InputError, match=f"DICOM file {enhanced} is an Enhanced MR image \\(2 frames in one file\\) "
                                         "in a series of 9 files; give that file alone"):
        read_image(tmp_path / "mr")
    assert read_image(enhanced).GetSize() == (64, 64, 2)


def test_info_on_a_series_beside_a_truncated_dicom_file(tmp_path, capsys):
    paths = write_mr_series(tmp_path / "mr", EVEN)
    data = paths[3].read_bytes()
    (tmp_path / "mr" / "zz_broken.dcm").write_bytes(data[: len(data) // 2])  # GDCM cannot parse it: left out
    assert main(["info", str(paths[0])]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == [64, 64, 8]


def test_info_on_a_series_with_a_foreign_slice_names_the_series(tmp_path, capsys):
    def foreign(k, ds):
        if k == 7:  # a slice of another size that shares the series UID
            ds.Rows, ds.Columns = 32, 32
            ds.PixelData = np.zeros((32, 32), np.int16).tobytes()
            ds.ImagePositionPatient = [-32.0, -32.0, 100.0]

    write_mr_series(tmp_path / "mr", EVEN, description="AX T1", tweak=foreign)
    assert main(["info", str(tmp_path / "mr" / "slice000.dcm")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DICOM series 'AX T1'" in err and "mixes slice sizes (64×64" in err
