"""Cross-validation folds and the metrics they are judged by."""

from __future__ import annotations

import json
import random

import pytest

from RICENetLib.cohort import Case
from RICENetLib.errors import InputError
from RICENetLib.metrics import classification_metrics, format_mean_sd, macro_f1, mean_sd
from RICENetTrainingLib.folds import (check_cohort, default_folds_path, folds_for_cohort, load_folds, make_folds)


def cohort(n_recurrence: int = 48, n_rice: int = 32) -> list[Case]:
    """The paper's training cohort shape: 48 recurrence, 32 RICE."""
    return ([Case(f"R{i:03d}", "recurrence", {}) for i in range(n_recurrence)]
            + [Case(f"C{i:03d}", "rice", {}) for i in range(n_rice)])


def test_no_patient_in_two_folds_and_every_patient_in_one():
    cases = cohort()
    folds = make_folds(cases, n_folds=5, seed=3)
    seen = [p for k in range(5) for p in folds.validation_ids(k)]
    assert len(seen) == len(set(seen)) == len(cases)
    for k in range(5):
        assert not set(folds.train_ids(k)) & set(folds.validation_ids(k))
        assert sorted(folds.train_ids(k) + folds.validation_ids(k)) == sorted(c.patient_id for c in cases)


def test_folds_are_stratified_and_balanced():
    folds = make_folds(cohort(), n_folds=5, seed=3)
    sizes = [len(folds.validation_ids(k)) for k in range(5)]
    rice = [sum(p.startswith("C") for p in folds.validation_ids(k)) for k in range(5)]
    assert sizes == [16] * 5
    assert max(rice) - min(rice) <= 1 and sum(rice) == 32


def test_folds_depend_on_seed_not_on_row_order():
    cases = cohort(13, 9)
    shuffled = list(cases)
    random.Random(1).shuffle(shuffled)
    assert make_folds(cases, 3, seed=5) == make_folds(shuffled, 3, seed=5)
    assert make_folds(cases, 3, seed=5) != make_folds(cases, 3, seed=6)


def test_folds_file_is_written_once_and_reused(tmp_path):
    path = tmp_path / "folds.json"
    first = folds_for_cohort(cohort(10, 10), path, n_folds=5, seed=1)
    assert json.loads(path.read_text(encoding="utf-8"))["folds"][0]["validation_patients"] == first.validation_ids(0)
    again = folds_for_cohort(list(reversed(cohort(10, 10))), path, n_folds=5, seed=99)  # seed ignored: file wins
    assert again == first == load_folds(path)
    with pytest.raises(InputError, match="has 5 folds but 4 were asked for"):
        folds_for_cohort(cohort(10, 10), path, n_folds=4)
    with pytest.raises(InputError, match=r"another cohort \(not in it: R010"):
        folds_for_cohort(cohort(11, 10), path, n_folds=5)
    changed = cohort(10, 10)
    changed[0] = Case("R000", "rice", {})
    with pytest.raises(InputError, match="label changed: R000"):
        folds_for_cohort(changed, path, n_folds=5)


def test_damaged_folds_file(tmp_path):
    path = tmp_path / "folds.json"
    folds_for_cohort(cohort(5, 5), path, n_folds=5)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["folds"][1]["validation_patients"].append(data["folds"][0]["validation_patients"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="is in folds 0 and 1"):
        load_folds(path)
    path.write_text("[")
    with pytest.raises(InputError, match="cannot be read"):
        load_folds(path)


def test_default_folds_path(tmp_path):
    table = tmp_path / "cohort.csv"
    table.write_text("")
    assert default_folds_path(table) == tmp_path / "folds.json"
    assert default_folds_path(tmp_path) == tmp_path / "folds.json"


@pytest.mark.parametrize("cases, n_folds, message", [
    (cohort(6, 0), 2, "only 'recurrence' patients"),
    (cohort(2, 1), 5, "3 patient\\(s\\), fewer than the 5 folds"),
    (cohort(10, 3), 5, "3 'rice' patient\\(s\\) for 5 folds.*at most 3 folds"),
    (cohort(3, 3), 1, "at least 2 folds"),
    ([Case("X", None, {})] + cohort(3, 3), 2, "X have no label"),
])
def test_bad_cohorts_are_refused(cases, n_folds, message):
    with pytest.raises(InputError, match=message):
        check_cohort(cases, n_folds)


def test_macro_f1_and_friends():
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 0.8) / 2)
    assert macro_f1([0, 0, 0], [0, 0, 0]) == 1.0  # absent and never predicted class: nothing wrong
    assert macro_f1([0, 1], [0, 0]) == pytest.approx((2 / 3 + 0) / 2)
    metrics = classification_metrics([0, 1, 1, 0], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6]], loss=0.5)
    assert metrics["accuracy"] == 0.5 and metrics["balanced_accuracy"] == 0.5
    assert metrics["auc"] == pytest.approx(0.75) and metrics["loss"] == 0.5
    summary = mean_sd([0.7, 0.8, 0.9, float("nan")])
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(0.8) and summary["sd"] == pytest.approx(0.1)
    assert format_mean_sd(summary) == "0.80 ± 0.10"
    assert format_mean_sd(mean_sd([0.5])) == "0.50" and format_mean_sd(mean_sd([])) == "—"
