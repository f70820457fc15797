"""The MRML bridge: Slicer nodes in, SimpleITK images out, and results back as nodes.

This is the only file of the engine that imports MRML (``slicer``); it never
imports Qt, so it runs both inside 3D Slicer and on ``slicer-core`` (Slicer's
MRML library from PyPI), where the tests exercise it on real nodes.

Conventions, and why they matter here:

* SimpleITK images are in **LPS** (ITK); Slicer's world is **RAS**. Points and
  matrices are converted with ``F = diag(-1, -1, 1)`` at this boundary only.
* A volume node's geometry is its ``IJKToRAS`` matrix (origin, spacing,
  directions: oblique and flipped axes included); the ``vtkImageData`` it holds
  is only the voxel array. :func:`volume_to_image` returns the node as it is
  *shown*: a linear parent transform is applied exactly as hardening would; a
  non-linear one is refused with a message.
* Result nodes are found again by their attributes (:data:`ROLE_ATTRIBUTE`,
  :data:`KEY_ATTRIBUTE`), so re-running a case updates its nodes instead of
  piling up copies.
* ITK registration transforms map points of the *fixed* (reference) space to the
  *moving* (event) space. That is Slicer's "transform **from** parent" of the
  node the moving image sits under, so :func:`update_registration_transform`
  stores it with ``SetMatrixTransformFromParent``.

>>> event = volume_to_image(event_node)                            # doctest: +SKIP
>>> node = update_heatmap(scene, heatmap_image, background=event_node)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
import vtk
import vtk.util.numpy_support

from . import CLASS_NAMES
from .errors import InputError

#: Attribute naming what a node is to RICE-NET (``heatmap``, ``isodose``, ...).
ROLE_ATTRIBUTE = "RICENet.Role"
#: Attribute tying a result node to one case (the event volume's node ID).
KEY_ATTRIBUTE = "RICENet.Key"
#: Attribute SlicerRT's DICOM-RT import puts on RTDOSE volumes.
DOSE_ATTRIBUTE = "DicomRtImport.DoseVolume"
#: Attribute Slicer's DICOM import puts on a loaded volume: its SOP Instance UIDs, separated by spaces.
DICOM_INSTANCES_ATTRIBUTE = "DICOM.instanceUIDs"

ROLE_HEATMAP = "heatmap"
ROLE_ISODOSE = "isodose"
ROLE_RESULTS = "results"
ROLE_REGISTRATION = "registration"
ROLE_COLORMAP = "colormap"
ROLE_DOSE_OVERLAP = "dose_overlap"
ROLE_REVIEW_VOLUME = "review-volume"  # an input volume that review mode loaded (and removes again)

HEATMAP_COLOR_NODE_NAME = "RICENet Inferno"

#: LPS ↔ RAS (its own inverse).
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Matplotlib's "inferno" sampled at 17 points (position, r, g, b); the table
#: interpolates between them.
INFERNO_ANCHORS = (
    (0.0000, 0.001, 0.000, 0.014), (0.0625, 0.042, 0.028, 0.141), (0.1250, 0.129, 0.047, 0.291),
    (0.1875, 0.238, 0.037, 0.396), (0.2500, 0.342, 0.062, 0.429), (0.3125, 0.441, 0.099, 0.432),
    (0.3750, 0.541, 0.135, 0.415), (0.4375, 0.640, 0.171, 0.381), (0.5000, 0.736, 0.216, 0.330),
    (0.5625, 0.822, 0.275, 0.266), (0.6250, 0.894, 0.353, 0.194), (0.6875, 0.947, 0.449, 0.115),
    (0.7500, 0.978, 0.558, 0.035), (0.8125, 0.988, 0.675, 0.065), (0.8750, 0.975, 0.798, 0.206),
    (0.9375, 0.948, 0.917, 0.411), (1.0000, 0.988, 0.998, 0.645),
)

#: Outline colours for isodose levels, highest level first (chosen to stand out over Inferno).
ISODOSE_COLORS = ((0.0, 1.0, 1.0), (0.3, 1.0, 0.3), (0.25, 0.55, 1.0), (1.0, 0.3, 1.0), (1.0, 1.0, 1.0))


# --------------------------------------------------------------------------- matrices

def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A ``vtkMatrix4x4`` holding a 4×4 numpy array."""
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A 4×4 numpy array from a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)])


