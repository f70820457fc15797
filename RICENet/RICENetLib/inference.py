"""Ensemble prediction for one case: preprocess as the bundle says, run every fold, vote.

The paper reports the majority vote of the five fold models; a clinician also
needs to see how sure the ensemble is, so every fold's probabilities, the mean
probability, the agreement ("4/5") and the spread travel with the verdict.

>>> prediction = predict_case("bundle/", postop, event, dose)        # doctest: +SKIP
>>> prediction.label, prediction.agreement                           # doctest: +SKIP
('recurrence', '4/5')
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from .errors import BundleError, InputError
from .progress import as_progress


def select_device(name: str | torch.device | None = None, auto_mps: bool = True) -> torch.device:
    """``None``/``"auto"`` picks CUDA, then Apple MPS (unless ``auto_mps`` is off), then the CPU.

    A named device must exist; the error says what to choose instead.
    """
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if auto_mps and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"Unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device '{name}' was asked for but this PyTorch sees no CUDA GPU; use cpu or auto.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"Device '{name}' was asked for but Apple MPS is not available; use cpu or auto.")
    return device


@dataclass
class FoldPrediction:
    fold: int
    probabilities: dict[str, float]
    label: str


@dataclass
class EnsemblePrediction:
    """The ensemble's answer for one case, and what is needed to show it on the images."""

    label: str
    probabilities: dict[str, float]
    votes: dict[str, int]
    agreement: str
    spread: dict[str, float]
    folds: list[FoldPrediction]
    bundle_id: str = ""
    bundle_sha256: str = ""  # bundle.json's own checksum (RICENetLib.bundle.CHECKSUM_KEY)
    timings_s: dict[str, float] = field(default_factory=dict)
    occlusion: sitk.Image | None = None  # reference (post-op) space
    occlusion_settings: dict[str, Any] | None = None
    occlusion_per_modality: dict[str, sitk.Image] | None = None  # one channel occluded at a time
    occlusion_model_space: np.ndarray | None = None  # the map on the network's input grid (z, y, x)
    reference: sitk.Image | None = None
    event_to_reference: sitk.Transform | None = None  # ITK convention: maps reference points to event points
    preprocessed: Any = None
    trust: dict[str, Any] | None = None  # model_validation, calibrated_probability, prediction_set (trust.py)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written as ``prediction.json``."""
        out: dict[str, Any] = {
            "label": self.label,
            "probabilities": self.probabilities,
            "votes": self.votes,
            "agreement": self.agreement,
            "spread": self.spread,
            "folds": [{"fold": f.fold, "probabilities": f.probabilities, "label": f.label} for f in self.folds],
            "bundle_id": self.bundle_id,
            "bundle_sha256": self.bundle_sha256,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }
        if self.occlusion_settings is not None:
            out["occlusion"] = self.occlusion_settings
        if self.trust is not None:
            out.update(self.trust)
        return out


def fold_probabilities(models: Sequence[torch.nn.Module], image: torch.Tensor, device: torch.device) -> np.ndarray:
    """Softmax output of every model for one (C, D, H, W) input: shape (folds, classes)."""
    batch = image.unsqueeze(0).to(device=device, dtype=torch.float32)
    with torch.inference_mode():
        return np.stack([torch.softmax(m(batch).float(), dim=1)[0].cpu().numpy() for m in models])


def check_fold_outputs(probabilities: np.ndarray, fold_ids: Sequence[int], source: str = "The model bundle") -> None:
    """A fold whose output is NaN or infinite has no opinion to count: refuse instead of voting with it.

    Finite inputs and finite weights (the loader checks them) can still
    overflow inside a network whose weights are extreme; the error names the fold.
    """
    bad = [int(f) for f, row in zip(fold_ids, np.asarray(probabilities, dtype=np.float64)) if not np.isfinite(row).all()]
    if bad:
        folds = ", ".join(map(str, bad))
        raise BundleError(f"{source}: fold{'s' if len(bad) > 1 else ''} {folds} gave a non-finite output (NaN or "
                          f"infinity) for this case, so no prediction is made. The fold's weights are unusable "
                          "(a training that diverged?) or the input holds extreme values; check the inputs, "
                          "or use a bundle without that fold.")


