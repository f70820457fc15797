"""Rigid registration of the event MRI onto the reference (post-operative) MRI.

Why rigid and Mattes mutual information: both scans are the same patient's
head months apart, so the skull does not deform, but a new lesion, a shrinking
cavity and a different contrast dose change the intensities. A statistical
metric tolerates that, and no histogram matching is done because matching
would partly erase the change the classifier has to see.

The result maps points of the reference to points of the moving image (ITK's
convention for a registration result), which is exactly what resampling the
moving image into the reference needs, and what ``.tfm`` files hold.

>>> result = register_rigid(postop, event)                  # doctest: +SKIP
>>> event_in_postop = resample_to(event, Geometry.from_image(postop), result.transform)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import math
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from .errors import Cancelled, InputError, PreprocessingError, reject_unknown_keys
from .progress import CancelCheck, Progress, ProgressCallback, as_progress

BACKENDS = ("sitk", "ants")
INITIALISATIONS = ("moments", "geometry", "none")


@dataclass(frozen=True)
class RegistrationParameters:
    """How :func:`register_rigid` runs; defaults measured on 1 mm synthetic heads.

    Both images are first resampled onto isotropic working grids of
    ``working_spacing_mm`` (or their own finest spacing if coarser; 0 keeps
    them as they are): the transform is physical, so the grid only sets cost
    and precision. On 1 mm heads a 2 mm working grid is 7× faster than the
    full grid and still well under 1 mm of error (see ``benchmarks/preprocess.py``).
    ``learning_rate`` and ``min_step`` are in mm of voxel shift (the optimiser
    scales are set from physical shifts), so they mean the same at any spacing.
    A result counts as converged when the optimiser stopped before
    ``max_iterations`` on the finest level, its Mattes metric is at most
    ``max_metric`` (more negative = more shared information) and the rotation
    stays under ``max_rotation_deg``.

    ``threads`` = 1 makes the result bitwise reproducible: ITK's Mattes metric
    adds up its per-thread histograms in the order the threads finish, so with
    several threads two runs differ in the 7th digit. On the 2 mm working grid
    one thread is as fast as two (measured on 1 mm heads); 0 = ITK's default.
    """

    backend: str = "sitk"
    initialisation: str = "moments"
    working_spacing_mm: float = 2.0
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    histogram_bins: int = 32
    sampling_fraction: float = 0.1
    max_iterations: int = 200
    learning_rate: float = 1.0
    min_step: float = 0.001
    relaxation: float = 0.5
    seed: int = 1
    max_metric: float = -0.1
    max_rotation_deg: float = 60.0
    threads: int = 1

    def validate(self) -> "RegistrationParameters":
        def bad(name: str, why: str) -> InputError:
            return InputError(f"Registration parameter {name}={getattr(self, name)!r}: {why}.")

        if self.backend not in BACKENDS:
            raise bad("backend", f"use one of {', '.join(BACKENDS)}")
        if self.initialisation not in INITIALISATIONS:
            raise bad("initialisation", f"use one of {', '.join(INITIALISATIONS)}")
        if not (self.working_spacing_mm >= 0 and math.isfinite(self.working_spacing_mm)):
            raise bad("working_spacing_mm", "use a spacing ≥ 0 mm (0: register on the images' own grids)")
        if not self.shrink_factors or any(int(v) < 1 for v in self.shrink_factors):
            raise bad("shrink_factors", "give one factor ≥ 1 per level")
        if len(self.smoothing_sigmas_mm) != len(self.shrink_factors) or any(v < 0 for v in self.smoothing_sigmas_mm):
            raise bad("smoothing_sigmas_mm", "give one sigma ≥ 0 per level (as many as shrink_factors)")
        if not 8 <= self.histogram_bins <= 256:
            raise bad("histogram_bins", "use 8 to 256 bins")
        if not 0 < self.sampling_fraction <= 1:
            raise bad("sampling_fraction", "use a fraction in (0, 1]")
        if self.max_iterations < 1:
            raise bad("max_iterations", "use at least 1")
        if not (self.learning_rate > 0 and 0 < self.min_step < self.learning_rate):
            raise bad("min_step", "need 0 < min_step < learning_rate")
        if not 0 < self.relaxation < 1:
            raise bad("relaxation", "use a factor in (0, 1)")
        if self.threads < 0:
            raise bad("threads", "use 0 (ITK's default) or a positive number")
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shrink_factors"] = list(self.shrink_factors)
        data["smoothing_sigmas_mm"] = list(self.smoothing_sigmas_mm)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RegistrationParameters":
        reject_unknown_keys(cls, data, "registration parameter")
        values = dict(data)
        for key in ("shrink_factors", "smoothing_sigmas_mm"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values).validate()


@dataclass
class RegistrationResult:
    """The transform (reference points → moving points) and how it was found."""

    transform: sitk.Transform
    metric: float
    initial_metric: float
    iterations: int
    stop_condition: str
    converged: bool
    seconds: float
    backend: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rotation_deg(self) -> float:
        return rotation_angle_deg(self.transform)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "metric": self.metric,
            "initial_metric": self.initial_metric,
            "iterations": self.iterations,
            "stop_condition": self.stop_condition,
            "converged": self.converged,
            "seconds": round(self.seconds, 3),
            "rotation_deg": round(self.rotation_deg, 4),
            "translation_mm": [float(v) for v in transform_translation(self.transform)],
            **self.details,
        }


def ants_available() -> bool:
    """True when ANTsPy (``antspyx``, imported as ``ants``) can be imported."""
    return importlib.util.find_spec("ants") is not None


def transform_matrix(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """The (A, t) with ``transform(p) = A p + t`` for a linear transform (Euler, affine, composite)."""
    origin = np.zeros(3)
    t = np.array(transform.TransformPoint(tuple(origin)))
    columns = [np.array(transform.TransformPoint(tuple(np.eye(3)[i]))) - t for i in range(3)]
    return np.column_stack(columns), t


def rotation_angle_deg(transform: sitk.Transform) -> float:
    """The rotation angle of a rigid transform's linear part, in degrees."""
    matrix, _ = transform_matrix(transform)
    cosine = (np.trace(matrix) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def transform_translation(transform: sitk.Transform) -> np.ndarray:
    """How far the transform moves the origin of physical space, in mm (its ``t``)."""
    return transform_matrix(transform)[1]


def mean_displacement_mm(a: sitk.Transform, b: sitk.Transform, points: np.ndarray) -> float:
    """Mean distance between where ``a`` and ``b`` send ``points`` (N, 3): a registration error."""
    ma, ta = transform_matrix(a)
    mb, tb = transform_matrix(b)
    diff = points @ (ma - mb).T + (ta - tb)
    return float(np.mean(np.linalg.norm(diff, axis=1)))


_threads_lock = threading.Lock()


@contextlib.contextmanager
def itk_threads(threads: int):
    """Run ITK with ``threads`` threads inside the block (0: leave ITK's default).

    ITK builds the metric inside ``Execute`` from its process-wide default, so
    that default is changed for the duration and restored; the lock keeps two
    registrations from interleaving their changes.
    """
    if threads <= 0:
        yield
        return
    with _threads_lock:
        previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
        try:
            yield
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _float(image: sitk.Image) -> sitk.Image:
    return image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)


