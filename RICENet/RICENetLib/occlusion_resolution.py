"""Can an occlusion grid resolve anything at the model's input size? Boxes per axis, and a warning if not.

The presets are sized for 224³ inputs. On a small input (a demo bundle's 40³)
the ``quick`` preset's 32-voxel boxes fit twice per axis: the map is a few
opaque blocks that say nothing about where the decision comes from. A grid
with fewer than :data:`MIN_BOXES_PER_AXIS` box positions along an axis, or
boxes larger than a quarter of the input, gets a warning with a mask and a
stride that do resolve: a fifth of the input and half of that (40³ → 8 and 4:
9 boxes per axis, 729 in all, what ``ricenet demo`` uses; 224³ → 45 and 22).

>>> boxes_per_axis((40, 40, 40), 32, 32)
(2, 2, 2)
>>> print(resolution_warning((40, 40, 40), 32, 32))  # doctest: +NORMALIZE_WHITESPACE
occlusion boxes of 32 voxels every 32 on this model's 40³ input give only 2 × 2 × 2 boxes (8 in all): the map
would be a few opaque blocks. Use a mask of about 8 and a stride of 4 (9 boxes per axis, 729 in all): e.g.
--occlusion-mask 8 --occlusion-stride 4.
>>> resolution_warning((224, 224, 224), 16, 8) is None
True
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, Union

MIN_BOXES_PER_AXIS = 4
#: A box edge above this fraction of the input is too coarse whatever the stride.
MAX_MASK_FRACTION = 0.25

Size = Union[int, Sequence[int]]


def _triple(value: Size) -> tuple[int, int, int]:
    values = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * 3
    return values if len(values) == 3 else (values[0],) * 3  # type: ignore[return-value]


def _stride(mask: tuple[int, int, int], stride: Size | None, overlap: float) -> tuple[int, int, int]:
    if stride is None:  # as OcclusionSettings derives it (MONAI's rule)
        return tuple(max(int(m * (1 - overlap)), 1) for m in mask)  # type: ignore[return-value]
    return _triple(stride)


def boxes_per_axis(input_size: Size, mask_size: Size, stride: Size | None = None, overlap: float = 0.5) -> tuple[int, int, int]:
    """Box positions along (z, y, x), counted as :func:`RICENetLib.occlusion.box_grid` places them."""
    from .occlusion import _axis_starts

    shape, mask = _triple(input_size), _triple(mask_size)
    steps = _stride(mask, stride, overlap)
    return tuple(len(_axis_starts(n, min(m, n), max(s, 1))) for n, m, s in zip(shape, mask, steps))  # type: ignore[return-value]


def suggested_grid(input_size: Size) -> tuple[int, int]:
    """(mask, stride) that resolve the smallest axis of ``input_size``: a fifth of it, and half of that."""
    smallest = min(_triple(input_size))
    mask = max(2, round(smallest / 5))
    return mask, max(1, mask // 2)


def resolution_warning(input_size: Size, mask_size: Size, stride: Size | None = None, overlap: float = 0.5) -> str | None:
    """A sentence for the user when the grid cannot resolve the input, else ``None``."""
    shape, mask = _triple(input_size), _triple(mask_size)
    counts = boxes_per_axis(shape, mask, stride, overlap)
    coarse = [m > MAX_MASK_FRACTION * n for m, n in zip(mask, shape)]
    if min(counts) >= MIN_BOXES_PER_AXIS and not any(coarse):
        return None
    steps = _stride(mask, stride, overlap)
    good_mask, good_stride = suggested_grid(shape)
    good = boxes_per_axis(shape, good_mask, good_stride)

    def text(values: Sequence[int]) -> str:
        return str(values[0]) if len(set(values)) == 1 else "×".join(map(str, values))

    size = f"{shape[0]}³" if len(set(shape)) == 1 else "×".join(map(str, shape))
    return (f"occlusion boxes of {text(mask)} voxels every {text(steps)} on this model's {size} input give only "
            f"{' × '.join(map(str, counts))} boxes ({math.prod(counts)} in all): the map would be a few opaque blocks. "
            f"Use a mask of about {good_mask} and a stride of {good_stride} ({text(good)} boxes per axis, "
            f"{math.prod(good)} in all): e.g. --occlusion-mask {good_mask} --occlusion-stride {good_stride}.")


def settings_warning(input_size: Size, settings: Any) -> str | None:
    """:func:`resolution_warning` for :class:`~RICENetLib.occlusion.OcclusionSettings` or its ``to_dict()``."""
    data: Mapping[str, Any] = settings if isinstance(settings, Mapping) else vars(settings)
    return resolution_warning(input_size, data.get("mask_size", 16), data.get("stride"), float(data.get("overlap", 0.5)))
