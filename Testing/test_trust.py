"""The verdict says how far to trust it: cross-validation figures, calibration, conformal set; bundle fields."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest
import torch

from RICENetLib.bundle import BUNDLE_FILE, BundleFold, describe_bundle, load_bundle, sign_bundle, write_bundle
from RICENetLib.calibration import calibration_from_out_of_fold
from RICENetLib.errors import BundleError
from RICENetLib.model import build_network
from RICENetLib.report import html_report, prediction_verdict
from RICENetLib.trust import assess, model_validation, table_rows, validation_line
from training_data import loader, make_cohort, one_thread, tiny_architecture  # noqa: F401 (fixture)

CLASSES = ("recurrence", "rice")


def _prediction(**extra) -> dict:
    data = {"label": "recurrence", "agreement": "5/5", "probabilities": {"recurrence": 0.8, "rice": 0.2},
            "votes": {"recurrence": 5, "rice": 0}, "folds": [], "bundle_id": "b"}
    data.update(extra)
    return data


def _validation(auc: float | None) -> dict:
    return {"macro_f1": {"mean": 0.5, "sd": 0.1, "n": 5}, "auc": {"mean": auc, "sd": 0.1, "n": 5}, "n_folds": 5,
            "n_validation_patients": 80, "min_separating_auc": 0.7,
            "separates_classes": auc is not None and auc >= 0.7}


def _set(classes, available=True) -> dict:
    return {"coverage": 0.9, "available": available, "classes": classes,
            "n_calibration_per_class": {"recurrence": 5, "rice": 3}, "needed_per_class": 9}


def test_a_model_that_cannot_separate_the_classes_says_so_first():
    verdict = prediction_verdict(_prediction(model_validation=_validation(0.38)))
    assert verdict == "Model cannot separate the classes (cross-validation AUC 0.38) — Recurrence — 5 of 5 folds, mean p = 0.80"
    assert prediction_verdict(_prediction(model_validation=_validation(0.85))) == "Recurrence — 5 of 5 folds, mean p = 0.80"
    assert prediction_verdict(_prediction(model_validation=_validation(None))).startswith("Model not validated")
    page = html_report(_prediction(model_validation=_validation(0.38)))
    assert "id=separation" in page and "How far to trust this" in page and "0.38 ± 0.10" in page
    assert "id=separation" not in html_report(_prediction(model_validation=_validation(0.9)))
    assert "AUC under 0.7: the model cannot separate" in validation_line(_prediction(model_validation=_validation(0.38)))


def test_verdict_with_calibration_and_prediction_sets():
    base = dict(model_validation=_validation(0.9), calibrated_probability={"recurrence": 0.66, "rice": 0.34})
    assert prediction_verdict(_prediction(**base, prediction_set=_set(["recurrence"]))) == \
        "Recurrence — 5 of 5 folds, mean p = 0.80, calibrated p = 0.66 (90 % set: recurrence only)"
    assert prediction_verdict(_prediction(**base, prediction_set=_set(["recurrence", "rice"]))).startswith(
        "Uncertain: the 90 % set holds both classes — Recurrence — 5 of 5 folds")
    assert "(90 % set empty" in prediction_verdict(_prediction(**base, prediction_set=_set([])))
    missing = prediction_verdict(_prediction(**base, prediction_set=_set(None, available=False)))
    assert missing.endswith("(90 % set not available: needs 9 validation patients per class, has recurrence 5, rice 3)")
    both = prediction_verdict(_prediction(model_validation=_validation(0.4), prediction_set=_set(["recurrence", "rice"])))
    assert both.startswith("Model cannot separate the classes (cross-validation AUC 0.40) — Uncertain: ")
    rows = table_rows(_prediction(**base, calibration={"temperature": 1.5}, prediction_set=_set(["rice"])), CLASSES)
    assert [r[0] for r in rows] == ["calibrated", "cross-validation", "90 % set"]
    assert rows[0][1] == [0.66, 0.34] and rows[2][1] == [0.0, 1.0] and rows[2][2] == "rice"


def _oof(n_per_fold: int, folds: int = 2) -> tuple[list[BundleFold], list[dict]]:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    weights = build_network(tiny_architecture()).state_dict()  # one network for every fold: this is about the header
    entries, out = [], []
    for k in range(folds):
        ids = [f"F{k}P{i:02d}" for i in range(n_per_fold)]
        entries.append(BundleFold(k, (), tuple(ids), {"macro_f1": 0.8, "auc": 0.9},
                                  state_dict=weights))
        for number, patient in enumerate(ids):
            label = CLASSES[number % 2]
            p = float(np.clip(rng.normal(0.75 if label == "rice" else 0.25, 0.2), 0.01, 0.99))
            out.append({"patient_id": patient, "label": label, "p": {"recurrence": 1 - p, "rice": p}, "fold": k})
    return entries, out


def _write(path, folds, oof, calibration="fit"):
    if calibration == "fit":
        calibration = calibration_from_out_of_fold(oof, CLASSES)
    return write_bundle(path, folds, modalities=("postop", "event", "dose"), architecture=tiny_architecture(),
                        input_size=(32, 32, 32), preprocessing={"spacing_mm": 6.0, "skull_strip": "none"}, seed=0,
                        out_of_fold=oof, calibration=calibration)


def test_bundle_round_trip_of_out_of_fold_and_calibration_and_the_seal(tmp_path):
    folds, oof = _oof(12)
    path = _write(tmp_path / "b", folds, oof)
    bundle = load_bundle(path)
    assert bundle.metadata["out_of_fold"] == oof
    assert bundle.metadata["calibration"]["n_patients"] == 24 and bundle.metadata["calibration"]["temperature"] > 0
    assert any(line.startswith("calibration   temperature ") for line in describe_bundle(bundle))
    trust = assess(bundle.metadata, {"recurrence": 0.9, "rice": 0.1})
    assert trust["model_validation"]["auc"]["mean"] == pytest.approx(0.9)
    assert trust["model_validation"]["n_validation_patients"] == 24
    assert trust["prediction_set"]["available"] and "recurrence" in trust["prediction_set"]["classes"]
    assert sum(trust["calibrated_probability"].values()) == pytest.approx(1.0)
    strict = assess(bundle.metadata, {"recurrence": 0.9, "rice": 0.1}, coverage=0.95)["prediction_set"]
    assert not strict["available"] and "95 % set needs at least 19 calibration patients per class" in strict["reason"]

    header = json.loads((path / BUNDLE_FILE).read_text(encoding="utf-8"))
    header["calibration"]["temperature"] = 0.2  # sharper: a more confident model than was fitted
    (path / BUNDLE_FILE).write_text(json.dumps(header), encoding="utf-8")
    with pytest.raises(BundleError, match="was changed after the bundle was written"):
        load_bundle(path)
    sign_bundle(path)  # a deliberate edit, re-sealed on purpose, loads
    assert load_bundle(path).metadata["calibration"]["temperature"] == 0.2


@pytest.mark.parametrize("change, message", [
    (lambda oof, cal: oof[0].update(fold=1), "fold 1 did not validate this patient"),
    (lambda oof, cal: oof[1].update(patient_id=oof[0]["patient_id"]), "appears twice"),
    (lambda oof, cal: oof[0].update(label="tumour"), "label 'tumour' is not one of"),
    (lambda oof, cal: oof[0]["p"].update(rice=0.9), "summing to 1"),
    (lambda oof, cal: cal.update(temperature=-1.0), "temperature must be a positive number"),
    (lambda oof, cal: cal.update(n_patients=3), "fitted on 3 patients but 'out_of_fold' holds 24"),
    (lambda oof, cal: cal.update(ece_after=float("nan")), "'ece_after' must be a number in"),
])
def test_bundle_refuses_out_of_fold_data_that_do_not_mean_what_they_say(tmp_path, change, message):
    folds, oof = _oof(12)
    calibration = calibration_from_out_of_fold(oof, CLASSES)
    change(oof, calibration)
    with pytest.raises(BundleError, match=message):
        _write(tmp_path / "bad", folds, oof, calibration)
    assert not (tmp_path / "bad").exists()


def test_model_validation_of_a_bundle_without_auc():
    validation = model_validation({"folds": [{"metrics": {"macro_f1": 0.4}, "validation_patients": ["a", "b"]}]})
    assert validation["auc"]["mean"] is None and validation["separates_classes"] is False
    assert validation["n_validation_patients"] == 2 and validation["macro_f1"]["mean"] == 0.4


def test_trained_bundle_gives_prediction_json_with_validation_calibration_and_set(trained_tiny_bundle, tmp_path,
                                                                                   capsys):
    """A tiny ensemble trained in memory (20 patients: enough to apply the calibration and a 90 % set), then
    `ricenet predict` a synthetic case with it."""
    from RICENetLib.cli import main
    from RICENetLib.synthetic import generate_case, write_case

    cases, _ = make_cohort(10, 10)  # the cohort the fixture trained on
    bundle = load_bundle(trained_tiny_bundle)
    metadata = bundle.metadata
    oof = metadata["out_of_fold"]
    assert sorted(e["patient_id"] for e in oof) == sorted(c.patient_id for c in cases)  # each patient once
    for entry in oof:
        fold = next(f for f in bundle.folds if f.index == entry["fold"])
        assert entry["patient_id"] in fold.validation_patients
    assert metadata["calibration"]["n_patients"] == 20
    paths = write_case(generate_case("P1", "rice", seed=2, size=48), tmp_path / "case")
    code = main(["predict", "--bundle", str(trained_tiny_bundle), "--postop", str(paths["postop"]), "--event",
                 str(paths["event"]), "--dose", str(paths["dose"]), "--out", str(tmp_path / "out"), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    data = json.loads((tmp_path / "out" / "prediction.json").read_text(encoding="utf-8"))
    assert data["model_validation"]["n_validation_patients"] == 20 and data["model_validation"]["n_folds"] == 2
    assert set(data["calibrated_probability"]) == set(CLASSES) and data["calibration"]["applied"] is True
    assert data["prediction_set"]["available"] is True and set(data["prediction_set"]["classes"]) <= set(CLASSES)
    assert "% set" in data["verdict"] and "calibrated p = " in data["verdict"]
    assert data["verdict"] in printed and "model validation (2 folds, 20 validation patients)" in printed
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "How far to trust this" in page
    # A synthetic head is another anatomy to a bundle trained on noise and cubes: the OOD gate fails, everywhere.
    gate = next(g for g in data["quality"]["gates"] if g["name"] == "out_of_distribution")
    assert gate["state"] == "fail" and gate["value"] == 100.0, gate
    assert "Not reliable: " in data["verdict"] and "unlike the training cohort" in data["verdict"]
    assert "[fail] out_of_distribution:" in printed and html.escape(gate["message"].split(":")[0]) in page


def test_a_temperature_from_too_few_patients_is_not_applied():
    _, oof = _oof(3)  # 6 patients
    metadata = {"class_names": list(CLASSES), "folds": [], "out_of_fold": oof,
                "calibration": calibration_from_out_of_fold(oof, CLASSES)}
    trust = assess(metadata, {"recurrence": 0.52, "rice": 0.48})
    assert trust["calibrated_probability"] is None and trust["calibration"]["applied"] is False
    assert "fitted on 6 out-of-fold patients; at least 20 are needed" in trust["calibration"]["reason"]
    assert "calibrated p" not in prediction_verdict(_prediction(**trust))
    assert "no calibration: the temperature was fitted on 6" in validation_line(_prediction(**trust))


def test_calibration_without_out_of_fold_is_refused(tmp_path):
    folds, oof = _oof(12)
    with pytest.raises(BundleError, match="'calibration' without 'out_of_fold'"):
        write_bundle(tmp_path / "b", folds, modalities=("postop", "event", "dose"), architecture=tiny_architecture(),
                     input_size=(32, 32, 32), preprocessing={"spacing_mm": 6.0, "skull_strip": "none"}, seed=0,
                     calibration=calibration_from_out_of_fold(oof, CLASSES))


def test_a_coverage_outside_0_and_1_is_refused_by_the_cli(tmp_path, capsys):
    from RICENetLib.cli import main

    folds, oof = _oof(12)
    path = _write(tmp_path / "b", folds, oof)
    code = main(["predict", "--bundle", str(path), "--postop", "a", "--event", "b", "--dose", "c", "--out",
                 str(tmp_path / "out"), "--coverage", "90"])
    error = capsys.readouterr().err
    assert code == 2 and "--coverage: coverage must be between 0 and 1 (e.g. 0.9 for 90 %), got 90.0" in error
    assert "Traceback" not in error and not (tmp_path / "out").exists()


def test_calibration_figures_reach_the_cli_and_the_training_module(trained_tiny_bundle, capsys):
    """ECE and Brier before → after in `ricenet info BUNDLE`; the reliability diagram as a PNG and as a chart."""
    import types

    import slicer

    from RICENetLib.cli import main
    from RICENetTrainingLib.slicer_logic import TrainingLogic

    calibration = load_bundle(trained_tiny_bundle).metadata["calibration"]
    assert main(["info", str(trained_tiny_bundle)]) == 0
    printed = capsys.readouterr().out
    assert f"ECE {calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}" in printed
    assert f"Brier {calibration['brier_before']:.3f} → {calibration['brier_after']:.3f}" in printed
    assert "applied to every verdict" in printed and "features      features.safetensors" in printed
    assert (trained_tiny_bundle / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scene = slicer.vtkMRMLScene()
    chart = TrainingLogic(scene).show_reliability(types.SimpleNamespace(bundle=trained_tiny_bundle))
    names = [scene.GetNodeByID(chart.GetNthPlotSeriesNodeID(i)).GetName() for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert names[1].startswith("raw: ECE ") and names[2].startswith(f"calibrated (T = {calibration['temperature']:.2f})")