def combine_folds(probabilities: np.ndarray, class_names: Sequence[str], fold_ids: Sequence[int],
                  source: str = "The model bundle") -> dict[str, Any]:
    """Majority vote over folds; a tied vote goes to the class with the higher mean probability.

    A non-finite output is a :class:`~RICENetLib.errors.BundleError` naming the fold (see :func:`check_fold_outputs`).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    check_fold_outputs(probabilities, fold_ids, source)
    labels = probabilities.argmax(axis=1)
    votes = np.bincount(labels, minlength=len(class_names))
    mean = probabilities.mean(axis=0)
    tied = np.flatnonzero(votes == votes.max())
    winner = int(tied[np.argmax(mean[tied])])
    return {
        "label": class_names[winner],
        "probabilities": {c: float(mean[i]) for i, c in enumerate(class_names)},
        "votes": {c: int(votes[i]) for i, c in enumerate(class_names)},
        "agreement": f"{int(votes[winner])}/{len(labels)}",
        "spread": {c: float(probabilities[:, i].std()) for i, c in enumerate(class_names)},
        "folds": [FoldPrediction(int(f), {c: float(p[i]) for i, c in enumerate(class_names)}, class_names[int(l)])
                  for f, p, l in zip(fold_ids, probabilities, labels)],
    }


def resolve_occlusion(occlusion: Any, **changes: Any) -> Any:
    """``None``, a preset name or :class:`~RICENetLib.occlusion.OcclusionSettings` → settings or ``None``.

    ``changes`` replace fields of the settings (e.g. ``mask_size`` and
    ``stride`` of a preset meant for 224³ inputs); ``None`` values keep the
    preset's. Changes without settings to apply them to are an error.
    """
    changes = {key: value for key, value in changes.items() if value is not None}
    if occlusion is None:
        if changes:
            raise InputError(f"Occlusion option(s) {', '.join(changes)} given without an occlusion preset or settings.")
        return None
    from .occlusion import OCCLUSION_PRESETS, OcclusionSettings

    if isinstance(occlusion, str):
        if occlusion not in OCCLUSION_PRESETS:
            raise InputError(f"Unknown occlusion preset '{occlusion}'; use one of {', '.join(OCCLUSION_PRESETS)}.")
        occlusion = OCCLUSION_PRESETS[occlusion]
    if not isinstance(occlusion, OcclusionSettings):
        raise InputError("occlusion must be an OcclusionSettings or a preset name.")
    return replace(occlusion, **changes) if changes else occlusion


def preprocessing_share(occlusion: Any) -> float:
    """The share of :func:`predict_case`'s progress that preprocessing takes (the CLI times the rest)."""
    return 0.35 if occlusion is None else 0.15


