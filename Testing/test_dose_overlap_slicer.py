"""The lesion from a Slicer segment (real slicer-core nodes) and the dose figures in the module's logic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")

import vtk  # noqa: E402
import vtk.util.numpy_support  # noqa: E402

from RICENetLib import mrml  # noqa: E402
from RICENetLib.dose_overlap import compute_dose_overlap  # noqa: E402
from RICENetLib.errors import InputError  # noqa: E402
from RICENetLib.resampling import Geometry  # noqa: E402
from RICENetLib.slicer_logic import ClassificationLogic, ClassificationSettings, untrained_bundle  # noqa: E402


def oblique_image(shape=(12, 16, 20)) -> sitk.Image:
    """An oblique, anisotropic grid (30° about z), so that a mix-up of axes or of LPS/RAS shows."""
    image = sitk.Image(list(shape[::-1]), sitk.sitkUInt8)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetOrigin((-10.0, 5.0, 7.0))
    return image


def labelmap_of(mask: np.ndarray, image: sitk.Image, first_index=(0, 0, 0)) -> "slicer.vtkOrientedImageData":
    """``mask`` (z, y, x) as oriented image data whose extent starts at ``first_index`` (as segments' often do)."""
    labelmap = slicer.vtkOrientedImageData()
    i, j, k = first_index
    labelmap.SetExtent(i, i + mask.shape[2] - 1, j, j + mask.shape[1] - 1, k, k + mask.shape[0] - 1)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    vtk.util.numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())[:] = mask.ravel()
    shift = np.eye(4)
    shift[:3, 3] = -np.array(first_index, dtype=float)  # IJK first_index is the image's voxel 0
    labelmap.SetImageToWorldMatrix(mrml.vtk_matrix(mrml.ijk_to_ras_from_image(image) @ shift))
    return labelmap


def lesion_points(image: sitk.Image) -> np.ndarray:
    """Sorted LPS points of the nonzero voxels."""
    zyx = np.argwhere(sitk.GetArrayViewFromImage(image) != 0)
    points = Geometry.from_image(image).index_to_point(zyx[:, ::-1].astype(float))
    return points[np.lexsort(points.T[::-1])]


