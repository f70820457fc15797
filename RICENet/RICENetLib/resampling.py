"""Image grids and resampling: isotropic reference grid, dose into the reference.

A :class:`Geometry` is an image grid without its voxels (size, spacing, origin,
direction, all in ITK's LPS convention). The pipeline records one for every
space it passes through, so that a map computed in model space can be taken
back to the patient's images by resampling alone, with no guesswork.

>>> grid = isotropic_geometry(postop, 1.0)                 # doctest: +SKIP
>>> dose_ref = resample_dose(dose, grid, name="dose image") # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError

#: Interpolator names accepted wherever the pipeline resamples.
INTERPOLATORS: dict[str, int] = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}


def interpolator_code(interpolator: str | int) -> int:
    """Turn ``"linear"``/``"nearest"``/``"bspline"`` (or a SimpleITK code) into a SimpleITK code."""
    if isinstance(interpolator, str):
        try:
            return INTERPOLATORS[interpolator.lower()]
        except KeyError:
            raise InputError(
                f"Unknown interpolator '{interpolator}'; use one of {', '.join(INTERPOLATORS)}."
            ) from None
    return int(interpolator)


@dataclass(frozen=True)
class Geometry:
    """An image grid: ``size`` and ``spacing`` in ITK (x, y, z) order, LPS origin and direction.

    The direction is the row-major 3×3 matrix whose columns are the axis
    directions, as ``sitk.Image.GetDirection`` returns it.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        return cls(
            tuple(int(v) for v in image.GetSize()),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """The numpy array shape (z, y, x) of an image on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def matrix(self) -> np.ndarray:
        """3×3 matrix mapping an index step (x, y, z) to a physical step in mm."""
        return np.array(self.direction, dtype=float).reshape(3, 3) @ np.diag(self.spacing)

    def index_to_point(self, index_xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Physical LPS points of (continuous) indices given as (..., 3) in (x, y, z) order."""
        index = np.asarray(index_xyz, dtype=float)
        return index @ self.matrix.T + np.array(self.origin)

    def point_to_index(self, points: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) indices of physical LPS points given as (..., 3)."""
        points = np.asarray(points, dtype=float)
        return (points - np.array(self.origin)) @ np.linalg.inv(self.matrix).T

    def image(self, array: np.ndarray | None = None, pixel: int = sitk.sitkFloat32) -> sitk.Image:
        """An image on this grid: from a (z, y, x) ``array`` or filled with zeros."""
        if array is None:
            image = sitk.Image([int(v) for v in self.size], pixel)
        else:
            array = np.asarray(array)
            if array.shape != self.shape:
                raise InputError(f"Array of shape {array.shape} does not fit a grid of shape (z, y, x) {self.shape}.")
            image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def corners(self) -> np.ndarray:
        """The 8 physical corner points of the grid's outer voxel edges, shape (8, 3)."""
        low = np.full(3, -0.5)
        high = np.array(self.size, dtype=float) - 0.5
        corners = np.array([[(high if bit else low)[axis] for axis, bit in enumerate(bits)]
                            for bits in np.ndindex(2, 2, 2)])
        return self.index_to_point(corners)

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction), "coordinate_system": "LPS"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        try:
            geometry = cls(tuple(int(v) for v in data["size"]), tuple(float(v) for v in data["spacing"]),
                           tuple(float(v) for v in data["origin"]), tuple(float(v) for v in data["direction"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"Invalid grid description {data!r}: {error}") from None
        if len(geometry.size) != 3 or len(geometry.spacing) != 3 or len(geometry.origin) != 3 or len(geometry.direction) != 9:
            raise InputError(f"Invalid grid description {data!r}: a 3D grid is needed.")
        return geometry


def isotropic_geometry(image: sitk.Image | Geometry, spacing_mm: float) -> Geometry:
    """The grid with ``spacing_mm`` voxels covering the same field of view and orientation.

    The first voxel's outer edge stays where the original's was, so the new grid
    covers the original field of view (rounded up to whole voxels).
    """
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(f"Voxel spacing {spacing_mm} mm is not a positive number.")
    grid = image if isinstance(image, Geometry) else Geometry.from_image(image)
    old = np.array(grid.spacing)
    extent = np.array(grid.size) * old
    size = np.maximum(1, np.ceil(extent / spacing_mm - 1e-6)).astype(int)
    shift = (spacing_mm - old) / 2.0  # in index-scaled mm along each axis
    direction = np.array(grid.direction).reshape(3, 3)
    origin = np.array(grid.origin) + direction @ shift
    return Geometry(tuple(int(v) for v in size), (float(spacing_mm),) * 3,
                    tuple(float(v) for v in origin), grid.direction)


def fraction_inside(mask: sitk.Image, geometry: Geometry, transform: sitk.Transform | None = None) -> float:
    """Share of ``mask``'s nonzero voxels whose centres fall on ``geometry`` (moved by ``transform`` first,
    if given); 0.0 for an empty mask. How much of a brain a dose grid covers, or of a lesion a scan holds."""
    zyx = np.argwhere(sitk.GetArrayViewFromImage(mask) != 0)
    if len(zyx) == 0:
        return 0.0
    if len(zyx) > 200_000:  # a regular subsample is plenty for a fraction
        zyx = zyx[:: len(zyx) // 200_000 + 1]
    points = Geometry.from_image(mask).index_to_point(zyx[:, ::-1].astype(float))
    if transform is not None:
        points = np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in points])
    index = geometry.point_to_index(points)
    inside = np.all((index >= -0.5) & (index <= np.array(geometry.size) - 0.5), axis=1)
    return float(np.mean(inside))


def resample_to(image: sitk.Image, geometry: Geometry, transform: sitk.Transform | None = None,
                interpolator: str | int = "linear", default: float = 0.0,
                pixel: int = sitk.sitkFloat32) -> sitk.Image:
    """Resample ``image`` onto ``geometry``.

    ``transform`` maps points of the output grid to points of ``image`` (ITK's
    convention; e.g. the event→reference registration result when bringing the
    event MRI into the reference). Voxels outside ``image`` get ``default``.
    """
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(v) for v in geometry.size])
    resampler.SetOutputSpacing(geometry.spacing)
    resampler.SetOutputOrigin(geometry.origin)
    resampler.SetOutputDirection(geometry.direction)
    resampler.SetInterpolator(interpolator_code(interpolator))
    resampler.SetDefaultPixelValue(float(default))
    resampler.SetOutputPixelType(pixel)
    if transform is not None:
        resampler.SetTransform(transform)
    source = image
    if pixel in (sitk.sitkFloat32, sitk.sitkFloat64) and image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        source = sitk.Cast(image, pixel)
    return resampler.Execute(source)


