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


def lesion_distance_mm(point_lps: Sequence[float], case_folder: str | os.PathLike) -> float:
    """Distance in mm from a post-op-frame point to the nearest voxel of the case's lesion (0 inside it)."""
    folder = truth_folder(case_folder)
    lesion = sitk.ReadImage(str(folder / "lesion_mask.nii.gz"))
    to_event = sitk.ReadTransform(str(folder / "event_from_reference.tfm"))
    point = np.array(to_event.TransformPoint([float(v) for v in point_lps]))
    mask = sitk.GetArrayViewFromImage(lesion) > 0
    index = np.round(lesion.TransformPhysicalPointToContinuousIndex(point.tolist())).astype(int)
    if np.all(index >= 0) and np.all(index < np.array(lesion.GetSize())) and mask[tuple(index[::-1])]:
        return 0.0
    zyx = np.argwhere(mask)
    if not len(zyx):
        raise InputError(f"The lesion mask of {case_folder} is empty.")
    direction = np.array(lesion.GetDirection()).reshape(3, 3)
    points = np.array(lesion.GetOrigin()) + (zyx[:, ::-1] * np.array(lesion.GetSpacing())) @ direction.T
    return float(np.min(np.linalg.norm(points - point, axis=1)))
