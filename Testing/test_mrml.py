"""The MRML bridge on real MRML nodes (slicer-core): geometry, transforms, result nodes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from RICENetLib import mrml  # noqa: E402
from RICENetLib.errors import InputError  # noqa: E402


def rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=float)
    axis /= np.linalg.norm(axis)
    return np.array(sitk.VersorTransform(tuple(axis), math.radians(degrees)).GetMatrix()).reshape(3, 3)


def make_image(size=(13, 11, 9), spacing=(1.2, 0.9, 2.5), origin=(10.0, -20.0, 35.0), direction=None, seed=0):
    rng = np.random.default_rng(seed)
    array = rng.normal(100, 30, size=size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    return image


OBLIQUE = rotation((1, 2, 3), 27.0)
FLIPPED = np.diag([1.0, -1.0, 1.0]) @ rotation((0, 0, 1), 90.0)  # det = -1 (left-handed voxel axes)
DIRECTIONS = {"identity": np.eye(3), "oblique": OBLIQUE, "flipped": FLIPPED, "oblique-flipped": OBLIQUE @ np.diag([-1.0, 1, 1])}


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tol=1e-9):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


def ras_of_index(node, index) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array(matrix.MultiplyPoint((*[float(i) for i in index], 1.0))[:3])


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


# --------------------------------------------------------------------------- volumes


@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
def test_round_trip_keeps_voxels_and_geometry(scene, kind):
    image = make_image(direction=DIRECTIONS[kind])
    node = mrml.image_to_volume(image, scene, name=kind)
    back = mrml.volume_to_image(node)
    assert_same_geometry(image, back)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(back))
    # Slicer's own IJK→RAS puts each voxel where ITK does, with L and P negated.
    for index in [(0, 0, 0), (12, 0, 0), (3, 7, 5), (12, 10, 8)]:
        l, p, s = image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(ras_of_index(node, index), (-l, -p, s), atol=1e-9)


@pytest.mark.parametrize("kind", ["oblique", "flipped"])
def test_geometry_agrees_with_slicers_own_nrrd_reader(scene, tmp_path, kind):
    """Slicer's file reader (vtkMRMLVolumeArchetypeStorageNode) and the bridge put every voxel at the same RAS point.

    (Slicer's reader turns a left-handed voxel grid right-handed by reversing
    the slice order, so for "flipped" the arrays differ but the voxels agree.)
    """
    image = make_image(direction=DIRECTIONS[kind])
    path = tmp_path / f"{kind}.nrrd"
    sitk.WriteImage(image, str(path))
    loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(loaded)
    ours = mrml.image_to_volume(image, scene, name="ours")
    read_back = mrml.volume_to_image(loaded)
    ras_to_ijk = vtk.vtkMatrix4x4()
    loaded.GetRASToIJKMatrix(ras_to_ijk)
    loaded_array = slicer.util.arrayFromVolume(loaded)
    array = sitk.GetArrayViewFromImage(image)
    for index in [(0, 0, 0), (12, 0, 0), (3, 7, 5), (0, 10, 8), (12, 10, 8)]:
        ijk = np.round(ras_to_ijk.MultiplyPoint((*ras_of_index(ours, index), 1.0))[:3]).astype(int)
        assert loaded_array[ijk[2], ijk[1], ijk[0]] == array[index[2], index[1], index[0]]
    resampled = sitk.Resample(read_back, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(resampled), array)


def test_integer_types_and_update_in_place(scene):
    image = sitk.Cast(make_image(), sitk.sitkInt16)
    node = mrml.image_to_volume(image, scene, name="ct", role="test", key="a")
    again = mrml.image_to_volume(sitk.Cast(make_image(seed=1), sitk.sitkInt16), scene, name="ct", role="test", key="a")
    assert again is node
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    assert mrml.volume_to_image(node).GetPixelID() == sitk.sitkInt16
    big = sitk.GetImageFromArray(np.arange(2 * 3 * 4, dtype=np.int64).reshape(2, 3, 4))
    assert mrml.volume_to_image(mrml.image_to_volume(big, scene, name="big")).GetPixelID() == sitk.sitkInt32


def test_nonzero_extent_is_honoured(scene):
    image = make_image(direction=OBLIQUE)
    node = mrml.image_to_volume(image, scene, name="cropped")
    # Crop in VTK terms: the same voxels addressed from extent (2, 1, 3) on.
    clip = vtk.vtkImageClip()
    clip.SetInputData(node.GetImageData())
    clip.SetOutputWholeExtent(2, 12, 1, 10, 3, 8)
    clip.ClipDataOn()
    clip.Update()
    node.SetAndObserveImageData(clip.GetOutput())
    back = mrml.volume_to_image(node)
    expected = image[2:, 1:, 3:]
    assert_same_geometry(back, expected)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(expected))


def test_refuses_what_is_not_a_scalar_volume(scene):
    with pytest.raises(InputError, match="No volume"):
        mrml.volume_to_image(None)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="'empty' holds no voxels"):
        mrml.volume_to_image(empty)
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "surface")
    with pytest.raises(InputError, match="not a scalar volume"):
        mrml.volume_to_image(model)


# --------------------------------------------------------------------------- parent transforms


def linear_transform_node(scene, matrix: np.ndarray, name="moved"):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(mrml.vtk_matrix(matrix))
    return node


@pytest.mark.parametrize("scaled", [False, True])
def test_parent_transform_is_applied_like_hardening(scene, scaled):
    image = make_image(direction=OBLIQUE)
    node = mrml.image_to_volume(image, scene, name="under transform")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation((0.3, -1, 0.5), 33.0) @ (np.diag([1.1, 0.9, 1.3]) if scaled else np.eye(3))
    matrix[:3, 3] = (12.0, -7.5, 40.0)
    inner = linear_transform_node(scene, matrix, "inner")
    outer = linear_transform_node(scene, np.diag([1.0, 1.0, 1.0, 1.0]) + np.pad(np.array([[0, 0, 0, 5.0]]), ((2, 1), (0, 0))))
    inner.SetAndObserveTransformNodeID(outer.GetID())
    node.SetAndObserveTransformNodeID(inner.GetID())

    shown = mrml.volume_to_image(node)
    stored = mrml.volume_to_image(node, apply_parent_transform=False)
    assert_same_geometry(stored, image)

    hardened = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hardened")
    hardened.Copy(node)
    hardened.SetAndObserveImageData(node.GetImageData())
    hardened.SetAndObserveTransformNodeID(inner.GetID())
    hardened.HardenTransform()  # Slicer's own "Harden transform"
    assert hardened.GetParentTransformNode() is None
    assert_same_geometry(shown, mrml.volume_to_image(hardened), tol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(shown), sitk.GetArrayFromImage(image))
    # And every voxel lands where Slicer's transform chain puts it.
    to_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(inner, None, to_world)
    for index in [(0, 0, 0), (5, 9, 2), (12, 10, 8)]:
        local = ras_of_index(node, index)
        l, p, s = shown.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(to_world.TransformPoint(*local), (-l, -p, s), atol=1e-6)


def test_non_linear_parent_transform_is_refused(scene):
    node = mrml.image_to_volume(make_image(), scene, name="event T1c")
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError, match="'event T1c' sits under the non-linear transform 'warp'.*Harden"):
        mrml.volume_to_image(node)
    assert mrml.volume_to_image(node, apply_parent_transform=False).GetSize() == (13, 11, 9)


# --------------------------------------------------------------------------- registration


def head(spacing=3.0, size=(40, 44, 36), centre=(3.0, -2.0, 4.0), direction=None):
    """A bright ellipsoid 'head' with a brighter 'lesion' ball on a grid centred on ``centre`` (LPS).

    Returns (image, lesion centre LPS).
    """
    image = sitk.Image(size, sitk.sitkFloat32)
    image.SetSpacing((spacing,) * 3)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    image.SetDirection(tuple(direction.ravel()))
    image.SetOrigin(tuple(np.asarray(centre) - direction @ ((np.array(size) - 1) / 2.0 * spacing)))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3).astype(float)
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    points = idx @ matrix.T + np.array(image.GetOrigin())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(tuple((np.array(size) - 1) / 2.0)))
    lesion = centre + np.array([22.0, -10.0, 8.0])
    values = 100.0 * (np.sum(((points - centre) / np.array([50.0, 58.0, 44.0])) ** 2, 1) < 1)
    values += 300.0 * (np.linalg.norm(points - lesion, axis=1) < 9.0)
    array = values.reshape(size).transpose(2, 1, 0).astype(np.float32)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return sitk.SmoothingRecursiveGaussian(out, 2.0), lesion


def rigid(degrees=14.0, axis=(0.2, 0.4, 1.0), translation=(9.0, -6.0, 4.0), center=(0.0, 0.0, 0.0)):
    transform = sitk.Euler3DTransform()
    transform.SetCenter(center)
    transform.SetMatrix(tuple(rotation(axis, degrees).ravel()))
    transform.SetTranslation(translation)
    return transform


def event_from(reference: sitk.Image, reference_to_event: sitk.Transform, grid: sitk.Image) -> sitk.Image:
    """The event scan: the same head, moved so that event(T(r)) = reference(r)."""
    return sitk.Resample(reference, grid, reference_to_event.GetInverse(), sitk.sitkLinear, 0.0)


def test_affine_from_sitk_transform_handles_centres_and_composites():
    transform = rigid(center=(10.0, 20.0, -5.0))
    matrix = mrml.affine_from_sitk_transform(transform)
    point = np.array([3.0, -40.0, 17.0])
    np.testing.assert_allclose(matrix[:3, :3] @ point + matrix[:3, 3], transform.TransformPoint(tuple(point)), atol=1e-9)
    composite = sitk.CompositeTransform([transform, sitk.TranslationTransform(3, (1.0, 2.0, 3.0))])
    matrix = mrml.affine_from_sitk_transform(composite)
    np.testing.assert_allclose(matrix[:3, :3] @ point + matrix[:3, 3], composite.TransformPoint(tuple(point)), atol=1e-9)
    field = sitk.Image([8, 8, 8], sitk.sitkVectorFloat64, 3)
    field.SetSpacing((40.0,) * 3)
    field.SetOrigin((-140.0,) * 3)
    arr = sitk.GetArrayFromImage(field)
    arr[..., 0] = np.random.default_rng(0).normal(0, 3, arr.shape[:3])
    displacement = sitk.GetImageFromArray(arr, isVector=True)
    displacement.CopyInformation(field)
    with pytest.raises(InputError, match="not linear"):
        mrml.affine_from_sitk_transform(sitk.DisplacementFieldTransform(displacement))


@pytest.mark.parametrize("event_had_parent", [False, True])
def test_event_under_registration_transform_lines_up_with_reference(scene, event_had_parent):
    reference, lesion_ref = head(direction=rotation((1, 0, 0), 8.0))
    reference_to_event = rigid()
    event_grid, _ = head(spacing=2.5, size=(48, 52, 44), centre=(8.0, -6.0, 2.0), direction=FLIPPED)
    event = event_from(reference, reference_to_event, event_grid)
    lesion_event = np.array(reference_to_event.TransformPoint(tuple(lesion_ref)))
    assert sitk.GetArrayViewFromImage(event)[tuple(np.array(event.TransformPhysicalPointToIndex(tuple(lesion_event)))[::-1])] > 300

    event_node = mrml.image_to_volume(event, scene, name="event")
    registration_input = reference_to_event
    if event_had_parent:  # the user had moved the event; the registration was computed on it as shown
        before = np.eye(4)
        before[:3, :3] = rotation((0, 1, 0), -10.0)
        before[:3, 3] = (4.0, 3.0, -2.0)
        moved = linear_transform_node(scene, before, "user pose")
        event_node.SetAndObserveTransformNodeID(moved.GetID())
        shown_lps = mrml.FLIP @ before @ mrml.FLIP  # local → shown, LPS
        registration_input = sitk.CompositeTransform([
            sitk.AffineTransform(tuple(shown_lps[:3, :3].ravel()), tuple(shown_lps[:3, 3])),
            reference_to_event,
        ])
        np.testing.assert_allclose(
            registration_input.TransformPoint(tuple(lesion_ref)),
            shown_lps[:3, :3] @ lesion_event + shown_lps[:3, 3], atol=1e-9)

    transform_node = mrml.update_registration_transform(scene, registration_input, moving=event_node, key="case")
    assert event_node.GetParentTransformNode() is transform_node
    assert transform_node.GetParentTransformNode() is None

    # The event as Slicer shows it (hardened) resampled onto the reference grid equals the reference.
    aligned = sitk.Resample(mrml.volume_to_image(event_node), reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    ref_array, aligned_array = sitk.GetArrayViewFromImage(reference), sitk.GetArrayViewFromImage(aligned)
    inside = ref_array > 0
    lesion_ref_mask, lesion_aligned_mask = ref_array > 250, aligned_array > 250
    dice = 2 * np.sum(lesion_ref_mask & lesion_aligned_mask) / (lesion_ref_mask.sum() + lesion_aligned_mask.sum())
    assert dice > 0.85
    assert np.corrcoef(ref_array[inside], aligned_array[inside])[0, 1] > 0.95

    # Slicer's own transform chain takes the reference lesion (world) to the event lesion (local).
    from_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, transform_node, from_world)
    local = from_world.TransformPoint(-lesion_ref[0], -lesion_ref[1], lesion_ref[2])
    np.testing.assert_allclose(local, (-lesion_event[0], -lesion_event[1], lesion_event[2]), atol=1e-6)

    # Re-running updates the same node. The event is then read without the registration (a former
    # parent pose was folded into it, so the image is the stored one) and registered again.
    unregistered = mrml.volume_to_image(event_node, skip_registration=True)
    assert_same_geometry(unregistered, event)
    again = mrml.update_registration_transform(scene, reference_to_event, moving=event_node, key="case")
    assert again is transform_node
    assert scene.GetNumberOfNodesByClass("vtkMRMLLinearTransformNode") == (2 if event_had_parent else 1)
    np.testing.assert_allclose(local, from_world.TransformPoint(-lesion_ref[0], -lesion_ref[1], lesion_ref[2]), atol=1e-6)
    assert_same_geometry(unregistered, mrml.volume_to_image(event_node, skip_registration=True))

    # The node read back in ITK's convention is the registration again.
    itk = mrml.sitk_transform_from_node(transform_node)
    np.testing.assert_allclose(itk.TransformPoint(tuple(lesion_ref)), reference_to_event.TransformPoint(tuple(lesion_ref)), atol=1e-6)


# --------------------------------------------------------------------------- heatmap over the event MRI


def slice_views(scene, count=3):
    composites = []
    for _ in range(count):
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composites.append(composite)
        scene.AddNewNodeByClass("vtkMRMLSliceNode")
    return composites


def test_heatmap_in_reference_space_sits_on_the_registered_event_lesion(scene):
    reference, lesion_ref = head()
    reference_to_event = rigid(degrees=-11.0, translation=(-7.0, 5.0, 6.0))
    event = event_from(reference, reference_to_event, head(spacing=2.0, size=(60, 66, 54), centre=(-4.0, 3.0, 6.0))[0])
    composites = slice_views(scene)
    event_node = mrml.image_to_volume(event, scene, name="event")
    mrml.update_registration_transform(scene, reference_to_event, moving=event_node, key=event_node.GetID())

    # A heatmap in reference space peaking on the lesion (what occlusion produces).
    distance = sitk.SignedMaurerDistanceMap(sitk.BinaryThreshold(reference, 250, 1e9), useImageSpacing=True, squaredDistance=False)
    deepest = float(sitk.GetArrayViewFromImage(distance).min())
    heatmap = sitk.Exp(-sitk.Cast(distance - deepest, sitk.sitkFloat32) / 6.0) * 0.4
    heatmap_node = mrml.update_heatmap(scene, heatmap, background=event_node, key=event_node.GetID(),
                                       style=mrml.HeatmapStyle(threshold=0.25, opacity=0.7))

    for composite in composites:
        assert composite.GetBackgroundVolumeID() == event_node.GetID()
        assert composite.GetForegroundVolumeID() == heatmap_node.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.7)
    display = heatmap_node.GetDisplayNode()
    color = display.GetColorNode()
    assert color.GetName() == mrml.HEATMAP_COLOR_NODE_NAME and color.GetNumberOfColors() == 256
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.1, rel=1e-3)
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 0.4), rel=1e-3)
    assert heatmap_node.GetParentTransformNode() is None

    # The heatmap's peak (world) and the event lesion (seen through the registration) coincide.
    peak = np.array(mrml.peak_ras(mrml.volume_to_image(heatmap_node)))
    np.testing.assert_allclose(peak, (-lesion_ref[0], -lesion_ref[1], lesion_ref[2]), atol=3.0 * math.sqrt(3))
    from_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, event_node.GetParentTransformNode(), from_world)
    ras_to_ijk = vtk.vtkMatrix4x4()
    event_node.GetRASToIJKMatrix(ras_to_ijk)
    ijk = np.round(ras_to_ijk.MultiplyPoint((*from_world.TransformPoint(*peak), 1.0))[:3]).astype(int)
    assert slicer.util.arrayFromVolume(event_node)[ijk[2], ijk[1], ijk[0]] > 250

    # Re-running updates in place: one heatmap, one colour table, same display.
    again = mrml.update_heatmap(scene, heatmap * 2.0, background=event_node, key=event_node.GetID())
    assert again is heatmap_node
    assert len([n for n in mrml._nodes_by_class(scene, "vtkMRMLScalarVolumeNode") if n.GetAttribute(mrml.ROLE_ATTRIBUTE) == "heatmap"]) == 1
    assert len([n for n in mrml._nodes_by_class(scene, "vtkMRMLColorTableNode") if n.GetName() == mrml.HEATMAP_COLOR_NODE_NAME]) == 1
    assert display.GetWindowLevelMax() == pytest.approx(0.8, rel=1e-3)
    # Another case keeps its own heatmap.
    other = mrml.update_heatmap(scene, heatmap, background=event_node, key="other case")
    assert other is not heatmap_node

    mrml.set_foreground_opacity(scene, 0.3)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.3) for c in composites)
    mrml.jump_slice_views(scene, peak)
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        slice_to_ras = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").GetSliceToRAS()
        normal = np.array([slice_to_ras.GetElement(r, 2) for r in range(3)])
        origin = np.array([slice_to_ras.GetElement(r, 3) for r in range(3)])
        assert abs(np.dot(peak - origin, normal)) < 1e-6  # the peak lies in every slice plane


def test_colour_table_is_inferno_with_transparent_low_end(scene):
    node = mrml.heatmap_color_node(scene, transparent_below=0.1)
    rgba = [0.0] * 4
    node.GetColor(0, rgba)
    assert rgba[3] == 0.0 and max(rgba[:3]) < 0.05  # black, invisible
    node.GetColor(255, rgba)
    assert rgba[3] == 1.0 and rgba[0] > 0.95 and rgba[1] > 0.95 and rgba[2] > 0.6  # pale yellow
    node.GetColor(160, rgba)
    assert rgba[0] > rgba[1] > rgba[2]  # orange in between
    assert mrml.heatmap_color_node(scene) is node


# --------------------------------------------------------------------------- isodose, table, finders


def dose_image(prescription=64.0):
    image = sitk.Image((30, 34, 28), sitk.sitkFloat32)
    image.SetSpacing((3.0, 3.0, 3.0))
    image.SetOrigin((-45.0, -50.0, -40.0))
    image.SetDirection(tuple(OBLIQUE.ravel()))
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in image.GetSize()[::-1]], indexing="ij")
    r = np.sqrt((xx - 15) ** 2 + (yy - 17) ** 2 + (zz - 14) ** 2) * 3.0
    array = prescription / (1.0 + np.exp((r - 20.0) / 4.0))
    out = sitk.GetImageFromArray(array.astype(np.float32))
    out.CopyInformation(image)
    return out


def test_isodose_segmentation_outlines(scene):
    dose = dose_image()
    dose_node = mrml.image_to_volume(dose, scene, name="RTDOSE")
    segmentation_node = mrml.update_isodose(scene, dose_node, key="case")
    segmentation = segmentation_node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["60 Gy", "50 Gy"]
    array = sitk.GetArrayViewFromImage(dose)
    for name, level in [("60 Gy", 60.0), ("50 Gy", 50.0)]:
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        labelmap = slicer.vtkOrientedImageData()
        segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        voxels = vtk.util.numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        assert int(np.count_nonzero(voxels)) == int(np.count_nonzero(array >= level)) > 0
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        extent = labelmap.GetExtent()
        corner = mrml.numpy_matrix(matrix) @ np.array([extent[0], extent[2], extent[4], 1.0])
        l, p, s = dose.TransformIndexToPhysicalPoint((extent[0], extent[2], extent[4]))
        np.testing.assert_allclose(corner[:3], (-l, -p, s), atol=1e-6)
    display = segmentation_node.GetDisplayNode()
    assert display.GetVisibility2DOutline() and not display.GetVisibility2DFill()

    again = mrml.update_isodose(scene, dose, levels=(30, 45, 57), key="case")
    assert again is segmentation_node and segmentation.GetNumberOfSegments() == 3
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    cgy = mrml.update_isodose(scene, dose * 100.0, levels=(50,), key="cGy", unit_scale=0.01)
    assert cgy.GetSegmentation().GetNumberOfSegments() == 1
    with pytest.raises(InputError, match="isodose levels"):
        mrml.update_isodose(scene, dose, levels=())


PREDICTION = {
    "label": "recurrence",
    "probabilities": {"recurrence": 0.81, "rice": 0.19},
    "votes": {"recurrence": 4, "rice": 1},
    "agreement": "4/5",
    "folds": [{"fold": k, "probabilities": {"recurrence": p, "rice": 1 - p}, "label": "recurrence" if p > 0.5 else "rice"}
              for k, p in enumerate([0.9, 0.85, 0.8, 0.95, 0.55 - 0.1])],
}


def test_results_table(scene):
    node = mrml.update_results_table(scene, PREDICTION, key="case")
    rows = mrml.table_rows(node)
    assert [r["fold"] for r in rows] == ["0", "1", "2", "3", "4", "mean", "vote", "agreement"]
    assert list(rows[0]) == ["fold", "p(recurrence)", "p(rice)", "label"]
    assert rows[4]["label"] == "rice" and rows[4]["p(rice)"] == pytest.approx(0.55)
    assert rows[5]["p(recurrence)"] == pytest.approx(0.81) and rows[5]["label"] == "recurrence"
    assert rows[6]["p(recurrence)"] == 4 and rows[6]["p(rice)"] == 1
    assert rows[7]["label"] == "4/5"

    class Prediction:  # attribute access, as EnsemblePrediction offers
        label, probabilities, votes, agreement = "rice", {"recurrence": 0.3, "rice": 0.7}, {"recurrence": 0, "rice": 2}, "2/2"
        folds = [{"fold": 0, "probabilities": {"recurrence": 0.3, "rice": 0.7}, "label": "rice"}] * 2

    assert mrml.update_results_table(scene, Prediction(), key="case") is node
    assert len(mrml.table_rows(node)) == 5
    # Extra rows (the quality gates) follow, with empty class columns.
    mrml.update_results_table(scene, Prediction(), key="case", extra_rows=[("quality: dose_coverage", "fail — 0.50")])
    extra = mrml.table_rows(node)[-1]
    assert extra["fold"] == "quality: dose_coverage" and extra["label"] == "fail — 0.50" and math.isnan(extra["p(rice)"])
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1


def test_dose_finder_and_input_guesses(scene):
    assert mrml.find_dose_volume(scene) is None
    postop = mrml.image_to_volume(make_image(), scene, name="T1c post-op 2023")
    event = mrml.image_to_volume(make_image(), scene, name="T1C follow-up")
    unrelated = mrml.image_to_volume(make_image(), scene, name="FLAIR")
    rt = mrml.image_to_volume(make_image(), scene, name="RTDOSE: Plan 1")
    assert mrml.find_dose_volume(scene) is None  # by name only a guess, not a mark
    rt.SetAttribute(mrml.DOSE_ATTRIBUTE, "1")
    assert mrml.find_dose_volume(scene) is rt
    guesses = mrml.guess_input_volumes(scene)
    assert guesses == {"postop": postop, "event": event, "dose": rt}
    assert unrelated not in guesses.values()
    rt.SetAttribute(mrml.DOSE_ATTRIBUTE, "0")
    assert mrml.find_dose_volume(scene) is None
    assert mrml.guess_input_volumes(scene)["dose"] is rt  # its name still says dose


def test_training_plot_and_table(scene):
    history = [{"fold": f, "epoch": e, "train_loss": 1.0 / (e + 1), "val_f1": 0.5 + 0.1 * e} for f in (0, 1) for e in range(3)]
    chart, table = mrml.update_training_plot(scene, history, key="run")
    assert chart.GetNumberOfPlotSeriesNodes() == 4
    rows = mrml.table_rows(table)
    assert len(rows) == 3 and rows[2]["val_f1 fold 1"] == pytest.approx(0.7)
    history.append({"fold": 0, "epoch": 3, "train_loss": 0.2, "val_f1": 0.9})
    chart2, table2 = mrml.update_training_plot(scene, history, key="run")
    assert (chart2, table2) == (chart, table) and len(mrml.table_rows(table)) == 4
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 4
    metrics = mrml.update_table_from_rows(scene, [{"fold": 0, "f1": 0.9, "note": "best"}], role="metrics", key="run")
    assert mrml.table_rows(metrics) == [{"fold": 0.0, "f1": 0.9, "note": "best"}]