def resample_isotropic(image: sitk.Image, spacing_mm: float = 1.0, interpolator: str | int = "linear") -> sitk.Image:
    """``image`` on an isotropic grid of ``spacing_mm`` (float32)."""
    return resample_to(image, isotropic_geometry(image, spacing_mm), interpolator=interpolator)


def dose_overlap(dose: sitk.Image, geometry: Geometry, relative_threshold: float = 0.1) -> float:
    """Fraction of the dose's voxels above ``relative_threshold`` × max that lie inside ``geometry``.

    Used to tell a dose from another frame of reference (or a wrong file) from
    one that merely extends beyond the MRI's field of view.
    """
    array = sitk.GetArrayViewFromImage(dose)
    peak = float(array.max()) if array.size else 0.0
    if peak <= 0:
        return 0.0
    zyx = np.argwhere(array >= relative_threshold * peak)
    if len(zyx) > 200_000:  # a regular subsample is plenty for a fraction
        zyx = zyx[:: len(zyx) // 200_000 + 1]
    points = Geometry.from_image(dose).index_to_point(zyx[:, ::-1].astype(float))
    index = geometry.point_to_index(points)
    inside = np.all((index >= -0.5) & (index <= np.array(geometry.size) - 0.5), axis=1)
    return float(np.mean(inside))


def check_dose_overlap(dose: sitk.Image, geometry: Geometry, name: str = "dose image",
                       reference_name: str = "the reference MRI", min_overlap: float = 0.5) -> float:
    """Refuse a dose that does not lie on the MRI; returns the overlap fraction (see :func:`dose_overlap`).

    The dose shares the planning MRI's frame of reference, so no registration
    is involved: when less than ``min_overlap`` of the dose (its voxels above
    10 % of the maximum) falls inside ``geometry``, it belongs to another
    patient or frame of reference, and :class:`InputError` names ``name``.
    """
    peak = float(sitk.GetArrayViewFromImage(dose).max())
    if not peak > 0:
        raise InputError(f"{name} has no positive dose (maximum {peak:g}); is it the right file?")
    fraction = dose_overlap(dose, geometry)
    if fraction < min_overlap:
        if fraction == 0.0:
            what = "does not overlap"
        else:
            what = f"overlaps only {100 * fraction:.0f} % (of its voxels above 10 % of the maximum) with"
        raise InputError(
            f"{name} {what} {reference_name}; the dose grid and the MRI must share a frame of reference "
            "(check that this is the plan of the same patient and that no transform is missing)."
        )
    return fraction


def resample_dose(dose: sitk.Image, geometry: Geometry, name: str = "dose image",
                  reference_name: str = "the reference MRI", min_overlap: float = 0.5) -> sitk.Image:
    """The dose on ``geometry``: linear interpolation, 0 Gy outside the dose grid, after :func:`check_dose_overlap`."""
    check_dose_overlap(dose, geometry, name, reference_name, min_overlap)
    return resample_to(dose, geometry, interpolator="linear", default=0.0)