def _initial_transform(reference: sitk.Image, moving: sitk.Image, how: str, names: str) -> sitk.Transform:
    if how == "none":
        return sitk.Euler3DTransform()
    mode = (sitk.CenteredTransformInitializerFilter.MOMENTS if how == "moments"
            else sitk.CenteredTransformInitializerFilter.GEOMETRY)
    try:
        return sitk.CenteredTransformInitializer(reference, moving, sitk.Euler3DTransform(), mode)
    except RuntimeError as error:
        raise PreprocessingError(f"Could not initialise the registration of {names} ({how}): {_reason(error)}") from None


def _reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _as_euler(transform: sitk.Transform) -> sitk.Transform:
    """Unwrap what ``Execute`` returns into the concrete rigid transform."""
    if hasattr(transform, "Downcast"):
        transform = transform.Downcast()
    if isinstance(transform, sitk.CompositeTransform):
        if transform.GetNumberOfTransforms() == 1:
            return _as_euler(transform.GetNthTransform(0))
        transform.FlattenTransform()
    return transform


def evaluate_metric(reference: sitk.Image, moving: sitk.Image, transform: sitk.Transform,
                    params: RegistrationParameters) -> float:
    """The Mattes mutual information (negated, as ITK minimises it) of ``moving`` through ``transform``.

    Evaluated the same way for every backend, so the convergence check means
    the same whichever produced the transform.
    """
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=params.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(params.sampling_fraction, params.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform, inPlace=False)
    try:
        return float(method.MetricEvaluate(_float(reference), _float(moving)))
    except RuntimeError:
        return float("nan")  # e.g. too few samples overlap: reported as not converged