def test_segment_to_image_keeps_geometry_label_and_parent_transform():
    scene = slicer.vtkMRMLScene()
    image = oblique_image()
    first = np.zeros((12, 16, 20), np.uint8)
    first[2:5, 3:9, 4:10] = 1
    second = np.zeros_like(first)
    second[7:10, 10:14, 12:18] = 1
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "lesions")
    id_a = node.AddSegmentFromBinaryLabelmapRepresentation(labelmap_of(first, image, (3, 1, 2)), "necrosis", [1, 0, 0])
    id_b = node.AddSegmentFromBinaryLabelmapRepresentation(labelmap_of(second, image, (3, 1, 2)), "enhancing", [0, 1, 0])
    node.GetSegmentation().CollapseBinaryLabelmaps(False)  # one shared labelmap, a label value per segment
    assert node.GetSegmentation().GetNumberOfLayers() == 1 and node.GetSegmentation().GetSegment(id_b).GetLabelValue() == 2

    def expected(mask: np.ndarray) -> np.ndarray:
        reference = sitk.GetImageFromArray(mask)
        reference.CopyInformation(image)
        return lesion_points(reference)

    got = mrml.segment_to_image(node, id_b)
    assert sitk.GetArrayViewFromImage(got).sum() == second.sum()
    np.testing.assert_allclose(got.GetSpacing(), image.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(got.GetDirection(), image.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(lesion_points(got), expected(second), atol=1e-6)
    np.testing.assert_allclose(lesion_points(mrml.lesion_to_image(node, id_a)), expected(first), atol=1e-6)

    # Under a linear transform (10 mm towards the patient's right... in RAS +x = LPS -x), as Slicer shows it.
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    matrix = np.eye(4)
    matrix[0, 3] = 10.0
    transform.SetMatrixTransformToParent(mrml.vtk_matrix(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(lesion_points(mrml.segment_to_image(node, id_b)), expected(second) + [-10.0, 0.0, 0.0],
                               atol=1e-6)

    with pytest.raises(InputError, match="'lesions' holds 2 segments; choose the lesion's segment"):
        mrml.segment_to_image(node)
    with pytest.raises(InputError, match="has no segment 'nope'"):
        mrml.segment_to_image(node, "nope")
    empty = node.GetSegmentation().AddEmptySegment("empty", "empty")
    with pytest.raises(InputError, match="Segment 'empty' of 'lesions' is empty"):
        mrml.segment_to_image(node, empty)

    # A labelmap volume node is a lesion too (nonzero = lesion).
    volume = sitk.GetImageFromArray(first * 4)
    volume.CopyInformation(image)
    labelmap_node = mrml.image_to_volume(volume, scene, name="lesion label", class_name="vtkMRMLLabelMapVolumeNode")
    np.testing.assert_allclose(lesion_points(mrml.lesion_to_image(labelmap_node)), expected(first), atol=1e-6)


def test_logic_shows_and_exports_the_dose_figures(small_case, tmp_path):
    scene = slicer.vtkMRMLScene()
    nodes = {m: mrml.image_to_volume(getattr(small_case, m), scene, name=m) for m in ("postop", "event", "dose")}
    # The lesion as the user sees it: the true lesion moved onto the post-op grid (Slicer's world = post-op frame).
    lesion = sitk.Resample(small_case.lesion_mask, small_case.postop, small_case.event_from_reference,
                           sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    assert sitk.GetArrayViewFromImage(lesion).any()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "outline")
    array = sitk.GetArrayFromImage(lesion)
    segment_id = segmentation.AddSegmentFromBinaryLabelmapRepresentation(labelmap_of(array, lesion), "lesion", [1, 1, 0])
    segmentation.GetSegmentation().AddEmptySegment("other", "other")

    bundle = untrained_bundle(tmp_path / "bundle", n_folds=2, input_size=32, spacing_mm=6.0)
    settings = ClassificationSettings(bundle=str(bundle), skull_strip="none", occlusion="quick", device="cpu")
    logic = ClassificationLogic(scene)
    job = logic.prepare(nodes["postop"], nodes["event"], nodes["dose"], settings, segmentation, segment_id)
    prediction = logic.compute(job)
    result = logic.show(job, prediction)
    direct = compute_dose_overlap(prediction.occlusion, small_case.dose, 60.0, lesion=lesion)
    table = {row["quantity"]: row["value"] for row in mrml.table_rows(scene.GetNodeByID(result.node_ids["dose_overlap"]))}
    assert table == dict(direct.rows())
    assert table["lesion D95"] == f"{direct.lesion.d95_gy:.1f} Gy"

    paths = logic.export(job, prediction, tmp_path / "report")
    data = json.loads(paths["prediction"].read_text(encoding="utf-8"))
    assert data["dose_overlap"]["lesion"]["name"] == "Lesion 'lesion' of 'outline'"
    # The exported report has the same lesion: outlined, and a row of slices through it (unless the peak is its voxel).
    assert "Dashed outline: the lesion mask." in paths["report"].read_text(encoding="utf-8")
    assert data["overview"]["slices"][-1]["point_lps_mm"] == pytest.approx(data["dose_overlap"]["lesion"]["centre_lps"],
                                                                          abs=0.01) or len(data["overview"]["slices"]) == 1
    assert data["dose_overlap"]["lesion"]["d95_gy"] == pytest.approx(direct.lesion.d95_gy, rel=1e-5)

    # Without a heatmap and a lesion the table goes, as the heatmap does.
    plain = logic.run(nodes["postop"], nodes["event"], nodes["dose"], ClassificationSettings(
        bundle=str(bundle), skull_strip="none", occlusion="none", device="cpu"))
    assert "dose_overlap" not in plain.node_ids and scene.GetNodeByID(result.node_ids["dose_overlap"]) is None
    with pytest.raises(InputError, match="Segment 'other' of 'outline' is empty"):
        logic.prepare(nodes["postop"], nodes["event"], nodes["dose"], settings, segmentation, "other")
