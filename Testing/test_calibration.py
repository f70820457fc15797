"""Temperature scaling and conformal sets on synthetic scores with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from RICENetLib.calibration import (apply_temperature, brier_score, expected_calibration_error, fit_temperature)
from RICENetLib.conformal import (NotEnoughCalibrationData, class_conditional_thresholds, conformal_quantile,
                                  patients_needed)


def _scores(n: int, sharpen: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from a calibrated model (true log-odds z); the reported scores use sharpen × z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    p1 = 1 / (1 + np.exp(-sharpen * z))
    return np.stack([1 - p1, p1], axis=1), y


@pytest.mark.parametrize("sharpen, expected", [(3.0, 3.0), (1.0, 1.0), (0.5, 0.5)])
def test_temperature_recovers_the_known_over_or_under_confidence(sharpen, expected):
    p, y = _scores(4000, sharpen, seed=1)
    fit = fit_temperature(p, y)
    assert fit["temperature"] == pytest.approx(expected, rel=0.12)
    assert fit["nll_after"] <= fit["nll_before"] + 1e-12
    if sharpen != 1.0:  # miscalibrated scores: the fit must reduce the error, not merely move it
        assert fit["ece_after"] < 0.5 * fit["ece_before"] and fit["brier_after"] < fit["brier_before"]
    assert fit["n_patients"] == 4000 and fit["ece_bins"] == 10


def test_overconfident_small_cohort_gets_a_temperature_above_one():
    p, y = _scores(80, 4.0, seed=3)  # the paper's cohort size
    fit = fit_temperature(p, y)
    assert fit["temperature"] > 1.0 and fit["ece_after"] < fit["ece_before"]


def test_temperature_never_changes_the_predicted_class():
    p, _ = _scores(200, 2.0, seed=4)
    for temperature in (0.3, 1.0, 5.0):
        assert (apply_temperature(p, temperature).argmax(axis=1) == p.argmax(axis=1)).all()
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-5)
    # Two classes: sigmoid(logit(p) / T).
    np.testing.assert_allclose(apply_temperature([[0.2, 0.8]], 2.0)[0, 1], 1 / (1 + np.exp(-np.log(4) / 2)))


def test_ece_and_brier_known_values():
    nine_right = np.tile([0.9, 0.1], (10, 1))
    assert expected_calibration_error(nine_right, [0] * 9 + [1]) == pytest.approx(0.0)
    assert expected_calibration_error(nine_right, [0] * 10) == pytest.approx(0.1)
    # Two bins: 0.6 (right 1 of 2: |0.5 − 0.6|) and 1.0 (right 2 of 2: |1 − 1|), half the patients each.
    assert expected_calibration_error([[0.6, 0.4], [0.4, 0.6], [1.0, 0.0], [0.0, 1.0]], [0, 0, 0, 1]) == pytest.approx(0.05)
    assert brier_score([[0.8, 0.2]], [0]) == pytest.approx(0.04)  # the binary (p − y)²
    assert brier_score([[0.8, 0.2], [0.3, 0.7]], [1, 1]) == pytest.approx((0.64 + 0.09) / 2)


def test_quantile_needs_enough_patients_and_says_how_many():
    assert patients_needed(0.9) == 9 and patients_needed(0.95) == 19 and patients_needed(0.8) == 4
    assert conformal_quantile(np.arange(9) / 10, 0.9) == pytest.approx(0.8)  # rank ⌈10 × 0.9⌉ = 9: the largest
    assert conformal_quantile(np.arange(19) / 19, 0.9) == pytest.approx(17 / 19)  # rank ⌈20 × 0.9⌉ = 18
    with pytest.raises(NotEnoughCalibrationData, match="8 calibration patient.*90 % set needs at least 9"):
        conformal_quantile(np.arange(8) / 10, 0.9)


def test_too_few_patients_in_a_class_make_the_set_not_available_with_the_numbers():
    p, y = _scores(60, 1.0, seed=5)
    y = np.array([0] * 55 + [1] * 5)
    thresholds = class_conditional_thresholds(p, y, ("recurrence", "rice"), 0.9)
    assert not thresholds.available
    assert "at least 9 calibration patients per class" in thresholds.reason and "rice 5" in thresholds.reason
    assert "recurrence" not in thresholds.reason
    entry = thresholds.prediction_set({"recurrence": 0.7, "rice": 0.3})
    assert entry["available"] is False and entry["classes"] is None and entry["needed_per_class"] == 9


def test_class_conditional_sets_cover_each_class_on_many_draws():
    """Split conformal: P(true class in set) ≥ 1 − α within each class, over draws of the calibration data.

    Imbalanced classes (30 vs 12 calibration patients) and an overlapping model; the mean coverage over 400
    draws must be at least 0.90 minus 1.5 points of Monte-Carlo tolerance, and not far above the
    theoretical ceiling 1 − α + 1/(n_k + 1).
    """
    rng = np.random.default_rng(7)
    coverage = {0: [], 1: []}
    sizes = []
    for _ in range(400):
        def draw(n0: int, n1: int):
            y = np.array([0] * n0 + [1] * n1)
            z = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.2, y.size)
            p1 = 1 / (1 + np.exp(-2 * z))
            return np.stack([1 - p1, p1], axis=1), y

        p_cal, y_cal = draw(30, 12)
        p_test, y_test = draw(200, 200)
        t = class_conditional_thresholds(p_cal, y_cal, ("a", "b"), 0.9)
        inside = 1 - p_test <= np.array([t.thresholds["a"], t.thresholds["b"]]) + 1e-12
        for k in (0, 1):
            coverage[k].append(inside[y_test == k, k].mean())
        sizes.append(inside.sum(axis=1).mean())
    for k, n in ((0, 30), (1, 12)):
        mean = float(np.mean(coverage[k]))
        assert 0.885 <= mean <= 0.9 + 1 / (n + 1) + 0.015, (k, mean)
    assert 1.0 < np.mean(sizes) < 2.0  # overlapping classes: some sets hold both, most one
