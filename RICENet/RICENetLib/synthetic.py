"""Synthetic glioblastoma follow-up cases with known ground truth.

Real patient data cannot ship with an open-source project, yet every step of
the pipeline needs realistic input to be tested: registration needs two MRIs of
the same head in different poses, skull stripping needs a skull, the dose needs
its own coarser grid, and the classifier needs a class signal that is learnable
but not trivial. The heads are built on the MNI ICBM152 2009a templates shipped
by ``nilearn`` (see :data:`MNI_NOTICE`).

The class rule (also in the README's data section):

* **recurrence** — most lesions (85 %) grow from the resection-cavity wall as a
  lobulated nodule (radius 7–12 mm) with a thick enhancing rim; the rest appear
  8–25 mm from the cavity, often at the edge of or outside the high-dose region. The post-op scan
  more often shows a residual enhancing nodule on the cavity wall (60 % vs 25 %).
  Plans are 60 Gy in 60 % of cases, otherwise 40.05 Gy, with a 10–20 mm margin.
* **RICE** — most lesions (85 %) are one to three small (radius 4–7 mm), patchy,
  thin-walled foci in white matter inside the ≥ 95 % isodose, at least 6 mm from
  the cavity wall; the rest are a single focus 2–6 mm from the wall. Plans are
  60 Gy in 90 % of cases, with a 15–25 mm margin.

So the event MRI carries most of the signal, the dose adds where the lesion
lies relative to the high-dose region, and the post-op MRI and the dose alone
carry weaker hints; optional label noise flips a fraction of labels.

``classes="distinct"`` is an easier cohort for demonstrations, not the default:
every lesion follows its class's typical pattern, recurrences are larger
(solid nodules of radius 12–16 mm growing from the cavity wall, enhancing
2.2 × white matter instead of 1.45 ×) and RICE foci smaller (radius 3–5 mm), and
every plan is 60 Gy, so that a network trained for minutes on a CPU can learn
the rule from the lesion.
``skull_stripped=True`` writes brain-only MRIs (zero outside the brain), as
research collections such as BraTS are distributed; they are prepared with
``--skull-strip none``.

>>> case = generate_case("P001", "rice", seed=1, size=48)    # doctest: +SKIP
>>> write_cohort("synthetic", cases=10, seed=0)               # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from . import CLASS_NAMES
from .errors import InputError
from .progress import as_progress

MNI_NOTICE = """\
The synthetic anatomy is derived from the MNI ICBM152 non-linear symmetric 2009a
templates (T1, grey and white matter), as shipped in the nilearn package.

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University. Permission to use,
copy, modify, and distribute this software and its documentation for any
purpose and without fee is hereby granted, provided that the above
copyright notice appear in all copies. The authors and McGill University
make no representations about the suitability of this software for any
purpose. It is provided "as is" without express or implied warranty. The
authors are not responsible for any data loss, equipment damage, property
loss, or injury to subjects or patients resulting from the use or misuse
of this software package.

