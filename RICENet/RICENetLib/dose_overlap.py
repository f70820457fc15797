"""Does the heatmap sit in the high dose and on the lesion? The reader's judgement by eye, as numbers.

Everything is computed on the heatmap's grid, which is the reference (post-op)
space the occlusion map is mapped back to (see
:meth:`~RICENetLib.preprocessing.PreprocessResult.to_reference`). The dose in
Gy is resampled onto it linearly (0 Gy outside its grid), as preprocessing
does; a lesion mask (nonzero = lesion, any grid of the same frame of
reference, or of the event MRI's frame through the registration) with nearest
neighbour. Volumes are in mL with each grid's own voxel volume, so a lesion
drawn on a finer grid than the reference keeps its volume on record.

Figures, for a heatmap ``h`` (only its positive part counts: ``h⁺ = max(h, 0)``):

* ``share`` of an isodose level L (a fraction of the prescription): Σ h⁺ over
  the voxels with dose ≥ L × prescription, divided by Σ h⁺;
* ``peak_dose_gy``: the dose at the heatmap's maximum (the first such voxel);
* ``hottest_mean_dose_gy``: the mean dose over the hottest 5 % of the voxels
  with h > 0 (⌈5 %⌉ voxels at least one, voxels tied with the last one included);
* for a lesion: mean and maximum dose, D95 (the highest dose that at least
  95 % of the lesion volume receives), V95 (the share of the lesion volume
  receiving ≥ 95 % of the prescription) and the heatmap's share inside it.

A heatmap with no positive value gives ``None`` for its figures (and the note
``"no positive mass"``), never NaN.

>>> overlap = compute_dose_overlap(heatmap, dose_gy, prescription_gy=60.0)   # doctest: +SKIP
>>> overlap.levels[1].share                                                  # doctest: +SKIP
0.62
"""

from __future__ import annotations

import html
import logging
import math
import numbers
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .resampling import Geometry, fraction_inside, resample_to

log = logging.getLogger(__name__)

#: Isodose levels, as fractions of the prescription.
DEFAULT_LEVELS = (0.5, 0.95)
#: The share of the heatmap's positive voxels whose mean dose is reported.
HOT_FRACTION = 0.05
#: V95's level, a fraction of the prescription.
V_LEVEL = 0.95
#: A voxel counts as receiving a level when its dose is within this many Gy below it (float rounding).
TOLERANCE_GY = 1e-4
#: The note of a heatmap without positive values.
NO_POSITIVE_MASS = "no positive mass"
LESION_SPACES = ("reference", "event")


@dataclass
class IsodoseShare:
    """One isodose level: its dose, the volume it covers on the reference grid, the heatmap's share in it."""

    level: float  # fraction of the prescription
    dose_gy: float
    volume_ml: float
    share: float | None  # None: no positive heatmap mass


@dataclass
class LesionDose:
    """The lesion's dose statistics and the heatmap's share inside it."""

    name: str
    volume_ml: float  # on the reference grid (after nearest-neighbour resampling)
    source_volume_ml: float  # on the mask's own grid
    fraction_in_reference: float  # of the mask's voxels whose centres fall on the reference grid
    mean_gy: float
    max_gy: float
    d95_gy: float
    v95: float  # share of the lesion volume receiving >= 95 % of the prescription
    heatmap_share: float | None  # None: no heatmap, or no positive mass
    space: str = "reference"
    centre_lps: list[float] | None = None  # the lesion voxel nearest the mask's centroid, patient LPS mm (report's slices)