def predict_case(
    bundle: Any,
    postop: sitk.Image | str | os.PathLike,
    event: sitk.Image | str | os.PathLike,
    dose: sitk.Image | str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    occlusion: Any = None,
    skull_strip: str | None = None,
    dose_unit: str | None = None,
    progress=None,
    cancel=None,
    coverage: float | None = None,
) -> EnsemblePrediction:
    """Classify one case with a bundle (a path or a loaded :class:`~RICENetLib.bundle.ModelBundle`).

    Preprocessing uses the bundle's own parameters; ``skull_strip`` and
    ``dose_unit`` override only what depends on the user's data. With
    ``occlusion`` (an :class:`~RICENetLib.occlusion.OcclusionSettings` or a
    preset name) the heatmap is computed too and mapped to the reference space.
    ``coverage`` is that of the conformal prediction set (default 0.9, :mod:`RICENetLib.trust`).
    """
    from .bundle import ModelBundle, load_bundle
    from .preprocessing import PreprocessParameters, preprocess_case

    from .conformal import DEFAULT_COVERAGE, check_coverage

    report = as_progress(progress, cancel)
    occlusion = resolve_occlusion(occlusion)
    try:
        coverage = check_coverage(DEFAULT_COVERAGE if coverage is None else coverage)
    except ValueError as error:
        raise InputError(f"Prediction-set {error}.") from None
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(bundle)
    run_device = select_device(device)
    parameters = PreprocessParameters.from_dict(bundle.preprocessing)
    overrides: dict[str, Any] = {}
    if skull_strip is not None:
        overrides["skull_strip"] = skull_strip
    if dose_unit is not None:
        overrides["dose_unit"] = dose_unit
    if overrides:
        parameters = PreprocessParameters.from_dict({**parameters.to_dict(), **overrides})
    share = preprocessing_share(occlusion)
    report(0.0, "preprocessing")
    prepared = preprocess_case(postop, event, dose, parameters, progress=report.sub(0.0, share))
    timings["preprocessing"] = time.perf_counter() - start

    report(share, "running the fold models")
    tick = time.perf_counter()
    models = bundle.models(run_device)
    image = torch.from_numpy(np.ascontiguousarray(prepared.stack(bundle.modalities)))
    finite = torch.isfinite(image).flatten(1).all(dim=1)
    if not bool(finite.all()):
        names = [m for m, ok in zip(bundle.modalities, finite.tolist()) if not ok]
        raise InputError(f"The preprocessed {', '.join(names)} channel holds NaN or infinite values; check that "
                         f"input image ({', '.join(names)}) for missing or extreme voxel values.")
    from . import ood
    from .quality import QualityReport, with_gate

    with ood.capture_features(models) as features:  # the pooled features of this very pass: no second one
        probabilities = fold_probabilities(models, image, run_device)
    combined = combine_folds(probabilities, bundle.class_names, [f.index for f in bundle.folds],
                             source=f"Model bundle {bundle.path}")
    gate = ood.assess(bundle, [f[0][0].numpy() for f in features] if all(features) else None)
    record = prepared.info.get("quality")
    # Replacing the gate of the same name keeps a cached preprocessing result predicted twice with one such gate.
    prepared.info["quality"] = with_gate(QualityReport.from_dict(record) if record else None, gate).to_dict()
    timings["ensemble"] = time.perf_counter() - tick
    from .bundle import CHECKSUM_KEY
    from .trust import assess

    prediction = EnsemblePrediction(
        trust=assess(bundle.metadata, combined["probabilities"], coverage),
        bundle_id=bundle.id,
        bundle_sha256=str(bundle.metadata.get(CHECKSUM_KEY, "")),
        timings_s=timings,
        reference=prepared.reference_image(),
        event_to_reference=prepared.event_to_reference,
        preprocessed=prepared,
        **combined,
    )
    if occlusion is not None:
        from .occlusion import occlusion_sensitivity

        tick = time.perf_counter()
        target = bundle.class_names.index(prediction.label)
        result = occlusion_sensitivity(models, image, occlusion, target_class=target, device=run_device,
                                       modality_names=bundle.modalities, progress=report.sub(share, 0.98))
        prediction.occlusion_model_space = result.sensitivity
        prediction.occlusion = prepared.to_reference(result.sensitivity)
        if result.per_modality:
            prediction.occlusion_per_modality = {m: prepared.to_reference(a) for m, a in result.per_modality.items()}
        prediction.occlusion_settings = {**occlusion.to_dict(), "target_class": prediction.label,
                                         "engine": result.engine, "forward_passes": int(result.forward_passes),
                                         "precision": result.precision}
        timings["occlusion"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start
    report(1.0, "done")
    return prediction
