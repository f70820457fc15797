"""Classification metrics: macro F1 (the paper's metric) and friends, in plain numpy.

Macro F1 is the unweighted mean of the per-class F1 scores, so the minority
class (RICE, 32 of 80 patients in the paper) counts as much as the majority.
A class that is neither present nor predicted gets F1 = 1 (nothing to get
wrong); a class present but never predicted gets 0.

>>> metrics = classification_metrics([0, 0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
>>> round(metrics["macro_f1"], 3), metrics["accuracy"]
(0.733, 0.75)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .bundle import mean_sd  # noqa: F401  (re-exported: one definition for bundles and tables)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = 2) -> np.ndarray:
    """``matrix[t, p]`` = number of cases of true class ``t`` predicted as ``p``."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def f1_per_class(matrix: np.ndarray) -> np.ndarray:
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    denominator = predicted + actual
    return np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 1.0)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = 2) -> float:
    return float(f1_per_class(confusion_matrix(y_true, y_pred, n_classes)).mean())


def roc_auc(y_true: Sequence[int], score: Sequence[float]) -> float:
    """Area under the ROC curve of ``score`` for class 1 (ties count half); NaN with one class."""
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=np.float64)
    positive, negative = s[y == 1], s[y == 0]
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (positive.size * negative.size))


def classification_metrics(y_true: Sequence[int], probabilities: Sequence[Sequence[float]] | np.ndarray,
                           loss: float | None = None) -> dict[str, float]:
    """Macro F1, accuracy, balanced accuracy, per-class F1 and ROC AUC of class-probability rows.

    The predicted class is the argmax; with two classes the AUC scores class 1 (``rice``).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    n_classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    f1 = f1_per_class(matrix)
    actual = matrix.sum(axis=1)
    recall = np.diag(matrix)[actual > 0] / actual[actual > 0]
    result = {
        "macro_f1": float(f1.mean()),
        "accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)),
        "balanced_accuracy": float(recall.mean()) if recall.size else float("nan"),
    }
    for index in range(n_classes):
        result[f"f1_class{index}"] = float(f1[index])
    if n_classes == 2:
        result["auc"] = roc_auc(y_true, probabilities[:, 1])
    if loss is not None:
        result["loss"] = float(loss)
    return result


def format_mean_sd(summary: dict, digits: int = 2) -> str:
    """``0.80 ± 0.05`` (or ``0.80`` for one fold, ``—`` for none)."""
    if summary.get("mean") is None:
        return "—"
    if summary.get("sd") is None:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"