def ijk_to_ras_from_image(image: sitk.Image) -> np.ndarray:
    """The ``IJKToRAS`` matrix of a SimpleITK image (LPS geometry → RAS)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return FLIP @ ijk_to_lps


def _set_geometry_from_ijk_to_ras(image: sitk.Image, ijk_to_ras: np.ndarray) -> None:
    ijk_to_lps = FLIP @ ijk_to_ras
    columns = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in (columns / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in ijk_to_lps[:3, 3]))


# --------------------------------------------------------------------------- transforms of nodes

def _node_label(node) -> str:
    return f"'{node.GetName()}'" if node is not None and node.GetName() else "the node"


def _is_registration_node(node) -> bool:
    return node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == ROLE_REGISTRATION


def parent_to_world(node, *, skip_registration: bool = False) -> np.ndarray:
    """The 4×4 RAS matrix that takes ``node``'s local coordinates to world.

    Identity when the node has no parent transform. With ``skip_registration``
    a RICE-NET registration transform directly above the node is left out (its
    own parents are kept), which gives the event MRI as it was before
    registration. Non-linear transforms are refused with an :class:`InputError`.
    """
    parent = node.GetParentTransformNode()
    if parent is not None and skip_registration and _is_registration_node(parent):
        parent = parent.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(
            f"Volume {_node_label(node)} sits under the non-linear transform {_node_label(parent)}; "
            "RICE-NET needs the image as stored or linearly moved. Harden the transform "
            "(Data module: right-click → Harden transform) or remove it, then run again."
        )
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return numpy_matrix(matrix)


# --------------------------------------------------------------------------- volumes

def volume_to_image(node, *, apply_parent_transform: bool = True, skip_registration: bool = False) -> sitk.Image:
    """The voxels and geometry of a scalar volume node as a SimpleITK image (LPS).

    With ``apply_parent_transform`` (default) the image is where Slicer shows
    it: a linear parent transform is folded into the geometry exactly, as
    *Harden transform* would (scaling and shear included); a non-linear one is
    refused. ``skip_registration`` leaves out a RICE-NET registration transform
    directly above the node (see :func:`parent_to_world`).

    >>> image = volume_to_image(scene.GetFirstNodeByName("event"))   # doctest: +SKIP
    """
    if node is None:
        raise InputError("No volume selected.")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"Node {_node_label(node)} is a {node.GetClassName()}, not a scalar volume.")
    image_data = node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise InputError(f"Volume {_node_label(node)} holds no voxels.")
    if image_data.GetNumberOfScalarComponents() != 1:
        raise InputError(f"Volume {_node_label(node)} has {image_data.GetNumberOfScalarComponents()} components per voxel; a scalar volume is needed.")
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    image = sitk.GetImageFromArray(array)
    ijk_to_ras_vtk = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras_vtk)
    ijk_to_ras = numpy_matrix(ijk_to_ras_vtk)
    extent = image_data.GetExtent()
    if extent[0] or extent[2] or extent[4]:  # voxel (0,0,0) of the array is IJK (extent minimum)
        ijk_to_ras[:3, 3] = (ijk_to_ras @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    if apply_parent_transform:
        ijk_to_ras = parent_to_world(node, skip_registration=skip_registration) @ ijk_to_ras
    if abs(np.linalg.det(ijk_to_ras[:3, :3])) < 1e-12:
        raise InputError(f"Volume {_node_label(node)} has a singular IJK-to-RAS matrix; its geometry is broken.")
    _set_geometry_from_ijk_to_ras(image, ijk_to_ras)
    return image


def _voxel_array(image: sitk.Image) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    if array.dtype in (np.int64, np.uint64):  # VTK "long long" volumes do not render in Slicer
        info = np.iinfo(np.int32)
        fits = array.size == 0 or (array.min() >= info.min and array.max() <= info.max)
        array = array.astype(np.int32 if fits else np.float64)
    return array


def image_to_volume(
    image: sitk.Image,
    scene,
    *,
    name: str,
    node=None,
    role: str | None = None,
    key: str | None = None,
    class_name: str = "vtkMRMLScalarVolumeNode",
):
    """Put a SimpleITK image into a volume node (created unless ``node`` or a node with ``role``/``key`` exists).

    The node is placed in world coordinates: any parent transform is removed,
    so the image appears exactly at its LPS geometry. Returns the node.

    >>> node = image_to_volume(image, scene, name="heatmap")       # doctest: +SKIP
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"Cannot show '{name}': a 3D scalar image is needed.")
    if node is None:
        node = get_or_create_node(scene, class_name, name, role=role, key=key) if role else scene.AddNewNodeByClass(class_name, name)
    slicer.util.updateVolumeFromArray(node, _voxel_array(image))
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras_from_image(image)))
    node.SetAndObserveTransformNodeID(None)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.Modified()
    return node


# --------------------------------------------------------------------------- lesion masks

