"""Conformal prediction sets: the classes a case could belong to at a chosen coverage (default 90 %).

Split conformal prediction (Vovk, Gammerman & Shafer 2005, "Algorithmic
Learning in a Random World"; Angelopoulos & Bates 2021, "A Gentle
Introduction to Conformal Prediction and Distribution-Free Uncertainty
Quantification", §1 and §4.5 for class-conditional sets). With the
non-conformity score ``s = 1 − p(class)`` computed on calibration patients the
models did not train on (here: the bundle's out-of-fold probabilities), a
new case's set holds every class whose score is at most the threshold, and
contains the true class with probability ≥ 1 − α, whatever the model, if
cases are exchangeable with the calibration patients.

**Class-conditional (Mondrian).** With imbalanced classes (32 RICE of 80 in
the paper) one threshold for all patients can cover the majority class well
and the minority class badly while the average looks fine. A threshold per
class, from that class's patients only, gives ≥ 1 − α coverage *within each
class*. For class ``k`` with ``n_k`` calibration scores::

    q_k = the ⌈(n_k + 1)(1 − α)⌉-th smallest score of class k

which needs ⌈(n_k + 1)(1 − α)⌉ ≤ n_k: at 90 % at least 9 patients per class,
at 95 % at least 19 (:func:`patients_needed`). With fewer the set is "not
available" rather than a guarantee that does not hold.

A set with both classes is an honest "uncertain"; an empty set means the case
resembles neither class's calibration patients at this coverage.

>>> import numpy as np
>>> patients_needed(0.9), patients_needed(0.95)
(9, 19)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_COVERAGE = 0.90
METHOD = "split conformal, class-conditional (Mondrian); score 1 − p(class)"


class NotEnoughCalibrationData(ValueError):
    """Too few calibration patients in a class for the chosen coverage; the message gives the numbers."""


def check_coverage(coverage: float) -> float:
    coverage = float(coverage)
    if not 0.0 < coverage < 1.0 or not math.isfinite(coverage):
        raise ValueError(f"coverage must be between 0 and 1 (e.g. 0.9 for 90 %), got {coverage!r}")
    return coverage


def _rank(n: int, coverage: float) -> int:
    # The 1e-9 keeps (n + 1) * 0.9 = 9.000000000000002 from rounding up to 10.
    return math.ceil((n + 1) * coverage - 1e-9)


def patients_needed(coverage: float = DEFAULT_COVERAGE) -> int:
    """The fewest calibration scores per class with ⌈(n + 1)(1 − α)⌉ ≤ n."""
    coverage = check_coverage(coverage)
    n = 1
    while _rank(n, coverage) > n:
        n += 1
    return n


def conformal_quantile(scores: Sequence[float], coverage: float = DEFAULT_COVERAGE) -> float:
    """The ⌈(n + 1)(1 − α)⌉-th smallest score; :class:`NotEnoughCalibrationData` when that rank exceeds n."""
    coverage = check_coverage(coverage)
    s = np.sort(np.asarray(scores, dtype=np.float64))
    rank = _rank(len(s), coverage)
    if rank > len(s):
        raise NotEnoughCalibrationData(
            f"{len(s)} calibration patient(s); a {100 * coverage:g} % set needs at least {patients_needed(coverage)}")
    return float(s[rank - 1])


@dataclass(frozen=True)
class ConformalThresholds:
    """Per-class thresholds on ``1 − p(class)``, or the reason there are none."""

    coverage: float
    thresholds: dict[str, float] | None
    n_per_class: dict[str, int]
    needed_per_class: int
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.thresholds is not None

    def prediction_set(self, probabilities: Mapping[str, float]) -> dict[str, Any]:
        """The JSON form of the set for one case (``prediction.json``'s ``prediction_set``)."""
        out: dict[str, Any] = {"coverage": self.coverage, "method": METHOD, "available": self.available,
                               "n_calibration_per_class": dict(self.n_per_class),
                               "needed_per_class": self.needed_per_class}
        if self.thresholds is None:
            out["classes"] = None
            out["reason"] = self.reason
            return out
        out["classes"] = [c for c, q in self.thresholds.items() if 1.0 - float(probabilities[c]) <= q + 1e-12]
        out["thresholds"] = dict(self.thresholds)
        return out


def class_conditional_thresholds(probabilities: Any, labels: Sequence[int], class_names: Sequence[str],
                                 coverage: float = DEFAULT_COVERAGE) -> ConformalThresholds:
    """Mondrian thresholds from calibration probabilities ``(patients, classes)`` and their true classes.

    Never raises for too few patients: the result is then not available and its
    ``reason`` names each short class with how many it has and how many it needs.
    """
    coverage = check_coverage(coverage)
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    needed = patients_needed(coverage)
    counts = {c: int((y == k).sum()) for k, c in enumerate(class_names)}
    short = [f"{c} {n}" for c, n in counts.items() if n < needed]
    if short:
        return ConformalThresholds(coverage, None, counts, needed,
                                   f"a {100 * coverage:g} % set needs at least {needed} calibration patients per class; "
                                   f"the bundle's out-of-fold data have {', '.join(short)}")
    thresholds = {c: conformal_quantile(1.0 - p[y == k, k], coverage) for k, c in enumerate(class_names)}
    return ConformalThresholds(coverage, thresholds, counts, needed)