References: Fonov et al., NeuroImage 47 (2009) S102; Fonov et al.,
NeuroImage 54 (2011) 313-327; Collins et al., NeuroImage (1999).
"""

#: Field of view of the post-op scan in mm (x, y, z), LPS axes.
FIELD_OF_VIEW_MM = (210.0, 240.0, 210.0)
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
ENHANCEMENT = 1.45  # T1c intensity of enhancing tissue, relative to white matter ≈ 1
TYPICAL_FRACTION = 0.85  # lesions that follow their class's typical pattern
DISTINCT_RECURRENCE_ENHANCEMENT = 2.2  # classes="distinct": recurrences enhance avidly, RICE foci as usual
#: ``classes`` settings of :func:`generate_case`: the paper-like default and the easier demonstration cohort.
CLASS_SETTINGS = ("paper", "distinct")


@dataclass
class SyntheticCase:
    """One synthetic patient: the three inputs and the ground truth behind them."""

    case_id: str
    label: str
    postop: sitk.Image
    event: sitk.Image
    dose: sitk.Image
    brain_mask: sitk.Image  # post-op grid
    lesion_mask: sitk.Image  # event grid
    event_from_reference: sitk.AffineTransform  # maps post-op points to event points (ITK convention)
    truth: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- anatomy


def _template_dir() -> Path:
    try:
        import nilearn
    except ImportError:  # pragma: no cover - nilearn is a declared dependency of the generator
        raise InputError(
            "The synthetic cohort needs the 'nilearn' package (it ships the MNI templates): pip install nilearn"
        ) from None
    return Path(nilearn.__file__).parent / "datasets" / "data"


@functools.lru_cache(maxsize=2)
def _anatomy(resolution_mm: float) -> dict[str, np.ndarray | sitk.Image]:
    """Template T1/GM/WM on an identity-direction grid padded for a skull, at ``resolution_mm``.

    Cached because every case of a cohort starts from the same anatomy; the
    arrays are never modified in place.
    """
    folder = _template_dir()
    images = {}
    for key, name in TEMPLATE_FILES.items():
        path = folder / name
        if not path.exists():
            raise InputError(f"MNI template {path} is missing from the nilearn installation.")
        images[key] = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    t1 = images["t1"]
    brain = sitk.GetArrayViewFromImage(t1) > 0
    idx = np.argwhere(brain)
    corners = [t1.TransformIndexToPhysicalPoint([int(v) for v in c[::-1]]) for c in (idx.min(0), idx.max(0))]
    low = np.minimum(*map(np.array, corners)) - 28.0
    high = np.maximum(*map(np.array, corners)) + 28.0
    size = [int(np.ceil((h - l) / resolution_mm)) + 1 for l, h in zip(low, high)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([resolution_mm] * 3)
    grid.SetOrigin(tuple(float(v) for v in low))
    out: dict[str, np.ndarray | sitk.Image] = {"grid": grid}
    for key, image in images.items():
        if resolution_mm > 1.0:
            image = sitk.SmoothingRecursiveGaussian(image, 0.4 * resolution_mm)
        resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0)
        out[key] = sitk.GetArrayFromImage(resampled) / 255.0
    out["brain"] = out["t1"] > 0.05
    inside = sitk.SignedMaurerDistanceMap(
        sitk.GetImageFromArray(out["brain"].astype(np.uint8)), insideIsPositive=True, squaredDistance=False,
        useImageSpacing=False,
    )
    out["depth"] = sitk.GetArrayFromImage(inside).astype(np.float32) * resolution_mm
    # A smooth head envelope around the brain: CSF, then skull, then scalp.
    envelope = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(out["brain"].astype(np.float32)), 6.0 / resolution_mm)
    envelope_mask = sitk.GetArrayFromImage(envelope) > 0.2
    distance = sitk.SignedMaurerDistanceMap(
        sitk.GetImageFromArray(envelope_mask.astype(np.uint8)), insideIsPositive=False, squaredDistance=False,
        useImageSpacing=False,
    )
    out["outside"] = sitk.GetArrayFromImage(distance).astype(np.float32) * resolution_mm
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in size[::-1]], indexing="ij")
    origin = np.array(grid.GetOrigin(), dtype=np.float32)
    out["xyz"] = np.stack([origin[0] + xx * resolution_mm, origin[1] + yy * resolution_mm, origin[2] + zz * resolution_mm])
    return out


def _smooth_noise(grid: sitk.Image, rng: np.random.Generator, scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field on ``grid`` with features of ``scale_mm``."""
    extent = np.array(grid.GetSize()) * np.array(grid.GetSpacing())
    coarse_size = [max(int(np.ceil(e / scale_mm)) + 3, 4) for e in extent]
    coarse = sitk.GetImageFromArray(rng.standard_normal(coarse_size[::-1]).astype(np.float32))
    coarse.SetSpacing([scale_mm] * 3)
    coarse.SetOrigin(tuple(np.array(grid.GetOrigin()) - scale_mm))
    return sitk.GetArrayFromImage(sitk.Resample(coarse, grid, sitk.Transform(), sitk.sitkBSpline, 0.0))


