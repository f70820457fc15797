"""The modality ablation: seven ensembles on one set of folds, and the paper-shaped table."""

from __future__ import annotations

import csv
import json

import pytest

from RICENetLib.bundle import load_bundle
from RICENetLib.errors import InputError
from RICENetTrainingLib.ablation import COMBINATIONS, combination_name, parse_combinations, run_ablation
from RICENetTrainingLib.training import TrainingParameters
from training_data import loader, make_cohort, one_thread, tiny_architecture  # noqa: F401 (fixture)


@pytest.mark.usefixtures("one_thread")
def test_seven_combinations_on_the_same_folds(tmp_path):
    cases, arrays = make_cohort(2, 2, size=16)
    params = TrainingParameters(n_folds=2, epochs=1, batch_size=2, architecture=tiny_architecture(), augment=False)
    loads = []

    def counting_loader(case):
        loads.append(case.patient_id)
        return arrays[case.patient_id]

    epochs = []
    rows = run_ablation(cases, tmp_path, params, load=counting_loader,
                        on_epoch=lambda combo, fold, epoch, row: epochs.append(combo))
    assert len(loads) == 4  # the cohort is prepared once for all seven models
    assert [r.modalities for r in rows] == list(COMBINATIONS) and len(epochs) == 7 * 2
    folds = json.loads((tmp_path / "folds.json").read_text(encoding="utf-8"))["folds"]
    for row in rows:
        bundle = load_bundle(tmp_path / "+".join(row.modalities))
        assert bundle.modalities == row.modalities
        assert bundle.architecture["n_input_channels"] == len(row.modalities)
        assert [list(f.validation_patients) for f in bundle.folds] == [f["validation_patients"] for f in folds]

    with open(tmp_path / "ablation.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["input"] for r in table] == [
        "MRI post-OP only", "MRI event only", "RD map only", "MRI post-OP + MRI event",
        "MRI post-OP + RD map", "MRI event + RD map", "All three (RICE-NET)"]
    assert all(r["folds"] == "2" and len(r["fold_macro_f1"].split(";")) == 2 for r in table)
    markdown = (tmp_path / "ablation.md").read_text(encoding="utf-8")
    assert markdown.startswith("| Input modality | Validation macro F1 (mean ± sd over folds) |")
    assert markdown.count(" ± ") == 8 and "2-fold cross-validation on the same folds" in markdown

    # Resuming a finished ablation retrains nothing and gives the same table.
    again = run_ablation(cases, tmp_path, params, load=loader(arrays), resume=True,
                         on_epoch=lambda *args: pytest.fail("a finished fold was trained again"))
    assert [r.fold_f1 for r in again] == [r.fold_f1 for r in rows]
    with pytest.raises(InputError, match="already exists"):
        run_ablation(cases, tmp_path, params, load=loader(arrays), combinations=[("dose",)])


def test_combination_names_and_parsing():
    assert combination_name(("postop", "event", "dose")) == "All three (RICE-NET)"
    assert combination_name(("event", "dose")) == "MRI event + RD map"
    assert parse_combinations("all") == list(COMBINATIONS)
    assert parse_combinations("dose+event; postop") == [("event", "dose"), ("postop",)]
    with pytest.raises(InputError, match="Combination 't2'"):
        parse_combinations("t2")
