"""The preprocessing pipeline: three patient images in, the network's input out, and the way back.

Steps (DESIGN.md, 2–6), each in its own module:

1. check the inputs and put the dose in Gy (:mod:`.normalisation`);
2. the post-op MRI is the reference; its field of view on an isotropic grid
   (:mod:`.resampling`);
3. the event MRI registered rigidly onto it (:mod:`.registration`);
4. a brain mask from the post-op MRI (:mod:`.skull_strip`), used for both MRIs;
5. the model grid: a box of the input size centred on the brain (:mod:`.crop`);
   the event MRI and the dose are resampled straight into it, so every channel
   is interpolated exactly once;
6. MRI z-scores in the brain, dose / prescription (or z-score).

The :class:`PreprocessResult` keeps every grid and the transform, so any map
in model space goes back to the post-op or the event MRI by resampling alone
(:meth:`PreprocessResult.to_reference`, :meth:`PreprocessResult.to_event`).

>>> result = preprocess_case("p/postop.nii.gz", "p/event.nii.gz", "p/dose.dcm")   # doctest: +SKIP
>>> x = result.stack()                        # (3, 224, 224, 224) float32       # doctest: +SKIP
>>> heat = result.to_reference(heatmap)       # sitk.Image on the post-op grid   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from . import MODALITIES, __version__
from .atomic import atomic_directory, atomic_path, write_json
from .crop import CropBox, crop_box_around, crop_or_pad, cropped_geometry, fraction_inside, input_size_zyx
from .dicom_identity import check_same_patient_and_frame
from .errors import InputError, PreprocessingError, reject_unknown_keys
from .image_io import check_volume, read_image, write_image
from .normalisation import DOSE_NORMALISATIONS, DOSE_UNITS, dose_in_gy, normalise_dose, zscore
from .progress import CancelCheck, Progress, ProgressCallback, as_progress
from .quality import assess_case, event_brain_mask
from .registration import RegistrationParameters, RegistrationResult, register_rigid, transform_matrix
from .resampling import Geometry, check_dose_overlap, interpolator_code, isotropic_geometry, resample_to
from .skull_strip import BACKENDS as SKULL_STRIP_BACKENDS
from .skull_strip import brain_volume_ml, skull_strip

log = logging.getLogger(__name__)

#: Where the input box is centred (PreprocessParameters.crop_centre).
CROP_CENTRES = ("brain", "dose")

FORMAT = "ricenet-preprocess"
#: Bumped whenever the same inputs and parameters would give different results (invalidates caches).
#: 2: the record holds the quality gates (:mod:`.quality`).
FORMAT_VERSION = 2
RESULT_FILES = {"postop": "postop.nii.gz", "event": "event.nii.gz", "dose": "dose.nii.gz"}
MASK_FILE = "brain_mask.nii.gz"
TRANSFORM_FILE = "event_to_reference.tfm"
JSON_FILE = "preprocess.json"


@dataclass(frozen=True)
class PreprocessParameters:
    """Everything that decides the model input; saved with every result and every model bundle.

    ``input_size`` is one number (a cube) or (D, H, W) = (z, y, x) voxels.
    ``dose_unit`` states the unit of the dose files (``None``: Gy unless an
    RTDOSE says otherwise; a maximum over 100 is then refused as probable cGy).
    ``mask_mri`` sets the MRIs to 0 outside the brain after the z-score.
    ``crop_centre`` places the input box: ``"brain"`` (the paper: a box that
    holds the whole brain), or ``"dose"``: on the region of at least half the
    maximum dose, so that a small input can use fine voxels where recurrence and
    radiation effects arise (e.g. 64³ at 1.25 mm instead of 2.5 mm for the brain).
    """

    spacing_mm: float = 1.0
    input_size: int | tuple[int, int, int] = 224
    skull_strip: str = "deepbet"
    dose_normalisation: str = "prescription"
    prescription_gy: float = 60.0
    dose_unit: Optional[str] = None
    mask_mri: bool = True
    crop_centre: str = "brain"
    registration: RegistrationParameters = field(default_factory=RegistrationParameters)

    def validate(self) -> "PreprocessParameters":
        def bad(name: str, why: str) -> InputError:
            return InputError(f"Preprocessing parameter {name}={getattr(self, name)!r}: {why}.")

        if not (isinstance(self.spacing_mm, (int, float)) and 0.2 <= float(self.spacing_mm) <= 10.0):
            raise bad("spacing_mm", "use a voxel size between 0.2 and 10 mm")
        input_size_zyx(self.input_size)
        if self.skull_strip not in SKULL_STRIP_BACKENDS:
            raise bad("skull_strip", f"use one of {', '.join(SKULL_STRIP_BACKENDS)}")
        if self.dose_normalisation not in DOSE_NORMALISATIONS:
            raise bad("dose_normalisation", f"use one of {', '.join(DOSE_NORMALISATIONS)}")
        if not (isinstance(self.prescription_gy, (int, float)) and 0 < float(self.prescription_gy) <= 200):
            raise bad("prescription_gy", "use a dose in Gy between 0 and 200")
        if self.crop_centre not in CROP_CENTRES:
            raise bad("crop_centre", f"use one of {', '.join(CROP_CENTRES)}")
        if self.dose_unit is not None and self.dose_unit not in DOSE_UNITS:
            raise bad("dose_unit", f"use one of {', '.join(DOSE_UNITS)} or leave it unset")
        self.registration.validate()
        return self

    @property
    def size_zyx(self) -> tuple[int, int, int]:
        return input_size_zyx(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        size = self.input_size if isinstance(self.input_size, int) else list(self.input_size)
        return {
            "spacing_mm": float(self.spacing_mm),
            "input_size": size,
            "skull_strip": self.skull_strip,
            "dose_normalisation": self.dose_normalisation,
            "prescription_gy": float(self.prescription_gy),
            "dose_unit": self.dose_unit,
            "mask_mri": bool(self.mask_mri),
            "crop_centre": self.crop_centre,
            "registration": self.registration.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessParameters":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer format, or a typo)."""
        reject_unknown_keys(cls, data, "preprocessing parameter")
        values = dict(data)
        if "input_size" in values and not isinstance(values["input_size"], int):
            values["input_size"] = tuple(int(v) for v in values["input_size"])
        if "registration" in values and not isinstance(values["registration"], RegistrationParameters):
            values["registration"] = RegistrationParameters.from_dict(values["registration"] or {})
        return cls(**values).validate()

    def with_updates(self, **changes: Any) -> "PreprocessParameters":
        return replace(self, **changes).validate()