@dataclass
class DoseOverlap:
    """Where the heatmap's mass lies relative to the dose (and the lesion): JSON as ``dose_overlap``."""

    prescription_gy: float
    levels: list[IsodoseShare]
    heatmap_mass: float | None = None  # Σ h⁺ × voxel volume (probability drop × mL); None: no heatmap
    peak_dose_gy: float | None = None
    peak_point_lps: list[float] | None = None
    hottest_fraction: float = HOT_FRACTION
    hottest_voxels: int = 0
    hottest_mean_dose_gy: float | None = None
    lesion: LesionDose | None = None
    note: str = ""  # "" or why the heatmap figures are None

    def to_dict(self) -> dict[str, Any]:
        return _rounded(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DoseOverlap":
        try:
            values = dict(data)
            values["levels"] = [IsodoseShare(**level) for level in values.get("levels", [])]
            if values.get("lesion") is not None:
                values["lesion"] = LesionDose(**values["lesion"])
            return cls(**values)
        except TypeError as error:
            raise InputError(f"Invalid dose_overlap record: {error}") from None

    def rows(self) -> list[tuple[str, str]]:
        """(quantity, value as text) for the report, the Slicer table and the console."""
        def number(value: float | None, unit: str = "", digits: int = 1) -> str:
            return (self.note or "no heatmap") if value is None else f"{value:.{digits}f}{unit}"

        def percent(value: float | None) -> str:
            return (self.note or "no heatmap") if value is None else f"{100 * value:.1f} %"

        rows: list[tuple[str, str]] = []
        if self.heatmap_mass is not None:  # a heatmap was computed
            rows += [(f"heatmap mass in the {100 * lv.level:g} % isodose ({lv.dose_gy:.1f} Gy)", percent(lv.share))
                     for lv in self.levels]
            rows.append(("dose at the heatmap's peak", number(self.peak_dose_gy, " Gy")))
            rows.append((f"mean dose over the heatmap's hottest {100 * self.hottest_fraction:g} %",
                         number(self.hottest_mean_dose_gy, " Gy")))
        lesion = self.lesion
        if lesion is not None:
            rows += [("lesion volume", f"{lesion.volume_ml:.2f} mL" + (
                         f" (mask {lesion.source_volume_ml:.2f} mL)"
                         if not math.isclose(lesion.volume_ml, lesion.source_volume_ml, rel_tol=1e-3) else "")),
                     ("lesion mean dose", f"{lesion.mean_gy:.1f} Gy"), ("lesion maximum dose", f"{lesion.max_gy:.1f} Gy"),
                     ("lesion D95", f"{lesion.d95_gy:.1f} Gy"),
                     (f"lesion V95 % (≥ {V_LEVEL * self.prescription_gy:.1f} Gy)", f"{100 * lesion.v95:.1f} %")]
            if self.heatmap_mass is not None:
                rows.append(("heatmap mass in the lesion", percent(lesion.heatmap_share)))
            if lesion.fraction_in_reference < 1.0:
                rows.append(("lesion mask on the reference grid", f"{100 * lesion.fraction_in_reference:.1f} %"))
        return rows

    def csv_fields(self) -> dict[str, str]:
        """Flat columns for ``predictions.csv`` (empty where a figure does not exist)."""
        def text(value: float | None, digits: int = 4) -> str:
            return "" if value is None else f"{value:.{digits}f}"

        out = {f"heatmap_in_{100 * lv.level:g}pct_isodose": text(lv.share) for lv in self.levels}
        out["dose_at_heatmap_peak_gy"] = text(self.peak_dose_gy, 2)
        out[f"dose_hottest_{100 * self.hottest_fraction:g}pct_mean_gy"] = text(self.hottest_mean_dose_gy, 2)
        lesion = self.lesion
        for name, attribute, digits in (("lesion_mean_gy", "mean_gy", 2), ("lesion_max_gy", "max_gy", 2),
                                        ("lesion_d95_gy", "d95_gy", 2), ("lesion_v95", "v95", 4),
                                        ("heatmap_in_lesion", "heatmap_share", 4)):
            out[name] = text(getattr(lesion, attribute) if lesion is not None else None, digits)
        return out


def csv_columns(levels: Sequence[float] = DEFAULT_LEVELS) -> list[str]:
    """The ``predictions.csv`` columns of :meth:`DoseOverlap.csv_fields` (for rows without a heatmap too)."""
    return list(DoseOverlap(60.0, [IsodoseShare(level, 0.0, 0.0, None) for level in levels]).csv_fields())


def _rounded(value: Any) -> Any:
    """Floats rounded to 6 significant digits for the JSON record (no false precision)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


# --------------------------------------------------------------------------- inputs


def voxel_volume_ml(geometry: Geometry) -> float:
    """One voxel's volume in mL (direction and spacing: oblique grids too)."""
    return abs(float(np.linalg.det(geometry.matrix))) / 1000.0


def read_lesion_mask(path: str | os.PathLike) -> sitk.Image:
    """A lesion mask file (label image, nonzero = lesion) as a uint8 0/1 image; refused when empty."""
    from .image_io import read_image

    image = read_image(path)
    return lesion_mask(image, f"Lesion mask {path}")


def lesion_mask(image: sitk.Image, name: str = "Lesion mask") -> sitk.Image:
    """``image`` as a uint8 0/1 mask (nonzero = lesion); :class:`InputError` naming ``name`` when unusable."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} is not a 3D label image (one value per voxel); save the lesion as a labelmap.")
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values; a label image holds whole numbers (0 = background).")
    mask = (array != 0).astype(np.uint8)
    if not mask.any():
        raise InputError(f"{name} is empty: no voxel is nonzero. Outline the lesion (nonzero = lesion) "
                         "and save it again.")
    out = sitk.GetImageFromArray(mask)
    out.CopyInformation(image)
    return out


def check_lesion_overlaps(lesion: sitk.Image, image: sitk.Image | str | os.PathLike, name: str, what: str) -> None:
    """Refuse a mask that lies wholly outside ``image`` (e.g. the post-op MRI), before any long computation."""
    if not isinstance(image, sitk.Image):
        from .image_io import read_image

        image = read_image(image)
    if fraction_inside(lesion_mask(lesion, name), Geometry.from_image(image), None) == 0.0:
        raise InputError(f"{name} lies outside {what}: it does not overlap that scan. Check that it belongs to this "
                         "patient and to the right scan (a mask drawn on the event MRI needs --lesion-space event).")


def _on_grid(image: sitk.Image, geometry: Geometry) -> bool:
    other = Geometry.from_image(image)
    return (other.size == geometry.size and np.allclose(other.spacing, geometry.spacing, atol=1e-6)
            and np.allclose(other.origin, geometry.origin, atol=1e-4)
            and np.allclose(other.direction, geometry.direction, atol=1e-6))


# --------------------------------------------------------------------------- the figures


def compute_dose_overlap(
    heatmap: sitk.Image | None,
    dose_gy: sitk.Image,
    prescription_gy: float,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    lesion: sitk.Image | None = None,
    lesion_name: str = "lesion mask",
    event_to_reference: sitk.Transform | None = None,
    reference: sitk.Image | Geometry | None = None,
) -> DoseOverlap:
    """The heatmap's overlap with the isodose levels (and the lesion), on the heatmap's grid.

    ``dose_gy`` is the dose in Gy on any grid of the reference frame.
    ``lesion`` is a mask (nonzero = lesion); with ``event_to_reference`` (the
    registration, mapping reference points to event points) it is taken to be
    drawn in the event MRI's frame and is moved through it. Without a heatmap,
    ``reference`` gives the grid and only the lesion's dose is computed.
    """
    if not (isinstance(prescription_gy, numbers.Real) and math.isfinite(prescription_gy) and prescription_gy > 0):
        raise InputError(f"Prescription {prescription_gy!r} Gy: give a positive dose.")
    if any(not (isinstance(level, numbers.Real) and 0 < level <= 2) for level in levels):
        raise InputError(f"Isodose levels {list(levels)}: give fractions of the prescription above 0 and at most 2 "
                         "(e.g. 0.5, 0.95).")
    if heatmap is not None:
        grid = Geometry.from_image(heatmap)
    elif reference is not None:
        grid = reference if isinstance(reference, Geometry) else Geometry.from_image(reference)
    else:
        raise InputError("A heatmap or a reference grid is needed to compare the dose with.")
    ml = voxel_volume_ml(grid)
    dose = dose_gy if _on_grid(dose_gy, grid) else resample_to(dose_gy, grid, interpolator="linear", default=0.0)
    gy = sitk.GetArrayFromImage(dose).astype(np.float64)
    if not np.all(np.isfinite(gy)):
        raise InputError("The dose contains NaN or infinite values.")

    heat = None
    note = "no heatmap"
    if heatmap is not None:
        heat = sitk.GetArrayFromImage(heatmap).astype(np.float64)
        if not np.all(np.isfinite(heat)):
            raise InputError("The heatmap contains NaN or infinite values.")
        heat = np.maximum(heat, 0.0)
        note = "" if heat.any() else NO_POSITIVE_MASS
    total = float(heat.sum()) if heat is not None else 0.0
    positive = total > 0

    shares = []
    for level in sorted(set(float(v) for v in levels)):
        region = gy >= level * prescription_gy - TOLERANCE_GY
        share = float(heat[region].sum() / total) if positive else None
        shares.append(IsodoseShare(level, level * prescription_gy, float(region.sum()) * ml, share))
    result = DoseOverlap(float(prescription_gy), shares, note=note,
                         heatmap_mass=total * ml if heat is not None else None)
    if positive:
        flat = heat.ravel()
        peak = int(np.argmax(flat))
        result.peak_dose_gy = float(gy.ravel()[peak])
        zyx = np.unravel_index(peak, heat.shape)
        result.peak_point_lps = [float(v) for v in grid.index_to_point(np.array(zyx[::-1], dtype=float))]
        values = flat[flat > 0]
        k = max(1, math.ceil(HOT_FRACTION * values.size))
        threshold = np.partition(values, values.size - k)[values.size - k]
        hot = heat >= threshold
        result.hottest_voxels = int(hot.sum())
        result.hottest_mean_dose_gy = float(gy[hot].mean())
    if lesion is not None:
        result.lesion = _lesion_dose(lesion, lesion_name, grid, gy, heat if positive else None, prescription_gy,
                                     event_to_reference)
    return result


def central_voxel(mask: np.ndarray) -> tuple[int, ...]:
    """The voxel of ``mask`` nearest its centroid: inside it, even when its parts leave the centroid between them."""
    voxels = np.argwhere(mask)
    return tuple(int(v) for v in voxels[int(np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1)))])


def _centre_lps(on_grid: np.ndarray, grid: Geometry) -> list[float]:
    return [float(v) for v in grid.index_to_point(np.array(central_voxel(on_grid)[::-1], dtype=float))]


def _lesion_dose(lesion: sitk.Image, name: str, grid: Geometry, gy: np.ndarray, heat: np.ndarray | None,
                 prescription_gy: float, event_to_reference: sitk.Transform | None) -> LesionDose:
    mask = lesion_mask(lesion, name)
    source_ml = float(sitk.GetArrayViewFromImage(mask).sum()) * voxel_volume_ml(Geometry.from_image(mask))
    inverse = event_to_reference.GetInverse() if event_to_reference is not None else None
    inside = fraction_inside(mask, grid, inverse)
    if inside == 0.0:
        where = ("the event MRI's frame, moved through the registration" if event_to_reference is not None
                 else "its own frame")
        raise InputError(f"{name} lies outside the reference (post-op) grid (in {where}): it does not overlap the "
                         "post-op MRI. Check that it belongs to this patient and to the right scan "
                         "(a mask drawn on the event MRI needs the event space).")
    resampled = resample_to(mask, grid, transform=event_to_reference, interpolator="nearest", default=0.0,
                            pixel=sitk.sitkUInt8)
    on_grid = sitk.GetArrayViewFromImage(resampled) != 0
    count = int(on_grid.sum())
    if count == 0:
        raise InputError(f"{name} ({source_ml:.3f} mL) covers no voxel centre of the reference grid "
                         f"({voxel_volume_ml(grid) * 1000:.1f} mm³ voxels); it is smaller than one voxel there.")
    if inside < 0.999:
        log.warning("%s: %.1f %% of it lies outside the reference (post-op) grid; its statistics cover the rest.",
                    name, 100 * (1 - inside))
    doses = np.sort(gy[on_grid])
    needed = math.ceil(0.95 * count - 1e-9)  # voxels that must receive at least D95
    total = float(heat.sum()) if heat is not None else 0.0
    return LesionDose(
        name=name,
        volume_ml=count * voxel_volume_ml(grid),
        source_volume_ml=source_ml,
        fraction_in_reference=inside,
        mean_gy=float(doses.mean()),
        max_gy=float(doses[-1]),
        d95_gy=float(doses[count - needed]),
        v95=float(np.mean(doses >= V_LEVEL * prescription_gy - TOLERANCE_GY)),
        heatmap_share=float(heat[on_grid].sum() / total) if total > 0 else None,
        space="event" if event_to_reference is not None else "reference",
        centre_lps=_centre_lps(on_grid, grid),
    )


# --------------------------------------------------------------------------- a prediction's figures


def prediction_dose_gy(prediction: Any, dose: sitk.Image | str | os.PathLike) -> tuple[sitk.Image, float]:
    """The dose input in Gy, read with the unit preprocessing used, and the bundle's prescription (Gy)."""
    from .image_io import read_image
    from .normalisation import dose_in_gy

    prepared = getattr(prediction, "preprocessed", None)
    params = getattr(prepared, "params", None)
    recorded = ((getattr(prepared, "info", None) or {}).get("dose") or {}).get("unit_of_input")
    unit = recorded or getattr(params, "dose_unit", None)
    name = "dose image" if isinstance(dose, sitk.Image) else f"dose {dose}"
    dose_gy, _ = dose_in_gy(dose if isinstance(dose, sitk.Image) else read_image(dose), unit, name)
    return dose_gy, float(getattr(params, "prescription_gy", 60.0))


def prediction_dose_overlap(
    prediction: Any,
    dose: sitk.Image | str | os.PathLike,
    *,
    lesion: sitk.Image | str | os.PathLike | None = None,
    lesion_name: str | None = None,
    lesion_space: str = "reference",
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> DoseOverlap | None:
    """The figures of a prediction (``None`` without a heatmap and a lesion).

    ``dose`` is the dose input as given to :func:`~RICENetLib.inference.predict_case`;
    it is read in Gy with the unit preprocessing used, and the prescription is
    the bundle's. ``lesion`` is a mask image or file (``lesion_name`` names it
    in messages); ``lesion_space`` ``"event"`` moves the mask through the
    prediction's registration (a mask drawn on the event MRI).
    """
    heatmap = getattr(prediction, "occlusion", None)
    if heatmap is None and lesion is None:
        return None
    if lesion_space not in LESION_SPACES:
        raise InputError(f"Unknown lesion space '{lesion_space}'; use one of {', '.join(LESION_SPACES)}.")
    prepared = getattr(prediction, "preprocessed", None)
    dose_gy, prescription = prediction_dose_gy(prediction, dose)
    if lesion is not None and not isinstance(lesion, sitk.Image):
        lesion_name = lesion_name or f"Lesion mask {lesion}"
        lesion = read_lesion_mask(lesion)
    lesion_name = lesion_name or "Lesion mask"
    transform = None
    if lesion is not None and lesion_space == "event":
        transform = getattr(prediction, "event_to_reference", None)
        if transform is None:
            raise InputError(f"{lesion_name}: the lesion space 'event' needs the prediction's registration, "
                             "which it lacks.")
    reference = getattr(prediction, "reference", None)
    if lesion is not None and lesion_space == "reference" and reference is not None:
        _warn_if_event_grid(lesion, lesion_name, reference, prepared)
    return compute_dose_overlap(heatmap, dose_gy, prescription, levels=levels, lesion=lesion, lesion_name=lesion_name,
                                event_to_reference=transform, reference=reference)


def _warn_if_event_grid(lesion: sitk.Image, name: str, reference: sitk.Image, prepared: Any) -> None:
    """A mask on the event MRI's grid, taken as in the reference frame, is probably a mistake: say so."""
    event = getattr(prepared, "event_geometry", None)
    if event is not None and _on_grid(lesion, event) and not _on_grid(lesion, Geometry.from_image(reference)):
        log.warning("%s has the event MRI's grid but is taken in the post-op (reference) frame; if it was drawn on "
                    "the event MRI, give the lesion space 'event' (--lesion-space event).", name)


# --------------------------------------------------------------------------- report


def overlap_html(data: Mapping[str, Any] | None) -> str:
    """The report's "Heatmap and dose" section from ``prediction.json``'s ``dose_overlap`` ("" when absent)."""
    if not data:
        return ""
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(q)}</td><td>{html.escape(v)}</td></tr>"
                   for q, v in DoseOverlap.from_dict(data).rows())
    return ("<h2>Heatmap and dose</h2><table id=\"dose_overlap\"><tr><th>quantity</th><th>value</th></tr>"
            f"{rows}</table><p class=note>Shares are of the heatmap's positive mass, on the post-op (reference) grid; "
            f"isodose levels are fractions of the {float(data['prescription_gy']):g} Gy prescription.</p>")


__all__ = ["DEFAULT_LEVELS", "DoseOverlap", "IsodoseShare", "LesionDose", "central_voxel", "compute_dose_overlap",
           "csv_columns", "lesion_mask", "overlap_html", "prediction_dose_overlap", "read_lesion_mask", "voxel_volume_ml"]

