"""A prediction on a synthetic case against the truth the case was made from.

The demo and the benchmarks say how far the heatmap's peak lies from the
lesion. The lesion mask is on the event MRI's grid and the heatmap in the
post-op frame, so the peak is carried through the case's true transform
(``truth/event_from_reference.tfm``), not through the registration being judged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError


def truth_folder(case_folder: str | os.PathLike) -> Path:
    folder = Path(case_folder) / "truth"
    if not (folder / "truth.json").exists():
        raise InputError(f"{case_folder} is not a synthetic case: it has no truth/truth.json.")
    return folder


def read_truth(case_folder: str | os.PathLike) -> dict[str, Any]:
    return json.loads((truth_folder(case_folder) / "truth.json").read_text(encoding="utf-8"))


def hottest_points(heatmap: sitk.Image, tolerance: float = 0.01) -> np.ndarray:
    """Physical points (LPS, N×3) of the heatmap's hottest block: within ``tolerance`` of its range below the
    maximum. An occlusion map is flat over blocks of the stride, so its peak is a block, not one voxel."""
    heat = sitk.GetArrayFromImage(heatmap).astype(np.float64)
    if not np.isfinite(heat).all() or heat.max() <= heat.min():
        raise InputError("The heatmap is flat or not finite: it has no peak.")
    zyx = np.argwhere(heat >= heat.max() - tolerance * (heat.max() - heat.min()))
    return _points(heatmap, zyx)


def lesion_distance_mm(points_lps: Sequence[Sequence[float]] | np.ndarray, case_folder: str | os.PathLike) -> float:
    """Distance in mm from the nearest of some post-op-frame points to the case's lesion (0 when one is inside)."""
    folder = truth_folder(case_folder)
    lesion = sitk.ReadImage(str(folder / "lesion_mask.nii.gz"))
    to_event = sitk.ReadTransform(str(folder / "event_from_reference.tfm"))
    points = np.array([to_event.TransformPoint([float(v) for v in point]) for point in np.atleast_2d(points_lps)])
    mask = sitk.GetArrayViewFromImage(lesion) > 0
    if not mask.any():
        raise InputError(f"The lesion mask of {case_folder} is empty.")
    for point in points:
        index = np.round(lesion.TransformPhysicalPointToContinuousIndex(point.tolist())).astype(int)
        if np.all(index >= 0) and np.all(index < np.array(lesion.GetSize())) and mask[tuple(index[::-1])]:
            return 0.0
    voxels = _points(lesion, np.argwhere(mask))
    return float(min(np.min(np.linalg.norm(voxels - point, axis=1)) for point in points))


def _points(image: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (zyx[:, ::-1] * np.array(image.GetSpacing())) @ direction.T
