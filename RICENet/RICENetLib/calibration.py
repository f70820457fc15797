"""Calibration of the ensemble's mean probability: temperature scaling fitted on out-of-fold predictions.

A network trained to a small cohort is usually over-confident: "p = 0.95"
is right less often than 95 % of the time. Temperature scaling (Guo et al.
2017, "On Calibration of Modern Neural Networks") divides the log-odds by
one number ``T`` fitted by minimising the negative log-likelihood on data the
models did not train on; ``T > 1`` softens over-confident scores, ``T < 1``
sharpens timid ones, and the predicted class never changes (the map is
monotone), so the vote and macro F1 stay as they are.

Here the "logits" are the log of the ensemble's mean probability:
``calibrated = softmax(log p / T)``, which for two classes is
``sigmoid(logit(p) / T)``. The fit uses the bundle's out-of-fold
probabilities (every patient validated by exactly one fold model).

**Known approximation.** The out-of-fold probabilities come from single-fold
models, while a new case is scored by the mean over all folds, which is
usually a little less extreme than one fold's output. Fitting on single-fold
out-of-fold scores and applying to the ensemble mean is standard practice for
cross-validated ensembles (no patient is left to calibrate the ensemble
itself), and errs towards a slightly too large ``T`` (too modest), not too small.

Reported figures, before and after, on the same out-of-fold data:

- **ECE**, expected calibration error: confidence (the top probability) in
  10 equal-width bins over [0, 1]; the mean over bins of |accuracy − mean
  confidence|, weighted by the bin's share of patients.
- **Brier score**: half the sum over classes of (p − 1[true class])², averaged
  over patients, which for two classes is the usual (p(class 1) − y)².

Figures on the data the temperature was fitted on are optimistic for "after";
an independent test cohort (``benchmarks/calibration.py``) gives the honest one.

>>> import numpy as np
>>> p = np.array([[0.99, 0.01], [0.98, 0.02], [0.03, 0.97], [0.95, 0.05]])
>>> fit = fit_temperature(p, [0, 1, 1, 0])
>>> fit["temperature"] > 1.0        # one confident mistake: soften
True
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

METHOD = "temperature scaling of the log of the ensemble's mean probability"
ECE_BINS = 10
#: Probabilities are clipped to [EPS, 1 − EPS] before the log: a softmax that rounds to exactly 0 or 1
#: would otherwise give an infinite log-odds that no temperature can move.
EPS = 1e-6
#: Fewer out-of-fold patients than this and the temperature is recorded but not applied. One parameter fitted
#: by maximum likelihood on a handful of patients follows the sample, not the model: when the raw scores happen
#: to rank every patient right (likely with 6 patients) the likelihood keeps rising as T → 0, and a temperature of
#: 0.09 turns p = 0.52 into 0.72. Twenty patients (ten per class in a balanced cohort) is the usual floor for
#: fitting one calibration parameter; the paper's 80 are well above it.
MIN_CALIBRATION_PATIENTS = 20
#: The search range of T: beyond it the scores are either all ~0.5 or all ~0/1, so the data carry nothing more.
T_RANGE = (0.05, 20.0)


def _as_arrays(probabilities: Any, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise ValueError(f"probabilities must be (patients, classes ≥ 2) with one label per patient "
                         f"(got {p.shape} and {y.shape[0]} labels)")
    if not np.isfinite(p).all() or (y < 0).any() or (y >= p.shape[1]).any():
        raise ValueError("probabilities must be finite and labels class indices")
    return p, y


def apply_temperature(probabilities: Any, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row by row: for two classes ``sigmoid(logit(p) / T)``.

    >>> apply_temperature([[0.8, 0.2]], 1.0).round(3).tolist()
    [[0.8, 0.2]]
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1.0 - EPS)
    p = p / p.sum(axis=-1, keepdims=True)
    z = np.log(p) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def negative_log_likelihood(probabilities: Any, labels: Sequence[int]) -> float:
    p, y = _as_arrays(probabilities, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))


def reliability_bins(probabilities: Any, labels: Sequence[int], bins: int = ECE_BINS) -> list[dict[str, float]]:
    """The non-empty bins of a reliability diagram: ``{low, high, n, confidence, accuracy}`` each.

    Bin k holds top probabilities in (k/bins, (k+1)/bins]; a confidence of
    exactly 0 goes to the first bin.
    """
    p, y = _as_arrays(probabilities, labels)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return [{"low": k / bins, "high": (k + 1) / bins, "n": int((which == k).sum()),
             "confidence": float(confidence[which == k].mean()), "accuracy": float(correct[which == k].mean())}
            for k in range(bins) if (which == k).any()]


def expected_calibration_error(probabilities: Any, labels: Sequence[int], bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins of the top probability (Guo et al. 2017, eq. 3)."""
    rows = reliability_bins(probabilities, labels, bins)
    total = sum(row["n"] for row in rows)
    return float(sum(row["n"] / total * abs(row["accuracy"] - row["confidence"]) for row in rows))