@dataclass
class PreprocessResult:
    """One case in model space, with everything needed to go back to the patient.

    ``arrays`` are float32 (z, y, x) on :attr:`model_geometry` per modality;
    ``brain_mask`` is uint8 on the same grid. ``event_to_reference`` is the
    registration result: it maps reference (post-op) points to event points,
    as ITK transforms do, so resampling the event through it lands in the
    reference. ``crop`` is the box in the isotropic reference grid.
    ``reference`` is the post-op image as given, kept in memory only (not
    saved; ``None`` after :meth:`load`), for displays that need it.
    """

    arrays: dict[str, np.ndarray]
    brain_mask: np.ndarray
    model_geometry: Geometry
    isotropic_geometry: Geometry
    reference_geometry: Geometry
    event_geometry: Optional[Geometry]
    event_to_reference: sitk.Transform
    crop: CropBox
    params: PreprocessParameters
    info: dict[str, Any] = field(default_factory=dict)
    reference: Optional[sitk.Image] = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ model input

    def stack(self, modalities: Sequence[str] = MODALITIES) -> np.ndarray:
        """The network input (C, D, H, W) float32 in the given channel order."""
        missing = [m for m in modalities if m not in self.arrays]
        if missing or not modalities:
            raise InputError(f"Cannot stack modalities {list(modalities)}: this result has {sorted(self.arrays)}.")
        return np.stack([self.arrays[m] for m in modalities]).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ the way back

    def model_image(self, array: np.ndarray) -> sitk.Image:
        """A (z, y, x) model-space array as an image on the model grid (LPS)."""
        array = np.asarray(array)
        if array.shape != self.model_geometry.shape:
            raise InputError(f"Array of shape {array.shape} is not in model space {self.model_geometry.shape}.")
        return self.model_geometry.image(array)

    def _source(self, array: np.ndarray, interpolator: str | int) -> tuple[sitk.Image, int]:
        """The model-space image to resample, and the output pixel type (labels keep theirs)."""
        array = np.asarray(array)
        if interpolator_code(interpolator) == sitk.sitkNearestNeighbor:
            source = self.model_image(array.astype(np.uint8) if array.dtype == bool else array)
            return source, source.GetPixelID()
        return self.model_image(array.astype(np.float32, copy=False)), sitk.sitkFloat32

    def to_reference(self, array: np.ndarray, interpolator: str | int = "linear", default: float = 0.0) -> sitk.Image:
        """A model-space map on the post-op (reference) MRI's own grid.

        Model space is a whole-voxel box of an isotropic grid with the post-op's
        orientation, so this is one resampling with the identity transform;
        use ``interpolator="nearest"`` for labels. Outside the box: ``default``.
        """
        source, pixel = self._source(array, interpolator)
        return resample_to(source, self.reference_geometry, interpolator=interpolator, default=default, pixel=pixel)

    def to_event(self, array: np.ndarray, interpolator: str | int = "linear", default: float = 0.0) -> sitk.Image:
        """A model-space map on the event MRI's own grid (e.g. a heatmap over the lesion).

        Needs the inverse of the registration: event points → reference points.
        """
        if self.event_geometry is None:
            raise InputError("This result does not record the event MRI's grid; it cannot map onto the event MRI.")
        source, pixel = self._source(array, interpolator)
        return resample_to(source, self.event_geometry, transform=self.event_to_reference.GetInverse(),
                           interpolator=interpolator, default=default, pixel=pixel)

    def reference_image(self) -> sitk.Image:
        """The post-op MRI as it was given (only on a result computed in this process)."""
        if self.reference is None:
            raise InputError("This preprocessed case was loaded from disk; it does not hold the post-op image itself.")
        return self.reference

    def reference_point_to_model_index(self, point_lps: Sequence[float]) -> np.ndarray:
        """Continuous model-space index (z, y, x) of a physical point of the reference."""
        return self.model_geometry.point_to_index(np.asarray(point_lps, dtype=float))[::-1]

    # ------------------------------------------------------------------ files

    def describe(self) -> dict[str, Any]:
        """The JSON record (``preprocess.json``) of this result."""
        matrix, translation = transform_matrix(self.event_to_reference)
        record: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "coordinate_system": "LPS",
            "array_order": "z, y, x (numpy); sizes in geometries are x, y, z (ITK)",
            "parameters": self.params.to_dict(),
            "channels": {m: RESULT_FILES[m] for m in MODALITIES if m in self.arrays},
            "brain_mask": MASK_FILE,
            "model_geometry": self.model_geometry.to_dict(),
            "isotropic_geometry": self.isotropic_geometry.to_dict(),
            "reference_geometry": self.reference_geometry.to_dict(),
            "event_geometry": self.event_geometry.to_dict() if self.event_geometry else None,
            "crop": self.crop.to_dict(),
            "event_to_reference": {
                "file": TRANSFORM_FILE,
                "maps": "reference (post-op) physical points to event physical points, LPS (ITK convention)",
                "class": self.event_to_reference.GetName(),
                "parameters": [float(v) for v in self.event_to_reference.GetParameters()],
                "fixed_parameters": [float(v) for v in self.event_to_reference.GetFixedParameters()],
                "matrix": matrix.tolist(),
                "translation": translation.tolist(),
            },
        }
        record.update(self.info)
        return record

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model-space images, the transform and ``preprocess.json`` (atomically, as one folder)."""
        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            for modality, array in self.arrays.items():
                write_image(self.model_image(array), tmp / RESULT_FILES[modality])
            write_image(self.model_image(self.brain_mask.astype(np.uint8)), tmp / MASK_FILE)
            with atomic_path(tmp / TRANSFORM_FILE) as path:
                sitk.WriteTransform(self.event_to_reference, str(path))
            write_json(tmp / JSON_FILE, _jsonable(self.describe()))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "PreprocessResult":
        """Read a folder written by :meth:`save`; the grids come from the JSON (full precision)."""
        directory = Path(directory)
        record_path = directory / JSON_FILE
        if not record_path.exists():
            raise InputError(f"{directory} is not a preprocessed case: {JSON_FILE} is missing.")
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{record_path} is not readable JSON: {error}") from None
        if record.get("format") != FORMAT:
            raise InputError(f"{record_path} is not a RICE-NET preprocessing record.")
        if record.get("version") != FORMAT_VERSION:
            raise InputError(f"{record_path} has format version {record.get('version')}; this RICE-NET reads "
                             f"version {FORMAT_VERSION}. Preprocess the case again.")
        model_geometry = Geometry.from_dict(record["model_geometry"])
        arrays = {}
        for modality, name in record["channels"].items():
            arrays[modality] = _read_model_array(directory / name, model_geometry, np.float32)
        mask = _read_model_array(directory / record["brain_mask"], model_geometry, np.uint8)
        transform_path = directory / record["event_to_reference"]["file"]
        try:
            transform = sitk.ReadTransform(str(transform_path))
        except RuntimeError as error:
            raise InputError(f"Transform file {transform_path} could not be read: {error}") from None
        transform = transform.Downcast() if hasattr(transform, "Downcast") else transform
        keys = {"format", "version", "coordinate_system", "array_order", "parameters", "channels", "brain_mask",
                "model_geometry", "isotropic_geometry", "reference_geometry", "event_geometry", "crop",
                "event_to_reference"}
        event_geometry = record.get("event_geometry")
        return cls(
            arrays=arrays,
            brain_mask=mask,
            model_geometry=model_geometry,
            isotropic_geometry=Geometry.from_dict(record["isotropic_geometry"]),
            reference_geometry=Geometry.from_dict(record["reference_geometry"]),
            event_geometry=Geometry.from_dict(event_geometry) if event_geometry else None,
            event_to_reference=transform,
            crop=CropBox.from_dict(record["crop"]),
            params=PreprocessParameters.from_dict(record["parameters"]),
            info={k: v for k, v in record.items() if k not in keys},
        )


def _read_model_array(path: Path, geometry: Geometry, dtype: type) -> np.ndarray:
    if not path.exists():
        raise InputError(f"Preprocessed image {path} is missing.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"Preprocessed image {path} could not be read: {error}") from None
    array = sitk.GetArrayFromImage(image)
    if array.shape != geometry.shape:
        raise InputError(f"Preprocessed image {path} has shape {array.shape}; its record says {geometry.shape}.")
    if not np.allclose(image.GetOrigin(), geometry.origin, atol=1e-3) or not np.allclose(image.GetSpacing(), geometry.spacing, atol=1e-4):
        raise InputError(f"Preprocessed image {path} does not sit on the grid its record describes; was it modified?")
    return array.astype(dtype, copy=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------- the pipeline


def _load(value: Any, modality: str, case_id: Optional[str]) -> tuple[sitk.Image, str, dict[str, Any]]:
    prefix = f"case {case_id}: " if case_id else ""
    if isinstance(value, sitk.Image):
        name = f"{prefix}{modality} image"
        check_volume(value, name)
        source: dict[str, Any] = {"source": "in memory"}
        image = value
    elif isinstance(value, (str, os.PathLike)):
        name = f"{prefix}{modality} image {value}"
        try:
            image = read_image(value)
        except InputError as error:
            raise InputError(f"{prefix}{error}") from None
        source = {"path": str(Path(value).resolve())}
    else:
        raise InputError(f"{prefix}{modality} image: expected a SimpleITK image or a file path, got {type(value).__name__}.")
    source.update(size=list(image.GetSize()), spacing=[float(v) for v in image.GetSpacing()])
    return image, name, source


def _check_mri(image: sitk.Image, name: str) -> None:
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(np.min(array)), float(np.max(array))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"{name} contains NaN or infinite voxel values.")
    if high <= low:
        raise InputError(f"{name} is empty: every voxel is {low:g}.")


def preprocess_case(postop: Any, event: Any, dose: Any, params: Optional[PreprocessParameters] = None, *,
                    case_id: Optional[str] = None, progress: Optional[ProgressCallback | Progress] = None,
                    cancel: Optional[CancelCheck] = None) -> PreprocessResult:
    """Preprocess one case; each input is a :class:`SimpleITK.Image` or a path :func:`read_image` reads.

    Raises :class:`InputError` for unusable inputs and :class:`PreprocessingError`
    when a step fails; messages name the case and the input.
    """
    params = (params or PreprocessParameters()).validate()
    p = as_progress(progress, cancel)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = round(timings.get(step, 0.0) + now - clock, 3)
        clock = now

    # 1. inputs
    p(0.0, "reading images")
    postop_image, postop_name, postop_source = _load(postop, "postop", case_id)
    event_image, event_name, event_source = _load(event, "event", case_id)
    dose_image, dose_name, dose_source = _load(dose, "dose", case_id)
    check_same_patient_and_frame(postop_image, event_image, dose_image,
                                 {"postop": postop_name, "event": event_name, "dose": dose_name})
    _check_mri(postop_image, postop_name)
    _check_mri(event_image, event_name)
    dose_gy, dose_unit = dose_in_gy(dose_image, params.dose_unit, dose_name)
    reference_geometry = Geometry.from_image(postop_image)
    overlap = check_dose_overlap(dose_gy, reference_geometry, dose_name, f"the {postop_name}")
    lap("read_and_check")

    # 2. reference grid
    p(0.05, "isotropic resampling")
    iso_geometry = isotropic_geometry(reference_geometry, float(params.spacing_mm))
    postop_iso = resample_to(postop_image, iso_geometry, interpolator="linear")
    lap("isotropic_resampling")

    # 3. registration
    registration = register_rigid(postop_image, event_image, params.registration, reference_name=postop_name,
                                  moving_name=event_name, progress=p.sub(0.1, 0.55))
    lap("registration")

    # 4. skull stripping
    mask_iso = skull_strip(postop_iso, params.skull_strip, name=postop_name, progress=p.sub(0.55, 0.75))
    mask_iso_array = sitk.GetArrayFromImage(mask_iso).astype(np.uint8)
    brain_ml = brain_volume_ml(mask_iso)
    lap("skull_strip")

    # 4b. quality gates: the event MRI's own brain, carried by the registration onto the post-op one; the dose grid
    p(0.75, "checking quality")
    event_mask, no_brain = event_brain_mask(event_image, float(params.spacing_mm), params.skull_strip, event_name)
    quality = assess_case(reference_mask=mask_iso, event_mask=event_mask, event_mask_reason=no_brain,
                          event_to_reference=registration.transform, registration_metric=registration.metric,
                          brain_volume_ml=brain_ml, dose_gy=dose_gy, prescription_gy=float(params.prescription_gy))
    for gate in quality.gates:
        if gate.state != "pass":
            log.warning("%s: quality gate %s %s: %s", case_id or postop_name, gate.name, gate.state, gate.message)
    lap("quality")

    # 5. model grid and the channels on it
    p(0.85, "cropping and resampling into model space")
    # The box holds a region: the brain, or the brain's part receiving at least half the maximum dose.
    region, region_name, source = mask_iso_array > 0, "the brain", postop_name
    if params.crop_centre == "dose":
        dose_iso = sitk.GetArrayFromImage(resample_to(dose_gy, iso_geometry, interpolator="linear", default=0.0))
        region = region & (dose_iso >= 0.5 * float(dose_iso.max()))
        region_name, source = "the brain's region above half the maximum dose", dose_name
        if not region.any():
            raise InputError(f"{dose_name}: no brain voxel receives half the maximum dose, so the input box cannot "
                             "be centred on the dose; use crop_centre 'brain'.")
    box = crop_box_around(region, params.size_zyx)
    in_view = fraction_inside(region, box)
    if in_view < 0.99:
        log.warning("%s: the %s-voxel input box keeps %.1f %% of %s; a larger input size or voxel size would keep "
                    "all of it.", case_id or source, "×".join(map(str, params.size_zyx)), 100 * in_view, region_name)
    kept = fraction_inside(mask_iso_array, box)
    model_geometry = cropped_geometry(iso_geometry, box)
    postop_model = crop_or_pad(sitk.GetArrayViewFromImage(postop_iso), box)
    mask_model = crop_or_pad(mask_iso_array, box)
    event_model = sitk.GetArrayFromImage(resample_to(event_image, model_geometry, registration.transform))
    dose_model_gy = sitk.GetArrayFromImage(resample_to(dose_gy, model_geometry, interpolator="linear", default=0.0))
    lap("crop_and_resample")

    # 6. normalisation
    p(0.93, "normalising")
    postop_norm, postop_stats = zscore(postop_model, mask_model, postop_name, zero_outside=params.mask_mri)
    event_norm, event_stats = zscore(event_model, mask_model, event_name, zero_outside=params.mask_mri)
    dose_norm, dose_stats = normalise_dose(dose_model_gy, params.dose_normalisation, params.prescription_gy,
                                           mask=mask_model, name=dose_name)
    lap("normalisation")

    input_max = float(sitk.GetArrayViewFromImage(dose_gy).max())
    model_max = float(dose_model_gy.max())
    if model_max < 0.5 * input_max:
        log.warning("%s: the model input keeps a dose maximum of %.1f Gy of %.1f Gy; the high-dose region is "
                    "partly outside the input box.", case_id or dose_name, model_max, input_max)
    info = {
        "case_id": case_id,
        "inputs": {"postop": postop_source, "event": event_source, "dose": dose_source},
        "registration": registration.to_dict(),
        "skull_strip": {"backend": params.skull_strip, "brain_volume_ml": round(brain_ml, 2),
                        "brain_fraction_in_input": round(kept, 5)},
        "normalisation": {"postop": postop_stats, "event": event_stats, "dose": dose_stats},
        "dose": {"unit_of_input": dose_unit, "overlap_with_reference": round(overlap, 5),
                 "input_max_gy": input_max, "model_max_gy": model_max},
        "quality": quality.to_dict(),
        "timings_s": timings,
        "software": software_versions(params),
    }
    p(1.0, "preprocessed")
    return PreprocessResult(
        arrays={"postop": postop_norm, "event": event_norm, "dose": dose_norm},
        brain_mask=mask_model.astype(np.uint8),
        model_geometry=model_geometry,
        isotropic_geometry=iso_geometry,
        reference_geometry=reference_geometry,
        event_geometry=Geometry.from_image(event_image),
        event_to_reference=registration.transform,
        crop=box,
        params=params,
        info=info,
        reference=postop_image,
    )


def software_versions(params: PreprocessParameters) -> dict[str, str]:
    """Versions of what computed a result under ``params`` (recorded, and part of cache keys)."""
    from importlib import metadata

    versions = {"ricenet": __version__, "python": platform.python_version(), "SimpleITK": sitk.Version_VersionString(),
                "numpy": np.__version__}
    packages = {"deepbet": "deepbet", "hd-bet": "hd-bet"}
    if params.skull_strip in packages:
        try:
            versions[params.skull_strip] = metadata.version(packages[params.skull_strip])
        except metadata.PackageNotFoundError:
            pass
    if params.registration.backend == "ants":
        try:
            versions["antspyx"] = metadata.version("antspyx")
        except metadata.PackageNotFoundError:
            pass
    return versions


__all__ = [
    "PreprocessParameters",
    "PreprocessResult",
    "preprocess_case",
    "RegistrationParameters",
    "RegistrationResult",
    "PreprocessingError",
]
