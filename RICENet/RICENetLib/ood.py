"""Out of distribution: how far a case's network features lie from the training cohort's.

A model trained on one centre's 80 patients answers any input, including a
scan unlike everything it learnt from (another scanner, another anatomy, a
corrupted channel). The network's own view of a case is the 512 pooled values
that feed its classifier (MONAI ResNet's ``fc`` input); a case whose pooled
features sit far from the training patients' is one the verdict was not
trained for.

**What the bundle stores** (``features.safetensors``, its SHA-256 in
``bundle.json`` under the seal; :mod:`RICENetLib.bundle`), per fold model k:

- ``features``: the pooled features of *every* cohort patient under model k
  (training and validation patients, no augmentation), so that anyone can
  refit or inspect the reference;
- ``location`` and ``precision``: the mean and inverse covariance of model k's
  *training* patients' features, the covariance shrunk by Ledoit–Wolf
  (Ledoit & Wolf 2004, "A well-conditioned estimator for large-dimensional
  covariance matrices"): 64 patients cannot estimate 512 × 512 covariances,
  and the shrinkage towards a scaled identity is the standard, parameter-free
  cure (the same estimator as scikit-learn's ``LedoitWolf``, checked in the tests).

**Reference distances.** Model k's training patients are close to its
training cloud by construction (the network learnt them), so their own
distances would make every new patient look far. The reference is instead
each patient's distance under the fold that *validated* it: a patient that
neither model k nor its covariance saw, i.e. exactly what a new patient from
the same cohort looks like. Every patient contributes one such out-of-fold
distance (``bundle.json``, ``out_of_distribution.reference``).

**A new case**: its Mahalanobis distance under each fold (features captured
by a hook during the prediction's own forward pass: no second pass), the
median over folds (robust to one odd fold), then its percentile among the
reference distances. Mahalanobis distances are in units of each fold's own
training spread, which is what makes distances of different folds comparable.
The median over folds is a little less extreme than one fold's distance (the
reference's kind), so the comparison errs towards ``pass``, not ``fail``.

Gate states (thresholds with their reason):

- ``pass``: no further than the 95th percentile of the cohort's own new
  patients (so 1 in 20 in-distribution cases warns, by design);
- ``warn``: beyond it;
- ``fail``: more than :data:`FAIL_Z` robust standard deviations above the
  median of those distances (a percentile stops at 100; this says how far
  beyond; measured values: see the constant).

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(40, 8))
>>> location, precision, shrinkage = ledoit_wolf(x)
>>> 0.0 <= shrinkage <= 1.0, precision.shape
(True, (8, 8))
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from .quality import Gate, ordinal

GATE = "out_of_distribution"
FEATURES_FILE = "features.safetensors"
METHOD = ("Mahalanobis distance of the classifier's pooled input features to each fold's training patients "
          "(Ledoit-Wolf shrunk covariance), median over folds, as a percentile of the patients' out-of-fold distances")
#: Fewer reference (out-of-fold) distances than this and the gate is not available: a 95th percentile of fewer
#: than 20 values is just their maximum (the same floor as the calibration's, :mod:`.calibration`).
MIN_REFERENCE_PATIENTS = 20
#: Above this percentile of the cohort's own out-of-fold distances: warn.
WARN_PERCENTILE = 95.0
#: More than this many robust standard deviations (1.4826 × the median absolute deviation) above the median of the
#: reference distances: fail. For normally distributed distances z > 5 happens 3 times in 10 million; the margin
#: matters because a cohort's own distances have a heavier tail. Measured on the tiny test bundle
#: (Testing/test_ood.py: widen 0.125, one epoch, 20 patients; 2026-12-02): its own out-of-fold distances span
#: z = -2.9 to +1.2 and one outlier at +4.2; new patients of the same generator z = -1.1 to +1.2; a synthetic head
#: (another anatomy to that bundle) +6.7, a pelvis-like body +8.7, intensities × 3 above +100. A one-epoch network
#: separates little; a trained one's features are expected to separate more, not less (not yet measured).
FAIL_Z = 5.0


# --------------------------------------------------------------------------- features


def classifier_layer(network: torch.nn.Module) -> torch.nn.Module:
    """The classifier whose input is the pooled feature vector (MONAI ResNet: ``fc``)."""
    layer = getattr(network, "fc", None)
    if not isinstance(layer, torch.nn.Module):
        raise TypeError(f"{type(network).__name__} has no 'fc' classifier layer to read pooled features from")
    return layer


@contextlib.contextmanager
def capture_features(models: Sequence[torch.nn.Module]) -> Iterator[list[list[torch.Tensor]]]:
    """While open, every forward pass of ``models[k]`` appends its pooled features ``(batch, dim)`` to ``out[k]``.

    A forward pre-hook on the classifier: the features come from the pass the
    prediction runs anyway.
    """
    out: list[list[torch.Tensor]] = [[] for _ in models]
    handles = []

    def hook(k: int):
        def record(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            out[k].append(inputs[0].detach().float().flatten(1).cpu())
        return record

    try:
        for k, model in enumerate(models):
            handles.append(classifier_layer(model).register_forward_pre_hook(hook(k)))
        yield out
    finally:
        for handle in handles:
            handle.remove()


def cohort_features(models: Sequence[torch.nn.Module], images: Sequence[torch.Tensor], device: torch.device,
                    batch_size: int = 4, progress=None) -> np.ndarray:
    """Pooled features of every image under every model (eval mode, no augmentation): ``(folds, images, dim)``."""
    from .progress import as_progress

    report = as_progress(progress)
    result = []
    for number, model in enumerate(models):
        model.eval()
        with capture_features([model]) as captured, torch.inference_mode():
            for start in range(0, len(images), batch_size):
                report((number + start / len(images)) / len(models), f"cohort features, fold model {number + 1}")
                model(torch.stack(list(images[start:start + batch_size])).to(device=device, dtype=torch.float32))
        result.append(torch.cat(captured[0]).numpy())
    return np.stack(result).astype(np.float32)


# --------------------------------------------------------------------------- statistics


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, precision (inverse of the Ledoit–Wolf shrunk covariance) and shrinkage of ``x`` ``(n, p)``.

    Shrunk covariance ``(1 − s) S + s m I`` with ``S`` the (1/n) sample
    covariance, ``m = tr(S) / p``, ``s = min(b², d²) / d²``,
    ``d² = ‖S − m I‖² / p`` and ``b² = Σᵢ ‖xᵢxᵢᵀ − S‖² / (n² p)``. Computed
    through the n × n Gram matrix, so 64 patients × 512 features cost little.
    """
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 samples (got {n})")
    location = x.mean(axis=0)
    centred = x - location
    gram = centred @ centred.T
    trace = float(np.trace(gram)) / n
    m = trace / p
    s_norm2 = float(np.sum(gram ** 2)) / n ** 2  # ‖S‖²_F = ‖XXᵀ‖²_F / n²
    d2 = (s_norm2 - 2 * m * trace + p * m * m) / p
    b2 = (float(np.sum(np.diag(gram) ** 2)) / n - s_norm2) / (n * p)
    shrinkage = 0.0 if d2 <= 0 else min(b2, d2) / d2
    covariance = (1 - shrinkage) * (centred.T @ centred) / n + shrinkage * m * np.eye(p)
    values, vectors = np.linalg.eigh(covariance)
    floor = max(float(values.max()), 1e-12) * 1e-10  # a constant feature (m = 0) must not divide by zero
    precision = (vectors / np.maximum(values, floor)) @ vectors.T
    return location, precision, float(shrinkage)