def _random_rotation(rng: np.random.Generator, max_degrees: float, min_degrees: float = 0.0) -> np.ndarray:
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(min_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _random_vector(rng: np.random.Generator, max_mm: float, min_mm: float = 0.0) -> np.ndarray:
    direction = rng.standard_normal(3)
    return direction / np.linalg.norm(direction) * rng.uniform(min_mm, max_mm)


def _affine(matrix4: np.ndarray) -> sitk.AffineTransform:
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(float(v) for v in matrix4[:3, :3].ravel()))
    transform.SetTranslation(tuple(float(v) for v in matrix4[:3, 3]))
    return transform


def _pose(rotation: np.ndarray, translation: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4×4 rigid map from image (scanner) points to anatomy points, rotating about ``centre``."""
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = centre - rotation @ centre + translation
    return m


def _grid(spacing: Sequence[float], fov: Sequence[float], centre: np.ndarray) -> sitk.Image:
    size = [max(int(round(f / s)), 8) for f, s in zip(fov, spacing)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(tuple(float(s) for s in spacing))
    grid.SetOrigin(tuple(float(c - (n - 1) * s / 2) for c, n, s in zip(centre, size, spacing)))
    return grid


# --------------------------------------------------------------------------- the case


def _ball(xyz: np.ndarray, centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid distance (1 on the surface) of every anatomy voxel."""
    d = (xyz - centre[:, None, None, None]).reshape(3, -1)
    local = (rotation.T @ d) / radii[:, None]
    return np.sqrt((local**2).sum(0)).reshape(xyz.shape[1:]).astype(np.float32)


def _choose_point(candidates: np.ndarray, xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    idx = np.flatnonzero(candidates)
    if idx.size == 0:
        return None
    flat = xyz.reshape(3, -1)
    return flat[:, int(rng.choice(idx))].astype(np.float64)


def generate_case(
    case_id: str,
    label: str,
    seed: int,
    spacing_mm: float | None = 1.0,
    size: int | None = None,
    label_noise: float = 0.0,
    classes: str = "paper",
    skull_stripped: bool = False,
) -> SyntheticCase:
    """Build one synthetic case; the same arguments always give the same images.

    ``spacing_mm`` sets the post-op voxel size; ``size`` instead fits ``size``
    voxels across the largest side of the field of view (small test cases).
    ``classes`` and ``skull_stripped``: see the module's docstring.
    """
    if label not in CLASS_NAMES:
        raise InputError(f"Synthetic case {case_id}: unknown label '{label}'; use one of {', '.join(CLASS_NAMES)}.")
    check_class_setting(classes)
    distinct = classes == "distinct"
    if size is not None:
        if size < 16:
            raise InputError(f"Synthetic case size {size} is too small; use at least 16 voxels.")
        spacing = max(FIELD_OF_VIEW_MM) / size
    else:
        spacing = float(spacing_mm or 1.0)
        if not 0.3 <= spacing <= 8.0:
            raise InputError(f"Synthetic voxel spacing {spacing} mm is outside 0.3–8 mm.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x51CE]))
    anatomy = _anatomy(float(np.clip(round(spacing / 2.0), 1.0, 3.0)))
    grid: sitk.Image = anatomy["grid"]  # type: ignore[assignment]
    xyz: np.ndarray = anatomy["xyz"]  # type: ignore[assignment]
    brain: np.ndarray = anatomy["brain"]  # type: ignore[assignment]
    depth: np.ndarray = anatomy["depth"]  # type: ignore[assignment]
    outside: np.ndarray = anatomy["outside"]  # type: ignore[assignment]
    gm, wm = anatomy["gm"], anatomy["wm"]
    recurrence = label == "recurrence"
    truth: dict[str, Any] = {"case_id": case_id, "label": label, "seed": int(seed), "classes": classes,
                             "skull_stripped": bool(skull_stripped)}

    # Healthy T1c head: template T1 inside the brain; CSF, skull and scalp outside.
    base = np.where(brain, np.clip(anatomy["t1"] / 0.86, 0, 1.2), 0.0).astype(np.float32)  # type: ignore[operator]
    csf = (~brain) & (outside <= 2.5)
    skull_outer = 2.5 + rng.uniform(5.5, 7.5)
    bone = (outside > 2.5) & (outside <= skull_outer)
    diploe = bone & (np.abs(outside - (2.5 + skull_outer) / 2) < 1.2)
    scalp = (outside > skull_outer) & (outside <= skull_outer + rng.uniform(4.0, 7.0))
    base[csf] = 0.12
    base[bone] = 0.08
    base[diploe] = 0.45
    base[scalp] = 0.95

    # Resection cavity in one hemisphere, 15–35 mm under the cortex.
    side = rng.choice([-1.0, 1.0])
    cavity_zone = brain & (depth > 16) & (depth < 32) & (side * xyz[0] > 22) & (np.abs(xyz[2] - 15) < 45)
    cavity_centre = _choose_point(cavity_zone, xyz, rng)
    if cavity_centre is None:  # pragma: no cover - the template always has such voxels
        raise RuntimeError("no place for a resection cavity")
    cavity_radii = rng.uniform(9.0, 16.0, size=3)
    cavity_rotation = _random_rotation(rng, 180.0)
    cavity_r = _ball(xyz, cavity_centre, cavity_radii, cavity_rotation)
    cavity = (cavity_r < 1.0) & brain
    rim_mm = rng.uniform(1.2, 2.2)
    rim = (~cavity) & brain & (cavity_r < 1.0 + rim_mm / cavity_radii.mean())
    truth["cavity_centre_anatomy_mm"] = cavity_centre.tolist()
    truth["cavity_radii_mm"] = cavity_radii.tolist()

    postop_anatomy = base.copy()
    postop_anatomy[cavity] = 0.15
    postop_anatomy[rim] = ENHANCEMENT * 0.85
    residual = rng.random() < (0.6 if recurrence else 0.25)
    truth["residual_enhancement"] = bool(residual)
    if residual:
        direction = _random_vector(rng, 1.0, 1.0)
        nodule_centre = cavity_centre + direction * cavity_radii.mean()
        nodule = (_ball(xyz, nodule_centre, np.full(3, rng.uniform(3.0, 5.0)), np.eye(3)) < 1.0) & brain & ~cavity
        postop_anatomy[nodule] = ENHANCEMENT

    # Radiotherapy plan on the cavity plus a margin.
    margin = rng.uniform(10.0, 20.0) if recurrence else rng.uniform(15.0, 25.0)
    prescription = 60.0 if rng.random() < (0.6 if recurrence else 0.9) else 40.05
    if distinct:  # one prescription, as in a cohort the model is meant for (no dose-maximum warnings)
        prescription = 60.0
    ptv_distance = (cavity_r - 1.0) * cavity_radii.mean() - margin  # < 0 inside the target
    # A plateau at the prescription inside the target, 95 % on the PTV surface, then a penumbra.
    penumbra = rng.uniform(1.5, 2.5)
    shoulder = penumbra * np.log(19.0)
    core = 1.0 / (1.0 + np.exp(np.clip((ptv_distance - shoulder) / penumbra, -50, 50)))
    bath = 0.3 * np.exp(-np.clip(ptv_distance, 0, None) / rng.uniform(18.0, 30.0)) * (1 - core)
    body = outside <= skull_outer + 7.0
    relative_dose = ((core * (1.0 + 0.025 * _smooth_noise(grid, rng, 25.0)) + bath) * body).astype(np.float32)
    truth.update(prescription_gy=prescription, ptv_margin_mm=float(margin))

    # The new lesion seen on the event MRI.
    wall = (cavity_r - 1.0) * cavity_radii.mean()  # approx. mm from the cavity wall (outside > 0)
    typical = rng.random() < TYPICAL_FRACTION or distinct
    if recurrence and typical:
        variant, zone = "recurrence-wall", brain & (wall > 0) & (wall < 4)
        n_foci, radius_range, thickness = 1, (7.0, 12.0), rng.uniform(2.5, 4.0)
        if distinct:  # a solid enhancing nodule, centred a little off the wall so that most of it is brain
            zone = brain & (wall > 5) & (wall < 9)
            radius_range, thickness = (12.0, 16.0), rng.uniform(4.0, 6.0) + 20.0
    elif recurrence:
        variant, zone = "recurrence-distant", brain & (wall > 8) & (wall < 25) & (depth > 6)
        n_foci, radius_range, thickness = 1, (6.0, 10.0), rng.uniform(2.5, 4.0)
    elif typical:
        variant = "rice-white-matter"
        zone = brain & (wall > 6) & (core > 0.95) & (wm > 0.5) & (depth > 6)  # type: ignore[operator]
        n_foci, radius_range, thickness = int(rng.integers(1, 4)), (4.0, 7.0), rng.uniform(1.2, 2.0)
        if distinct:
            radius_range = (3.0, 5.0)
    else:
        variant, zone = "rice-near-wall", brain & (wall > 2) & (wall < 6) & (core > 0.9)
        n_foci, radius_range, thickness = 1, (5.0, 8.0), rng.uniform(1.5, 2.5)
    if not zone.any():  # small brains or margins: fall back to any brain voxel near the cavity
        zone = brain & (wall > 2) & (wall < 15)
    truth["lesion_variant"] = variant
    event_anatomy = base.copy()
    event_anatomy[cavity] = 0.15
    event_anatomy[rim] = ENHANCEMENT * 0.6
    lesion = np.zeros_like(brain)
    enhancing = np.zeros_like(brain)
    lobulation = _smooth_noise(grid, rng, 6.0)
    first_centre = _choose_point(zone, xyz, rng)
    if first_centre is None:  # pragma: no cover - the fallback zone is never empty on the template
        raise RuntimeError(f"no place for the lesion of synthetic case {case_id}")
    centres = []
    for focus in range(n_foci):
        centre = first_centre if focus == 0 else first_centre + _random_vector(rng, 12.0, 5.0)
        radius = rng.uniform(*radius_range)
        r = _ball(xyz, centre, rng.uniform(0.8, 1.2, size=3) * radius, _random_rotation(rng, 180.0))
        shape = (r * (1.0 + 0.18 * lobulation)) < 1.0
        shape &= brain & ~cavity
        shell = shape & ((r * (1.0 + 0.18 * lobulation)) > 1.0 - thickness / radius)
        if not recurrence:  # patchy, "swiss cheese" enhancement
            shell &= _smooth_noise(grid, rng, 3.0) > -0.6
        lesion |= shape
        enhancing |= shell
        centres.append(centre.tolist())
    oedema = brain & ~lesion & ~cavity & (_ball(xyz, first_centre, np.full(3, radius_range[1] + 9.0), np.eye(3)) < 1.0)
    event_anatomy[oedema] *= 0.85
    event_anatomy[lesion] = 0.55
    event_anatomy[enhancing] = DISTINCT_RECURRENCE_ENHANCEMENT if distinct and recurrence else ENHANCEMENT
    truth["lesion_centres_anatomy_mm"] = centres
    nearest = int(np.argmin(np.linalg.norm(xyz.reshape(3, -1).T - first_centre, axis=1)))
    truth["lesion_dose_fraction_at_centre"] = float(relative_dose.reshape(-1)[nearest])
    truth["lesion_distance_to_cavity_wall_mm"] = float(wall.reshape(-1)[nearest])

    # Acquisition: each scan has its own grid and its own rigid pose of the head.
    head_centre = np.array(grid.GetOrigin()) + (np.array(grid.GetSize()) - 1) * np.array(grid.GetSpacing()) / 2
    postop_pose = _pose(_random_rotation(rng, 6.0), _random_vector(rng, 6.0), head_centre)
    relative = _pose(_random_rotation(rng, 12.0, 3.0), _random_vector(rng, 15.0, 3.0), head_centre)
    event_pose = postop_pose @ relative
    postop_grid = _grid([spacing] * 3, FIELD_OF_VIEW_MM, head_centre + rng.uniform(-4, 4, 3))
    event_grid = _grid([spacing, spacing, spacing * 1.25], FIELD_OF_VIEW_MM, head_centre + rng.uniform(-6, 6, 3))
    dose_spacing = max(2.5, 1.5 * spacing)
    dose_grid = _grid([dose_spacing] * 3, [170.0, 200.0, 180.0], head_centre + rng.uniform(-8, 8, 3))

    def acquire(array: np.ndarray, target: sitk.Image, pose: np.ndarray, interpolator: int = sitk.sitkLinear) -> np.ndarray:
        image = sitk.GetImageFromArray(array.astype(np.float32))
        image.CopyInformation(grid)
        return sitk.GetArrayFromImage(sitk.Resample(image, target, _affine(pose), interpolator, 0.0))

    def scanner(array: np.ndarray, target: sitk.Image, gain: float) -> sitk.Image:
        shape = array.shape
        axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
        zz, yy, xx = np.meshgrid(*axes, indexing="ij", sparse=True)
        c = rng.normal(0, 0.12, size=6)
        bias = np.exp(c[0] * xx + c[1] * yy + c[2] * zz + c[3] * xx * yy + c[4] * yy * zz + c[5] * (xx**2 - zz**2))
        sigma = rng.uniform(0.02, 0.035)
        signal = array * bias
        noisy = np.sqrt((signal + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
        image = sitk.GetImageFromArray(np.clip(noisy * gain, 0, 32000).astype(np.int16))
        image.CopyInformation(target)
        return image

    postop = scanner(acquire(postop_anatomy, postop_grid, postop_pose), postop_grid, rng.uniform(700, 1100))
    event = scanner(acquire(event_anatomy, event_grid, event_pose), event_grid, rng.uniform(450, 1600))
    dose = sitk.GetImageFromArray((acquire(relative_dose, dose_grid, postop_pose) * prescription).astype(np.float32))
    dose.CopyInformation(dose_grid)
    brain_mask = sitk.GetImageFromArray((acquire(brain.astype(np.float32), postop_grid, postop_pose) > 0.5).astype(np.uint8))
    brain_mask.CopyInformation(postop_grid)
    if skull_stripped:
        event_brain = sitk.GetImageFromArray((acquire(brain.astype(np.float32), event_grid, event_pose) > 0.5).astype(np.int16))
        event_brain.CopyInformation(event_grid)
        postop = postop * sitk.Cast(brain_mask, sitk.sitkInt16)
        event = event * event_brain
    lesion_mask = sitk.GetImageFromArray((acquire(lesion.astype(np.float32), event_grid, event_pose) > 0.5).astype(np.uint8))
    lesion_mask.CopyInformation(event_grid)

    event_from_reference = np.linalg.inv(event_pose) @ postop_pose
    truth.update(
        spacing_mm=float(spacing),
        postop_to_anatomy=postop_pose.tolist(),
        event_to_anatomy=event_pose.tolist(),
        event_from_reference=event_from_reference.tolist(),
        lesion_centre_postop_mm=(np.linalg.inv(postop_pose) @ np.append(first_centre, 1.0))[:3].tolist(),
        lesion_centre_event_mm=(np.linalg.inv(event_pose) @ np.append(first_centre, 1.0))[:3].tolist(),
        relative_rotation_deg=float(np.degrees(np.arccos(np.clip((np.trace(relative[:3, :3]) - 1) / 2, -1, 1)))),
        relative_translation_mm=float(np.linalg.norm(relative[:3, 3])),
        coordinate_system="LPS",
    )
    written_label = label
    if label_noise > 0 and rng.random() < label_noise:
        written_label = CLASS_NAMES[1 - CLASS_NAMES.index(label)]
    truth["written_label"] = written_label
    return SyntheticCase(case_id, written_label, postop, event, dose, brain_mask, lesion_mask, _affine(event_from_reference), truth)


def check_class_setting(classes: str) -> None:
    if classes not in CLASS_SETTINGS:
        raise InputError(f"Synthetic class setting '{classes}' is unknown; use one of {', '.join(CLASS_SETTINGS)}.")


def non_head_volume(like: sitk.Image, seed: int = 0) -> sitk.Image:
    """A pelvis-like body on ``like``'s grid: what a wrong series given as an MRI looks like (quality-gate tests).

    A wide elliptical trunk of soft tissue and fat, two bright bony rings with
    femoral heads and a dark bladder, with scanner-like noise; int16 like the
    synthetic MRIs. It has the size of a head scan's field of view but no brain.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB0D7]))
    size = like.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in size], indexing="ij"), axis=-1)  # (x, y, z, 3)
    matrix = np.array(like.GetDirection()).reshape(3, 3) @ np.diag(like.GetSpacing())
    points = index @ matrix.T + np.array(like.GetOrigin())
    centre = points.reshape(-1, 3).mean(axis=0) + rng.uniform(-5, 5, 3)
    x, y, z = (points - centre).transpose(3, 0, 1, 2)
    trunk = (x / 110.0) ** 2 + (y / 80.0) ** 2 < 1.0
    fat = trunk & ((x / 110.0) ** 2 + (y / 80.0) ** 2 > 0.7)
    values = np.where(trunk, 0.55, 0.0) + np.where(fat, 0.35, 0.0)
    for side in (-1.0, 1.0):
        ring = np.abs(np.hypot((x - side * 55.0) / 1.3, y + 10.0) - 28.0) < 4.0
        head = np.hypot(np.hypot(x - side * 80.0, y + 5.0), z + 30.0) < 22.0
        values[trunk & (ring | head)] = 1.1
    values[np.hypot(np.hypot(x / 1.2, y - 30.0), z) < 30.0] = 0.1  # bladder
    noisy = np.abs(values + rng.normal(0.0, 0.03, values.shape)) * rng.uniform(600, 1000)
    image = sitk.GetImageFromArray(np.clip(noisy, 0, 32000).astype(np.int16).transpose(2, 1, 0))
    image.CopyInformation(like)
    return image


# --------------------------------------------------------------------------- cohorts


def cohort_labels(cases: int, seed: int, recurrence_fraction: float = 0.6) -> list[str]:
    """Labels in the paper's proportion (48 recurrence : 32 RICE), shuffled by ``seed``."""
    n_recurrence = int(round(cases * recurrence_fraction))
    labels = ["recurrence"] * n_recurrence + ["rice"] * (cases - n_recurrence)
    np.random.default_rng(seed).shuffle(labels)
    return labels


#: The formats a synthetic case can be written in: NIfTI files, or DICOM as a hospital sends it.
FORMATS = ("nifti", "dicom")


def write_case(case: SyntheticCase, folder: str | os.PathLike, image_format: str = "nifti") -> dict[str, Path]:
    """Write a case's three inputs and its ``truth/`` sidecar; returns the input paths.

    ``image_format`` ``dicom`` writes two MR series and an RTDOSE (:mod:`RICENetLib.synthetic_dicom`);
    the truth stays NIfTI.
    """
    from .atomic import write_json
    from .image_io import write_image

    folder = Path(folder)
    if image_format not in FORMATS:
        raise InputError(f"Synthetic case format '{image_format}': use one of {', '.join(FORMATS)}.")
    if image_format == "dicom":
        from .synthetic_dicom import write_dicom_case

        paths = write_dicom_case(case, folder)
    else:
        paths = {
            "postop": write_image(case.postop, folder / "postop.nii.gz"),
            "event": write_image(case.event, folder / "event.nii.gz"),
            "dose": write_image(case.dose, folder / "dose.nii.gz"),
        }
    write_image(case.brain_mask, folder / "truth" / "brain_mask.nii.gz")
    write_image(case.lesion_mask, folder / "truth" / "lesion_mask.nii.gz")
    sitk.WriteTransform(case.event_from_reference, str(folder / "truth" / "event_from_reference.tfm"))
    write_json(folder / "truth" / "truth.json", case.truth)
    return paths


def write_cohort(
    out: str | os.PathLike,
    cases: int = 10,
    seed: int = 0,
    spacing_mm: float | None = 1.0,
    size: int | None = None,
    label_noise: float = 0.0,
    workers: int = 1,
    progress=None,
    cancel=None,
    image_format: str = "nifti",
    classes: str = "paper",
    skull_stripped: bool = False,
) -> Path:
    """Write ``cases`` synthetic patients and ``cohort.csv`` into ``out``; returns the CSV path.

    ``workers`` > 1 makes the patients in that many processes (a case at
    1.25 mm takes seconds); the files are the same as with one. The cohort CSV
    is written last, so a cancelled run never leaves a cohort table that
    points at missing cases. ``image_format`` ``dicom`` writes every case as
    DICOM series and an RTDOSE (see :func:`write_case`); the table points at
    the series folders and the RTDOSE files.
    """
    from .atomic import write_json, write_text
    from .cohort import write_cohort_csv

    if cases < 1:
        raise InputError(f"Number of synthetic cases must be at least 1 (got {cases}).")
    if workers < 1:
        raise InputError(f"Number of worker processes must be at least 1 (got {workers}).")
    check_class_setting(classes)
    if image_format not in FORMATS:
        raise InputError(f"Synthetic cohort format '{image_format}': use one of {', '.join(FORMATS)}.")
    out = Path(out)
    if (out / "cohort.csv").exists():
        raise InputError(f"{out} already holds a cohort (cohort.csv); choose an empty folder.")
    report = as_progress(progress, cancel)
    jobs = [(f"SYN{index + 1:03d}", label, seed * 100003 + index) for index, label in enumerate(cohort_labels(cases, seed))]
    make = functools.partial(_write_cohort_case, out, spacing_mm=spacing_mm, size=size, label_noise=label_noise,
                             image_format=image_format, classes=classes, skull_stripped=skull_stripped)
    written: dict[str, tuple] = {}
    if workers == 1:
        for index, job in enumerate(jobs):
            report(index / cases, f"case {job[0]}")
            written[job[0]] = make(job)
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(workers, cases), initializer=_single_threaded_worker) as pool:
            futures = [pool.submit(make, job) for job in jobs]
            try:
                for done, future in enumerate(as_completed(futures), start=1):
                    row = future.result()
                    written[row[0].patient_id] = row
                    report(done / cases, f"case {row[0].patient_id}")
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    rows = [written[case_id] for case_id, _, _ in jobs]
    write_text(out / "NOTICE-MNI-ICBM152.txt", MNI_NOTICE)
    write_json(out / "summary.json", {"seed": seed, "classes": classes, "skull_stripped": bool(skull_stripped),
                                      "cases": [summary for _, summary in rows]})
    csv_path = write_cohort_csv(out / "cohort.csv", [case for case, _ in rows])
    report(1.0, "done")
    return csv_path


def _write_cohort_case(out: Path, job: tuple[str, str, int], spacing_mm: float | None, size: int | None,
                       label_noise: float, image_format: str = "nifti", classes: str = "paper",
                       skull_stripped: bool = False) -> tuple[Any, dict[str, Any]]:
    """Make and write one patient of a cohort: its table row and its line of ``summary.json``."""
    from .cohort import Case

    case_id, label, case_seed = job
    case = generate_case(case_id, label, seed=case_seed, spacing_mm=spacing_mm, size=size, label_noise=label_noise,
                         classes=classes, skull_stripped=skull_stripped)
    paths = write_case(case, out / case_id, image_format)
    summary = {k: case.truth[k] for k in ("case_id", "label", "written_label", "lesion_variant", "prescription_gy",
                                          "relative_rotation_deg", "relative_translation_mm")}
    return Case(case_id, case.label, paths), summary


def _single_threaded_worker() -> None:
    """In a worker process, SimpleITK uses one thread: the processes share the cores."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def summarise_cohort(csv_path: str | os.PathLike) -> dict[str, Any]:
    """Counts per label and per lesion variant of a written synthetic cohort."""
    folder = Path(csv_path).parent
    data = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    counts: dict[str, int] = {}
    variants: dict[str, int] = {}
    for case in data["cases"]:
        counts[case["written_label"]] = counts.get(case["written_label"], 0) + 1
        variants[case["lesion_variant"]] = variants.get(case["lesion_variant"], 0) + 1
    return {"cohort": str(csv_path), "cases": len(data["cases"]), "labels": counts, "lesion_variants": variants}
