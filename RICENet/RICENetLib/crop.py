"""Crop/pad to the network's input size, centred on the brain.

The box is recorded in index space of the isotropic reference grid, in numpy
(z, y, x) order, and may reach outside it (negative start, or beyond the end):
those voxels are padding. Because the box is a whole-voxel shift of that grid,
the model-space grid is again a plain image grid (:func:`cropped_geometry`),
which is what makes the way back to the patient exact.

>>> box = crop_box_around(mask_array, (224, 224, 224))   # doctest: +SKIP
>>> cropped = crop_or_pad(array, box)                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import InputError
from .resampling import Geometry


@dataclass(frozen=True)
class CropBox:
    """``start_zyx`` (may be negative) and ``size_zyx`` in voxels of the isotropic reference grid."""

    start_zyx: tuple[int, int, int]
    size_zyx: tuple[int, int, int]

    @property
    def stop_zyx(self) -> tuple[int, int, int]:
        return tuple(int(a + n) for a, n in zip(self.start_zyx, self.size_zyx))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {"start_zyx": list(self.start_zyx), "size_zyx": list(self.size_zyx)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CropBox":
        try:
            box = cls(tuple(int(v) for v in data["start_zyx"]), tuple(int(v) for v in data["size_zyx"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"Invalid crop box {data!r}: {error}") from None
        if len(box.start_zyx) != 3 or len(box.size_zyx) != 3 or min(box.size_zyx) < 1:
            raise InputError(f"Invalid crop box {data!r}: three starts and three positive sizes are needed.")
        return box


def input_size_zyx(input_size: int | Sequence[int]) -> tuple[int, int, int]:
    """An ``int`` (cube) or a (D, H, W) = (z, y, x) triple, validated."""
    if isinstance(input_size, (int, np.integer)):
        size = (int(input_size),) * 3
    else:
        size = tuple(int(v) for v in input_size)
    if len(size) != 3 or min(size) < 8:
        raise InputError(f"Input size {input_size!r}: give one number or three (z, y, x), each at least 8 voxels.")
    return size  # type: ignore[return-value]


def crop_box_around(mask: np.ndarray, size_zyx: Sequence[int]) -> CropBox:
    """The box of ``size_zyx`` whose centre is the centre of the mask's bounding box.

    The bounding-box centre (not the centre of mass) keeps the whole brain in
    view when it fits, whatever the shape of a resection cavity.
    """
    occupied = np.argwhere(np.asarray(mask) > 0)
    if occupied.size == 0:
        raise InputError("Cannot centre the crop: the brain mask is empty.")
    low, high = occupied.min(0), occupied.max(0) + 1
    centre = (low + high) / 2.0
    size = np.array([int(v) for v in size_zyx])
    start = np.floor(centre - size / 2.0 + 0.5).astype(int)
    return CropBox(tuple(int(v) for v in start), tuple(int(v) for v in size))


def crop_or_pad(array: np.ndarray, box: CropBox, fill: float = 0.0) -> np.ndarray:
    """The (z, y, x) region of ``array`` in ``box``; voxels outside ``array`` get ``fill``."""
    array = np.asarray(array)
    out = np.full(box.size_zyx, fill, dtype=array.dtype)
    source, target = [], []
    for start, size, extent in zip(box.start_zyx, box.size_zyx, array.shape):
        lo, hi = max(start, 0), min(start + size, extent)
        if hi <= lo:
            return out  # no overlap at all along this axis
        source.append(slice(lo, hi))
        target.append(slice(lo - start, hi - start))
    out[tuple(target)] = array[tuple(source)]
    return out


def uncrop(array: np.ndarray, box: CropBox, shape_zyx: Sequence[int], fill: float = 0.0) -> np.ndarray:
    """Put a model-space array back into the full isotropic grid of ``shape_zyx`` (inverse of :func:`crop_or_pad`)."""
    inverse = CropBox(tuple(-v for v in box.start_zyx), tuple(int(v) for v in shape_zyx))
    return crop_or_pad(array, inverse, fill)


def cropped_geometry(geometry: Geometry, box: CropBox) -> Geometry:
    """The grid of the box's voxels: same spacing and direction, origin moved to the box's first voxel."""
    start_xyz = np.array(box.start_zyx[::-1], dtype=float)
    origin = geometry.index_to_point(start_xyz)
    return Geometry(tuple(int(v) for v in box.size_zyx[::-1]), geometry.spacing,
                    tuple(float(v) for v in origin), geometry.direction)


def fraction_inside(mask: np.ndarray, box: CropBox) -> float:
    """The share of the mask's voxels that the box keeps (1.0 = the whole brain is in view)."""
    total = int(np.count_nonzero(mask))
    return 1.0 if total == 0 else float(np.count_nonzero(crop_or_pad(mask, box))) / total