def register_rigid(reference: sitk.Image, moving: sitk.Image, params: Optional[RegistrationParameters] = None,
                   *, reference_name: str = "reference image", moving_name: str = "moving image",
                   progress: Optional[ProgressCallback | Progress] = None,
                   cancel: Optional[CancelCheck] = None, check: bool = True) -> RegistrationResult:
    """Rigidly register ``moving`` to ``reference``; the transform maps reference points to moving points.

    Raises :class:`PreprocessingError` naming both images when the registration
    fails or, with ``check``, does not converge (see :class:`RegistrationParameters`).
    """
    params = (params or RegistrationParameters()).validate()
    p = as_progress(progress, cancel)
    names = f"{moving_name} onto {reference_name}"
    for image, name in ((reference, reference_name), (moving, moving_name)):
        if image.GetDimension() != 3:
            raise InputError(f"{name} is {image.GetDimension()}D; registration needs 3D volumes.")
    p(0.0, "registering")
    with itk_threads(params.threads):
        if params.backend == "ants":
            result = _register_ants(reference, moving, params, names, p)
        else:
            result = _register_sitk(reference, moving, params, names, p)
    if check:
        _check_convergence(result, params, names)
    p(1.0, "registered")
    return result


def working_image(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` as float32 on an isotropic grid of ``spacing_mm``, or its finest own spacing if coarser.

    Linear resampling onto a grid half as fine averages neighbouring voxels,
    which is enough anti-aliasing for a mutual-information metric.
    """
    image = _float(image)
    if spacing_mm <= 0:
        return image
    from .resampling import resample_isotropic

    spacing = max(float(spacing_mm), min(image.GetSpacing()))
    if np.allclose(image.GetSpacing(), spacing, rtol=1e-3):
        return image
    return resample_isotropic(image, spacing)


def _register_sitk(reference: sitk.Image, moving: sitk.Image, params: RegistrationParameters, names: str,
                   p: Progress) -> RegistrationResult:
    started = time.perf_counter()
    fixed = working_image(reference, params.working_spacing_mm)
    mov = working_image(moving, params.working_spacing_mm)
    initial = _initial_transform(fixed, mov, params.initialisation, names)
    initial_metric = evaluate_metric(fixed, mov, initial, params)

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=params.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(params.sampling_fraction, params.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=params.learning_rate, minStep=params.min_step, numberOfIterations=params.max_iterations,
        relaxationFactor=params.relaxation, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([int(v) for v in params.shrink_factors])
    method.SetSmoothingSigmasPerLevel([float(v) for v in params.smoothing_sigmas_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)

    levels = len(params.shrink_factors)
    state: dict[str, Any] = {"level": -1, "cancelled": False, "iterations": [], "reported": -1.0}

    def on_level() -> None:
        try:
            state["level"] += 1
            state["iterations"].append(0)
        except BaseException as error:  # Ctrl-C between two bytecodes here: as in on_iteration
            state["raised"] = error
            method.StopRegistration()

    def on_iteration() -> None:
        # Exceptions must not escape into ITK: a cancel request stops the optimiser instead.
        state["iterations"][-1] = method.GetOptimizerIteration() + 1
        level = max(state["level"], 0)
        within = min(method.GetOptimizerIteration() / max(params.max_iterations, 1) * 4, 1.0)
        fraction = (level + within) / levels
        try:
            if fraction - state["reported"] >= 0.02:  # a few dozen updates, not one per iteration
                state["reported"] = fraction
                p(fraction, f"registration level {level + 1}/{levels}")
            else:
                p.check()
        except Cancelled:
            state["cancelled"] = True
            method.StopRegistration()
        except BaseException as error:  # Ctrl-C lands here (or a failing callback): re-raised after Execute,
            state["raised"] = error     # not turned into ITK's "error executing the Python Callable"
            method.StopRegistration()

    method.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)
    method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    try:
        transform = method.Execute(fixed, mov)
    except RuntimeError as error:
        if state.get("raised") is not None:
            raise state["raised"] from None
        raise PreprocessingError(f"Registration of {names} failed: {_reason(error)}") from None
    finally:
        method.RemoveAllCommands()
    if state.get("raised") is not None:
        raise state["raised"]
    if state["cancelled"]:
        raise Cancelled()
    transform = _as_euler(transform)
    iterations = state["iterations"][-1] if state["iterations"] else 0
    stop = method.GetOptimizerStopConditionDescription()
    metric = float(method.GetMetricValue())
    converged = iterations < params.max_iterations
    return RegistrationResult(transform, metric, initial_metric, iterations, stop, converged,
                              time.perf_counter() - started, "sitk",
                              {"iterations_per_level": list(state["iterations"])})


def _check_convergence(result: RegistrationResult, params: RegistrationParameters, names: str) -> None:
    problems = []
    if not result.converged:
        problems.append(f"the optimiser ran out of iterations ({result.iterations} of {params.max_iterations}) "
                        "on the finest level")
    if not math.isfinite(result.metric):
        problems.append("the similarity could not be evaluated (the images hardly overlap)")
    elif result.metric > params.max_metric:
        problems.append(f"the images share too little information at the end (Mattes metric {result.metric:.3f}, "
                        f"needs ≤ {params.max_metric:g})")
    if result.rotation_deg > params.max_rotation_deg:
        problems.append(f"the rotation found ({result.rotation_deg:.0f}°) exceeds {params.max_rotation_deg:g}°")
    if problems:
        result.converged = False
        raise PreprocessingError(
            f"Registration of {names} did not converge: {'; '.join(problems)}. Check that both are T1c MRIs of "
            "the same patient covering the head; if they are, try initialisation='geometry' or more iterations."
        )


def _register_ants(reference: sitk.Image, moving: sitk.Image, params: RegistrationParameters, names: str,
                   p: Progress) -> RegistrationResult:
    """The same job through ANTsPy (``antspyx``), as in the paper; only when it is installed."""
    if not ants_available():
        raise PreprocessingError(
            f"Registration of {names}: backend 'ants' needs ANTsPy, which is not installed "
            "(pip install antspyx), or use backend 'sitk'."
        )
    import ants  # optional dependency, imported only here

    started = time.perf_counter()
    fixed = working_image(reference, params.working_spacing_mm)
    mov = working_image(moving, params.working_spacing_mm)
    initial_metric = evaluate_metric(fixed, mov, _initial_transform(fixed, mov, "geometry", names), params)

    def to_ants(image: sitk.Image) -> Any:
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0).copy()  # ANTs arrays are (x, y, z)
        direction = np.array(image.GetDirection()).reshape(3, 3)
        return ants.from_numpy(array, origin=list(image.GetOrigin()), spacing=list(image.GetSpacing()),
                               direction=direction)

    options: dict[str, Any] = dict(
        type_of_transform="Rigid", aff_metric="mattes", aff_sampling=params.histogram_bins,
        aff_random_sampling_rate=params.sampling_fraction,
        aff_iterations=tuple([params.max_iterations] * len(params.shrink_factors)),
        aff_shrink_factors=tuple(int(v) for v in params.shrink_factors),
        aff_smoothing_sigmas=tuple(float(v) for v in params.smoothing_sigmas_mm),
    )
    accepted = inspect.signature(ants.registration).parameters
    if "smoothing_in_mm" in accepted:
        options["smoothing_in_mm"] = True
    if "use_legacy_histogram_matching" in accepted:
        options["use_legacy_histogram_matching"] = False  # never match histograms (see module docstring)
    p(0.1, "registering (ANTs)")
    with tempfile.TemporaryDirectory(prefix="ricenet-ants-") as folder:
        try:
            output = ants.registration(to_ants(fixed), to_ants(mov), outprefix=os.path.join(folder, "reg_"), **options)
            transform = sitk.ReadTransform(output["fwdtransforms"][0])
        except Exception as error:  # ANTsPy raises assorted types
            raise PreprocessingError(f"Registration of {names} with ANTs failed: {_reason(error)}") from None
    transform = _as_euler(transform)
    metric = evaluate_metric(fixed, mov, transform, params)
    return RegistrationResult(transform, metric, initial_metric, 0, "ANTs (convergence judged by the metric)",
                              True, time.perf_counter() - started, "ants")