def reliability_curves(out_of_fold: Sequence[dict[str, Any]], calibration: dict[str, Any],
                       class_names: Sequence[str]) -> dict[str, list[dict[str, float]] | None]:
    """``{"raw": bins, "calibrated": bins or None}`` of a bundle's out-of-fold data (:func:`reliability_bins`).

    ``calibrated`` is ``None`` where the temperature is not applied (fewer
    than :data:`MIN_CALIBRATION_PATIENTS` patients), as in every verdict.
    """
    p, y = out_of_fold_arrays(out_of_fold, class_names)
    applied = calibration["n_patients"] >= MIN_CALIBRATION_PATIENTS
    return {"raw": reliability_bins(p, y),
            "calibrated": reliability_bins(apply_temperature(p, calibration["temperature"]), y) if applied else None}


def summary_line(calibration: dict[str, Any] | None) -> str:
    """One line for ``ricenet train``, ``ricenet info BUNDLE`` and ``ricenet bundle verify``."""
    if not calibration:
        return "calibration: none (a bundle without out-of-fold probabilities)"
    n = calibration["n_patients"]
    applied = ("applied to every verdict" if n >= MIN_CALIBRATION_PATIENTS
               else f"not applied: fewer than {MIN_CALIBRATION_PATIENTS} patients")
    return (f"calibration: temperature {calibration['temperature']:.3f} on {n} out-of-fold patients ({applied}); "
            f"ECE {calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}, "
            f"Brier {calibration['brier_before']:.3f} → {calibration['brier_after']:.3f} "
            "(before → after, on the data it was fitted on)")


def brier_score(probabilities: Any, labels: Sequence[int]) -> float:
    """Half the multi-class Brier score: for two classes exactly mean((p(class 1) − y)²)."""
    p, y = _as_arrays(probabilities, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(0.5 * np.mean(np.sum((p - onehot) ** 2, axis=1)))


def fit_temperature(probabilities: Any, labels: Sequence[int]) -> dict[str, Any]:
    """The temperature minimising the NLL on (out-of-fold) probabilities, and ECE/Brier before and after.

    A deterministic search: a grid of 400 temperatures evenly spaced in log T
    over :data:`T_RANGE`, then golden-section refinement around the best grid
    point (the NLL is smooth and, in log T, has one minimum for such data).
    """
    p, y = _as_arrays(probabilities, labels)

    def nll(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(p, math.exp(log_t)), y)

    low, high = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    grid = np.linspace(low, high, 400)
    values = [nll(v) for v in grid]
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(c) < nll(d):
            b = d
        else:
            a = c
    temperature = math.exp((a + b) / 2)
    after = apply_temperature(p, temperature)
    return {
        "method": METHOD,
        "temperature": temperature,
        "n_patients": int(len(y)),
        "nll_before": negative_log_likelihood(p, y),
        "nll_after": negative_log_likelihood(after, y),
        "ece_before": expected_calibration_error(p, y),
        "ece_after": expected_calibration_error(after, y),
        "brier_before": brier_score(p, y),
        "brier_after": brier_score(after, y),
        "ece_bins": ECE_BINS,
        "note": "ECE over 10 equal-width bins of the top probability; figures on the out-of-fold data the "
                "temperature was fitted on (single-fold models; applied to the ensemble mean).",
    }


def calibration_from_out_of_fold(out_of_fold: Sequence[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """:func:`fit_temperature` on a bundle's ``out_of_fold`` entries (see :mod:`RICENetLib.bundle`)."""
    p, y = out_of_fold_arrays(out_of_fold, class_names)
    return fit_temperature(p, y)


def out_of_fold_arrays(out_of_fold: Sequence[dict[str, Any]], class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(patients, classes)`` probabilities and class indices of ``out_of_fold`` entries."""
    index = {c: k for k, c in enumerate(class_names)}
    p = np.array([[float(entry["p"][c]) for c in class_names] for entry in out_of_fold], dtype=np.float64)
    y = np.array([index[entry["label"]] for entry in out_of_fold], dtype=np.int64)
    return p.reshape(len(out_of_fold), len(class_names)), y