def segment_to_image(node, segment_id: str | None = None) -> sitk.Image:
    """One segment of a segmentation node as a 0/1 uint8 image (LPS), where Slicer shows it.

    Uses the segment's binary labelmap (converted from its source
    representation, e.g. an RTSTRUCT's closed surface, by the Segmentations
    module logic, which needs no Qt); a labelmap shared by several segments
    keeps only this segment's label value. A linear parent transform of the
    node is folded in exactly, as :func:`volume_to_image` does. Without
    ``segment_id`` the node must hold exactly one segment.
    """
    if node is None:
        raise InputError("No lesion segmentation selected.")
    if not node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"Node {_node_label(node)} is a {node.GetClassName()}, not a segmentation.")
    segmentation = node.GetSegmentation()
    if not segment_id:
        if segmentation.GetNumberOfSegments() != 1:
            raise InputError(f"Segmentation {_node_label(node)} holds {segmentation.GetNumberOfSegments()} segments; "
                             "choose the lesion's segment.")
        segment_id = segmentation.GetNthSegmentID(0)
    segment = segmentation.GetSegment(segment_id)
    if segment is None:
        raise InputError(f"Segmentation {_node_label(node)} has no segment '{segment_id}'.")
    name = f"Segment '{segment.GetName()}' of {_node_label(node)}"
    labelmap = slicer.vtkOrientedImageData()
    if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(node, segment_id, labelmap, False):
        raise InputError(f"{name} cannot be turned into a labelmap; convert it in the Segmentations module "
                         "(Representations: Binary labelmap → Create) and run again.")
    extent = labelmap.GetExtent()
    scalars = labelmap.GetPointData().GetScalars()
    if scalars is None or extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        raise InputError(f"{name} is empty: paint the lesion in the Segment Editor, then run again.")
    dims = labelmap.GetDimensions()
    array = vtk.util.numpy_support.vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0])
    mask = (array == segment.GetLabelValue()).astype(np.uint8)
    if not mask.any():
        raise InputError(f"{name} is empty: paint the lesion in the Segment Editor, then run again.")
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    ijk_to_ras = numpy_matrix(matrix)
    ijk_to_ras[:3, 3] = (ijk_to_ras @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    ijk_to_ras = parent_to_world(node) @ ijk_to_ras
    image = sitk.GetImageFromArray(mask)
    _set_geometry_from_ijk_to_ras(image, ijk_to_ras)
    return image


def lesion_to_image(node, segment_id: str | None = None) -> sitk.Image:
    """A lesion given as a segment of a segmentation node, or as a labelmap (or scalar) volume: nonzero = lesion."""
    if node is not None and node.IsA("vtkMRMLSegmentationNode"):
        return segment_to_image(node, segment_id)
    return volume_to_image(node)


# --------------------------------------------------------------------------- finding nodes

def _nodes_by_class(scene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def find_role_node(scene, class_name: str, role: str, key: str | None = None):
    """The node of ``class_name`` with the RICE-NET ``role`` (and ``key``, if given), or None."""
    for node in reversed(_nodes_by_class(scene, class_name)):
        if node.GetAttribute(ROLE_ATTRIBUTE) == role and (key is None or node.GetAttribute(KEY_ATTRIBUTE) == key):
            return node
    return None


def get_or_create_node(scene, class_name: str, name: str, *, role: str, key: str | None = None):
    """Find the node with ``role``/``key`` or add a new one, tagged so that the next run finds it."""
    node = find_role_node(scene, class_name, role, key)
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        if key is not None:
            node.SetAttribute(KEY_ATTRIBUTE, key)
    return node


def remove_keyed_nodes(scene, keys: Iterable[str]) -> int:
    """Remove every node tagged with one of ``keys`` (:data:`KEY_ATTRIBUTE`), with its display and storage nodes.

    Review mode calls it before showing the next case, so that a long list
    does not pile nodes (and their voxels) up in the scene. Returns how many
    tagged nodes went.
    """
    keys = set(keys)
    tagged = [node for node in (scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes()))
              if node is not None and node.GetAttribute(KEY_ATTRIBUTE) in keys]
    for node in tagged:
        helpers = []
        for kind in ("Display", "Storage"):
            count = getattr(node, f"GetNumberOf{kind}Nodes", None)
            if count is not None:
                helpers += [getattr(node, f"GetNth{kind}Node")(i) for i in range(count())]
        for other in [node] + [h for h in helpers if h is not None]:
            if other.GetScene() is scene:
                scene.RemoveNode(other)
    return len(tagged)


def find_dose_volume(scene):
    """The most recently added volume that SlicerRT marked as RTDOSE (attribute ``DicomRtImport.DoseVolume``), or None."""
    for node in reversed(_nodes_by_class(scene, "vtkMRMLScalarVolumeNode")):
        value = node.GetAttribute(DOSE_ATTRIBUTE)
        if value is not None and value.strip().lower() not in ("", "0", "false", "no"):
            return node
    return None


_NAME_HINTS = {
    "postop": ("postop", "post-op", "post_op", "planning", "plan", "baseline", "preop", "pre-rt", "prert"),
    "event": ("event", "follow", "fu", "recur", "progress", "lesion", "current"),
    "dose": ("dose", "rtdose", "gy"),
}


def guess_input_volumes(scene) -> dict[str, Any]:
    """Best guesses for the three inputs: the marked RTDOSE volume, then names.

    Returns ``{"postop": node|None, "event": node|None, "dose": node|None}``;
    a node is used for one input at most. Only a guess to pre-fill selectors.
    """
    volumes = [n for n in _nodes_by_class(scene, "vtkMRMLScalarVolumeNode")
               if not n.IsA("vtkMRMLLabelMapVolumeNode") and n.GetAttribute(ROLE_ATTRIBUTE) is None]
    guesses: dict[str, Any] = {"postop": None, "event": None, "dose": find_dose_volume(scene)}
    used = {guesses["dose"].GetID()} if guesses["dose"] is not None else set()
    for modality in ("dose", "event", "postop"):
        if guesses[modality] is not None:
            continue
        for node in reversed(volumes):
            name = (node.GetName() or "").lower()
            tokens = set(name.replace("-", " ").replace("_", " ").replace(".", " ").split())
            hit = any((hint in tokens) if len(hint) <= 3 else (hint in name) for hint in _NAME_HINTS[modality])
            if hit and node.GetID() not in used:
                guesses[modality] = node
                used.add(node.GetID())
                break
    return guesses


# --------------------------------------------------------------------------- heatmap

def heatmap_color_node(scene, transparent_below: float = 0.0):
    """The RICE-NET Inferno colour table (created once per scene, 256 colours).

    Entries below ``transparent_below`` (a fraction of the table) get alpha 0, a
    short ramp above it fades in; slice views also hide sub-threshold voxels
    through the display node's threshold (:func:`update_heatmap`).
    """
    node = find_role_node(scene, "vtkMRMLColorTableNode", ROLE_COLORMAP)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", HEATMAP_COLOR_NODE_NAME)
        node.SetAttribute(ROLE_ATTRIBUTE, ROLE_COLORMAP)
        node.SetAttribute("Category", "RICE-NET")
    node.SetTypeToUser()
    count = 256
    node.SetNumberOfColors(count)
    positions = np.array([a[0] for a in INFERNO_ANCHORS])
    rgb = np.array([a[1:] for a in INFERNO_ANCHORS])
    disable = node.StartModify()
    for index in range(count):
        x = index / (count - 1)
        r, g, b = (float(np.interp(x, positions, rgb[:, c])) for c in range(3))
        alpha = 0.0 if x < transparent_below else min(1.0, 0.25 + (x - transparent_below) * 8.0)
        node.SetColor(index, f"{x:.3f}", r, g, b, alpha)
    node.EndModify(disable)
    return node


@dataclass
class HeatmapStyle:
    """How the heatmap looks: threshold as a fraction of its maximum, layer opacity, range.

    ``maximum=None`` scales the colours to the map's own maximum.
    """

    threshold: float = 0.2
    opacity: float = 0.6
    maximum: float | None = None


def update_heatmap(
    scene,
    heatmap: sitk.Image,
    *,
    background=None,
    style: HeatmapStyle | None = None,
    key: str | None = None,
    node=None,
    name: str = "RICE-NET heatmap",
    show: bool = True,
):
    """Create or update the heatmap volume (reference space) and show it over ``background``.

    Colours run from 0 (transparent) to the map's maximum (Inferno); values
    below ``style.threshold × maximum`` are transparent. With ``show`` every
    slice view gets ``background`` (the event MRI) as background and the
    heatmap as foreground at ``style.opacity``.
    """
    style = style or HeatmapStyle()
    node = image_to_volume(sitk.Cast(heatmap, sitk.sitkFloat32), scene, name=name, node=node, role=ROLE_HEATMAP, key=key)
    array = sitk.GetArrayViewFromImage(heatmap)
    peak = float(np.max(array)) if array.size else 0.0
    top = float(style.maximum) if style.maximum is not None else peak
    if not math.isfinite(top) or top <= 0:
        top = 1.0
    set_heatmap_style(node, style, top)
    if show:
        show_in_slice_views(scene, background=background, foreground=node, opacity=style.opacity)
    return node


def set_heatmap_style(node, style: HeatmapStyle, maximum: float | None = None) -> None:
    """Apply colour table, window and threshold to a heatmap node's display node."""
    scene = node.GetScene()
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    if maximum is None:
        maximum = float(node.GetAttribute("RICENet.Maximum") or 1.0)
    node.SetAttribute("RICENet.Maximum", repr(float(maximum)))
    disable = display.StartModify()
    display.SetAndObserveColorNodeID(heatmap_color_node(scene).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, maximum)
    display.SetAutoThreshold(False)
    display.SetApplyThreshold(True)
    display.SetThreshold(max(float(style.threshold), 0.0) * maximum, 1e30)
    display.SetInterpolate(True)
    display.EndModify(disable)


def show_in_slice_views(scene, *, background=None, foreground=None, opacity: float | None = None) -> int:
    """Set background/foreground volumes (and foreground opacity) of every slice view; returns how many."""
    composites = _nodes_by_class(scene, "vtkMRMLSliceCompositeNode")
    for composite in composites:
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if opacity is not None:
            composite.SetForegroundOpacity(float(opacity))
    return len(composites)


def set_foreground_opacity(scene, opacity: float) -> None:
    """The heatmap opacity slider: foreground opacity of every slice view."""
    show_in_slice_views(scene, opacity=opacity)


def peak_ras(image: sitk.Image) -> tuple[float, float, float]:
    """The RAS position of an image's maximum (to move the slice views there)."""
    array = sitk.GetArrayViewFromImage(image)
    z, y, x = np.unravel_index(int(np.argmax(array)), array.shape)
    l, p, s = image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
    return (-l, -p, s)


def jump_slice_views(scene, ras: Sequence[float], *, centre: bool = False) -> None:
    """Move every slice view to the point ``ras`` (with ``centre``, also pan it to the middle of the view)."""
    for slice_node in _nodes_by_class(scene, "vtkMRMLSliceNode"):
        jump = slice_node.JumpSliceByCentering if centre else slice_node.JumpSliceByOffsetting
        jump(float(ras[0]), float(ras[1]), float(ras[2]))


# --------------------------------------------------------------------------- isodose

def update_isodose(
    scene,
    dose,
    levels: Iterable[float] = (50.0, 60.0),
    *,
    key: str | None = None,
    node=None,
    name: str = "RICE-NET isodose",
    unit_scale: float = 1.0,
    smooth: bool = True,
):
    """Create or update a segmentation with one segment per isodose level (Gy), shown as outlines.

    ``dose`` is a dose volume node (its parent transform applied) or a
    SimpleITK image; ``unit_scale`` converts its values to Gy (0.01 for cGy).
    Segment *L* Gy holds the voxels with dose ≥ *L*. Existing segments are
    replaced on every call. With ``smooth`` the outlines are drawn from a
    smoothed closed surface (as SlicerRT's isodose lines are) where the
    scene's segmentation converters are available; otherwise from the voxels.
    """
    image = volume_to_image(dose) if not isinstance(dose, sitk.Image) else dose
    levels = sorted({float(level) for level in levels}, reverse=True)
    if not levels:
        raise InputError("No isodose levels given (e.g. 50, 60 Gy).")
    array = sitk.GetArrayViewFromImage(image).astype(np.float64) * float(unit_scale)
    if node is None:
        node = get_or_create_node(scene, "vtkMRMLSegmentationNode", name, role=ROLE_ISODOSE, key=key)
    node.SetAndObserveTransformNodeID(None)
    ijk_to_ras = vtk_matrix(ijk_to_ras_from_image(image))
    segmentation = node.GetSegmentation()
    disable = node.StartModify()
    segmentation.RemoveAllSegments()
    for index, level in enumerate(levels):
        mask = (array >= level).astype(np.uint8)
        labelmap = slicer.vtkOrientedImageData()
        shape = mask.shape
        labelmap.SetDimensions(shape[2], shape[1], shape[0])
        labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        target = vtk.util.numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        target[:] = mask.ravel()
        labelmap.SetImageToWorldMatrix(ijk_to_ras)
        color = ISODOSE_COLORS[min(index, len(ISODOSE_COLORS) - 1)]
        label = f"{level:g} Gy"
        segment_id = node.AddSegmentFromBinaryLabelmapRepresentation(labelmap, label, list(color), label.replace(" ", ""))
        segmentation.GetSegment(segment_id).SetTag("RICENet.DoseLevelGy", f"{level:g}")
    node.EndModify(disable)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if smooth and node.CreateClosedSurfaceRepresentation():
        display.SetPreferredDisplayRepresentationName2D(slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName())
    else:
        display.SetPreferredDisplayRepresentationName2D(slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    display.SetOpacity2DOutline(1.0)
    display.SetSliceIntersectionThickness(2)
    display.SetVisibility3D(False)
    return node


# --------------------------------------------------------------------------- registration

def affine_from_sitk_transform(transform: sitk.Transform, *, tolerance_mm: float = 1e-3) -> np.ndarray:
    """The 4×4 LPS matrix of a linear SimpleITK transform (any kind, composites too).

    The matrix maps points the way the transform does (for a registration
    result: reference → moving). Non-linear transforms are refused.
    """
    def apply(point: np.ndarray) -> np.ndarray:
        return np.array(transform.TransformPoint(tuple(float(v) for v in point)))

    scale = 100.0
    offset = apply(np.zeros(3))
    matrix = np.eye(4)
    for axis in range(3):
        unit = np.zeros(3)
        unit[axis] = scale
        matrix[:3, axis] = (apply(unit) - offset) / scale
    matrix[:3, 3] = offset
    probes = np.array([[37.0, -81.0, 53.0], [-120.0, 64.0, -17.0], [5.0, 140.0, 99.0], [-60.0, -60.0, -130.0]])
    for probe in probes:
        if np.linalg.norm(apply(probe) - (matrix[:3, :3] @ probe + matrix[:3, 3])) > tolerance_mm:
            raise InputError(
                f"The registration transform ({transform.GetName()}) is not linear; "
                "only rigid or affine registrations can be shown as a linear transform node."
            )
    return matrix


def update_registration_transform(
    scene,
    event_to_reference: sitk.Transform,
    *,
    moving=None,
    key: str | None = None,
    node=None,
    name: str = "RICE-NET event to reference",
):
    """Create or update the linear transform node that lines the event MRI up with the reference.

    ``event_to_reference`` is the registration as ITK returns it: it maps
    *reference* points to *event* points (LPS). In Slicer terms that is the
    transform **from parent** of the node the event MRI goes under. With
    ``moving`` (the event volume node) the node is put under the transform; a
    parent transform the event had before (other than this one) is folded into
    it, because the registration was computed on the event as then shown.
    """
    reference_to_event_ras = FLIP @ affine_from_sitk_transform(event_to_reference) @ FLIP
    if node is None:
        node = get_or_create_node(scene, "vtkMRMLLinearTransformNode", name, role=ROLE_REGISTRATION, key=key)
    before = np.eye(4)
    if moving is not None:
        # Where the event was shown when its image was read (registration node excluded).
        before = parent_to_world(moving, skip_registration=True)
    # Event local → world: first its former parent chain, then reference ← event.
    from_parent = np.linalg.inv(before) @ reference_to_event_ras
    node.SetAndObserveTransformNodeID(None)
    node.SetMatrixTransformFromParent(vtk_matrix(from_parent))
    if moving is not None:
        moving.SetAndObserveTransformNodeID(node.GetID())
    return node


def sitk_transform_from_node(node) -> sitk.AffineTransform:
    """The node's transform to world in ITK's registration convention (world/reference → local, LPS)."""
    if not node.IsTransformToWorldLinear():
        raise InputError(f"Transform {_node_label(node)} is not linear.")
    matrix = vtk.vtkMatrix4x4()
    node.GetMatrixTransformFromWorld(matrix)
    lps = FLIP @ numpy_matrix(matrix) @ FLIP
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(float(v) for v in lps[:3, :3].ravel()))
    transform.SetTranslation(tuple(float(v) for v in lps[:3, 3]))
    return transform


# --------------------------------------------------------------------------- results table

def _field(prediction: Any, name: str, default: Any = None) -> Any:
    if isinstance(prediction, Mapping):
        return prediction.get(name, default)
    return getattr(prediction, name, default)


def update_results_table(
    scene,
    prediction: Any,
    *,
    key: str | None = None,
    node=None,
    name: str = "RICE-NET results",
    class_names: Sequence[str] | None = None,
    extra_rows: Sequence[tuple[str, str]] = (),
):
    """Create or update the results table: one row per fold, then ``mean``, ``vote`` and ``agreement``.

    Columns: ``fold``, ``p(<class>)`` per class, ``label``. In the ``vote`` row
    the class columns hold the number of folds voting for each class. Accepts an
    ``EnsemblePrediction`` or its ``to_dict()``. ``extra_rows`` are (name, text)
    rows after those (e.g. the quality gates), with empty class columns.
    """
    probabilities = dict(_field(prediction, "probabilities", {}) or {})
    classes = list(class_names or probabilities.keys() or CLASS_NAMES)
    folds = list(_field(prediction, "folds", []) or [])
    votes = dict(_field(prediction, "votes", {}) or {})
    label = str(_field(prediction, "label", ""))
    agreement = str(_field(prediction, "agreement", ""))

    rows: list[tuple[str, list[float], str]] = []
    for fold in folds:
        fold_probabilities = _field(fold, "probabilities", {}) or {}
        rows.append((str(_field(fold, "fold", len(rows))), [float(fold_probabilities.get(c, math.nan)) for c in classes],
                     str(_field(fold, "label", ""))))
    rows.append(("mean", [float(probabilities.get(c, math.nan)) for c in classes], label))
    rows.append(("vote", [float(votes.get(c, math.nan)) for c in classes], label))
    rows.append(("agreement", [math.nan for _ in classes], agreement))
    from .trust import table_rows as trust_rows

    source = prediction.to_dict() if hasattr(prediction, "to_dict") else prediction
    rows.extend(trust_rows({k: _field(source, k) for k in ("model_validation", "calibrated_probability", "calibration",
                                                           "prediction_set")}, classes))
    rows.extend((str(row_name), [math.nan for _ in classes], str(text)) for row_name, text in extra_rows)

    table = vtk.vtkTable()
    fold_column = vtk.vtkStringArray()
    fold_column.SetName("fold")
    label_column = vtk.vtkStringArray()
    label_column.SetName("label")
    value_columns = []
    for cls in classes:
        column = vtk.vtkDoubleArray()
        column.SetName(f"p({cls})")
        value_columns.append(column)
    for fold_name, values, row_label in rows:
        fold_column.InsertNextValue(fold_name)
        for column, value in zip(value_columns, values):
            column.InsertNextValue(value)
        label_column.InsertNextValue(row_label)
    table.AddColumn(fold_column)
    for column in value_columns:
        table.AddColumn(column)
    table.AddColumn(label_column)

    if node is None:
        node = get_or_create_node(scene, "vtkMRMLTableNode", name, role=ROLE_RESULTS, key=key)
    node.SetAndObserveTable(table)
    node.SetUseColumnTitleAsColumnHeader(True)
    node.SetColumnDescription("fold", "Cross-validation fold; then the ensemble rows mean, vote and agreement"
                                      + ("; then the quality checks" if extra_rows else ""))
    for cls in classes:
        node.SetColumnDescription(f"p({cls})", f"Probability of {cls} (vote row: number of folds voting {cls})")
    node.SetColumnDescription("label", "Predicted class")
    node.Modified()
    return node


def table_rows(node) -> list[dict[str, Any]]:
    """The rows of a table node as dicts (column name → value), for tests and export."""
    table = node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c, column_name in enumerate(names):
            column = table.GetColumn(c)
            value = column.GetValue(r)
            row[column_name] = value if isinstance(column, vtk.vtkStringArray) else float(value)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- training

def update_table_from_rows(
    scene,
    rows: Sequence[Mapping[str, Any]],
    *,
    role: str,
    key: str | None = None,
    node=None,
    name: str = "RICE-NET table",
):
    """Create or update a table node from dict rows (numbers become double columns, the rest strings)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    table = vtk.vtkTable()
    for column_name in columns:
        values = [row.get(column_name) for row in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in values)
        column = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        column.SetName(str(column_name))
        for value in values:
            if numeric:
                column.InsertNextValue(math.nan if value is None else float(value))
            else:
                column.InsertNextValue("" if value is None else str(value))
        table.AddColumn(column)
    if node is None:
        node = get_or_create_node(scene, "vtkMRMLTableNode", name, role=role, key=key)
    node.SetAndObserveTable(table)
    node.Modified()
    return node


def update_training_plot(
    scene,
    history: Sequence[Mapping[str, Any]],
    *,
    key: str | None = None,
    series: Sequence[str] = ("train_loss", "val_f1"),
    name: str = "RICE-NET training",
):
    """Create or update a plot chart of training curves: one line per fold and quantity.

    ``history`` rows hold ``fold``, ``epoch`` and the ``series`` columns. Returns
    ``(chart_node, table_node)``; the widget shows the chart in a plot view.
    """
    folds = sorted({int(row.get("fold", 0)) for row in history})
    rows = []
    epochs = sorted({int(row["epoch"]) for row in history})
    by_fold_epoch = {(int(row.get("fold", 0)), int(row["epoch"])): row for row in history}
    for epoch in epochs:
        out: dict[str, Any] = {"epoch": float(epoch)}
        for fold in folds:
            row = by_fold_epoch.get((fold, epoch), {})
            for quantity in series:
                value = row.get(quantity)
                out[f"{quantity} fold {fold}"] = math.nan if value is None else float(value)
        rows.append(out)
    table = update_table_from_rows(scene, rows, role="training-history", key=key, name=f"{name} history")
    chart = get_or_create_node(scene, "vtkMRMLPlotChartNode", name, role="training-chart", key=key)
    chart.SetTitle("RICE-NET training: loss and validation macro F1")
    chart.SetXAxisTitle("epoch")
    wanted = []
    for index, column_name in enumerate(c for c in (rows[0] if rows else {}) if c != "epoch"):
        plot = get_or_create_node(scene, "vtkMRMLPlotSeriesNode", column_name, role=f"training-series:{column_name}", key=key)
        plot.SetAndObserveTableNodeID(table.GetID())
        plot.SetXColumnName("epoch")
        plot.SetYColumnName(column_name)
        plot.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        plot.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        if column_name.startswith("val"):
            plot.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
        wanted.append(plot.GetID())
    _show_only(chart, wanted)
    return chart, table


def _show_only(chart, wanted: Sequence[str]) -> None:
    """Make ``chart`` show exactly the plot series nodes ``wanted`` (ids), keeping those it has."""
    for i in reversed(range(chart.GetNumberOfPlotSeriesNodes())):
        if chart.GetNthPlotSeriesNodeID(i) not in wanted:
            chart.RemoveNthPlotSeriesNodeID(i)
    for plot_id in wanted:
        if not chart.HasPlotSeriesNodeID(plot_id):
            chart.AddAndObservePlotSeriesNodeID(plot_id)


def update_reliability_plot(scene, curves: Mapping[str, Sequence[Mapping[str, Any]]], *, key: str | None = None,
                            name: str = "RICE-NET reliability"):
    """A plot chart of reliability diagrams: accuracy against mean confidence per bin, one line per curve.

    ``curves`` maps a legend name (e.g. ``"raw: ECE 0.21"``) to
    :func:`RICENetLib.calibration.reliability_bins` rows; a diagonal marks
    perfect calibration. Returns ``(chart_node, table_nodes)``.
    """
    curves = {"perfect calibration": [{"confidence": 0.0, "accuracy": 0.0}, {"confidence": 1.0, "accuracy": 1.0}],
              **curves}
    chart = get_or_create_node(scene, "vtkMRMLPlotChartNode", name, role="reliability-chart", key=key)
    chart.SetTitle("RICE-NET calibration: out-of-fold reliability")
    chart.SetXAxisTitle("confidence (top probability)")
    chart.SetYAxisTitle("accuracy")
    tables, wanted = [], []
    for number, (legend, rows) in enumerate(curves.items()):
        table = update_table_from_rows(scene, [{"confidence": float(r["confidence"]), "accuracy": float(r["accuracy"])}
                                               for r in rows], role=f"reliability-table:{number}", key=key,
                                       name=f"{name} {legend}")
        plot = get_or_create_node(scene, "vtkMRMLPlotSeriesNode", legend, role=f"reliability-series:{number}", key=key)
        plot.SetName(legend)
        plot.SetAndObserveTableNodeID(table.GetID())
        plot.SetXColumnName("confidence")
        plot.SetYColumnName("accuracy")
        plot.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        plot.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if number == 0
                            else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        if number == 0:
            plot.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
        tables.append(table)
        wanted.append(plot.GetID())
    _show_only(chart, wanted)
    return chart, tables


__all__ = [
    "DOSE_ATTRIBUTE", "KEY_ATTRIBUTE", "ROLE_ATTRIBUTE", "HeatmapStyle", "affine_from_sitk_transform",
    "jump_slice_views", "find_dose_volume", "remove_keyed_nodes", "find_role_node", "get_or_create_node", "guess_input_volumes",
    "heatmap_color_node", "image_to_volume", "ijk_to_ras_from_image", "parent_to_world", "peak_ras",
    "set_foreground_opacity", "set_heatmap_style", "show_in_slice_views", "sitk_transform_from_node",
    "table_rows", "update_heatmap", "update_isodose", "update_registration_transform", "update_results_table",
    "update_table_from_rows", "update_training_plot", "update_reliability_plot", "volume_to_image",
]


def dicom_instance_uids(node: Any) -> list[str]:
    """The SOP Instance UIDs a volume was loaded from by Slicer's DICOM module (empty: not loaded from DICOM)."""
    return (node.GetAttribute(DICOM_INSTANCES_ATTRIBUTE) or "").split() if node is not None else []