def mahalanobis(features: np.ndarray, location: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Distance of each row of ``features`` ``(n, p)`` (or one vector) from ``location``."""
    delta = np.atleast_2d(np.asarray(features, dtype=np.float64)) - np.asarray(location, dtype=np.float64)
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", delta, np.asarray(precision, dtype=np.float64), delta), 0.0))


def fit_reference(features: np.ndarray, patient_ids: Sequence[str],
                  folds: Sequence[Mapping[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The bundle's OOD reference from cohort features ``(folds, patients, dim)`` in ``patient_ids`` order.

    ``folds``: ``{index, train_patients, validation_patients}`` in the order of
    ``features``' first axis. Returns the tensors for :data:`FEATURES_FILE` and
    the ``bundle.json`` entry (without the file's checksum, which the writer adds).
    """
    features = np.asarray(features, dtype=np.float32)
    where = {p: i for i, p in enumerate(patient_ids)}
    locations, precisions, about, reference = [], [], [], []
    for k, fold in enumerate(folds):
        train = [where[p] for p in fold["train_patients"]]
        location, precision, shrinkage = ledoit_wolf(features[k, train])
        locations.append(location)
        precisions.append(precision)
        about.append({"fold": int(fold["index"]), "n_reference": len(train), "shrinkage": shrinkage})
        validation = list(fold["validation_patients"])
        distances = mahalanobis(features[k, [where[p] for p in validation]], location, precision)
        reference += [{"patient_id": p, "fold": int(fold["index"]), "distance": float(d)}
                      for p, d in zip(validation, distances)]
    tensors = {"features": torch.from_numpy(features),
               "location": torch.from_numpy(np.stack(locations).astype(np.float32)),
               "precision": torch.from_numpy(np.stack(precisions).astype(np.float32))}
    metadata = {"method": METHOD, "file": FEATURES_FILE, "feature_dim": int(features.shape[2]),
                "patients": list(patient_ids), "folds": about,
                "reference": sorted(reference, key=lambda e: e["patient_id"])}
    return tensors, metadata


# --------------------------------------------------------------------------- the gate


def not_available(reason: str) -> Gate:
    """The gate when the bundle cannot say (shown as a warning: the check was not made)."""
    return Gate(GATE, "warn", None, "percentile", f"pass ≤ {WARN_PERCENTILE:g}th percentile",
                f"Not available: {reason}", "distance from the training cohort not checked")


def assess(bundle: Any, case_features: Sequence[np.ndarray] | None) -> Gate:
    """The gate for one case: ``case_features[k]`` is fold k's pooled feature vector (``None``: not captured)."""
    entry = bundle.metadata.get("out_of_distribution")
    tensors = getattr(bundle, "ood_tensors", None)
    if not entry or tensors is None:
        return not_available("this bundle holds no training-cohort features (written by an earlier RICE-NET or "
                             "never trained); retrain it to check how far a case lies from its training patients.")
    reference = np.array([e["distance"] for e in entry["reference"]], dtype=np.float64)
    if len(reference) < MIN_REFERENCE_PATIENTS:
        return not_available(f"the bundle's reference holds {len(reference)} out-of-fold patients; at least "
                             f"{MIN_REFERENCE_PATIENTS} are needed for a 95th percentile.")
    if case_features is None or len(case_features) != len(entry["folds"]):
        return not_available("the case's features were not captured.")
    location, precision = tensors["location"].double().numpy(), tensors["precision"].double().numpy()
    per_fold = [float(mahalanobis(f, location[k], precision[k])[0]) for k, f in enumerate(case_features)]
    if not np.isfinite(per_fold).all():
        return not_available("the case's network features are not finite numbers.")
    distance = float(np.median(per_fold))
    percentile = 100.0 * float(np.mean(reference <= distance))
    median = float(np.median(reference))
    spread = 1.4826 * float(np.median(np.abs(reference - median))) or float(np.std(reference)) or 1.0
    z = (distance - median) / spread
    state = "fail" if z > FAIL_Z else "warn" if percentile > WARN_PERCENTILE else "pass"
    threshold = (f"pass ≤ {WARN_PERCENTILE:g}th percentile of the training patients' out-of-fold distances, "
                 f"fail > {FAIL_Z:g} robust SD above their median")
    found = (f"Mahalanobis distance {distance:.1f} (median of {len(per_fold)} folds), the "
             f"{ordinal(percentile)} percentile of {len(reference)} training patients' out-of-fold distances "
             f"({z:+.1f} robust SD from their median {median:.1f}).")
    if state == "pass":
        message = f"The case's network features lie within the training cohort: {found}"
    elif state == "warn":
        message = f"The case's network features lie at the edge of the training cohort: {found} Weigh the verdict with care."
    else:
        message = (f"The case's network features lie far outside the training cohort: {found} The model was not "
                   "trained on cases like this one (another anatomy, scanner or protocol?).")
    return Gate(GATE, state, percentile, "percentile", threshold, message,
                "unlike the training cohort" if state == "fail" else "at the edge of the training cohort")


__all__ = ["GATE", "FEATURES_FILE", "capture_features", "cohort_features", "ledoit_wolf", "mahalanobis",
           "fit_reference", "assess", "not_available"]
