"""The quality gates reach every output of ``ricenet predict``: prediction.json, verdict, CLI, report, CSV.

The untrained bundle uses skull stripping ``none`` on synthetic heads that keep
their skull, so the "brain" is the whole field of view: the brain-volume gate
fails, as it should, and the verdict says "Not reliable" first.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from RICENetLib import quality
from RICENetLib.cli import main
from RICENetLib.cohort import Case, write_cohort_csv
from RICENetLib.slicer_logic import untrained_bundle
from RICENetLib.synthetic import generate_case, write_case


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return untrained_bundle(tmp_path_factory.mktemp("bundle") / "tiny", n_folds=2, input_size=32, spacing_mm=6.0)


@pytest.fixture(scope="module")
def case_paths(tmp_path_factory) -> dict[str, Path]:
    return write_case(generate_case("Q1", "rice", seed=2, size=48), tmp_path_factory.mktemp("case") / "Q1")


def test_predict_records_and_shows_the_gates(tiny_bundle, case_paths, tmp_path, capsys):
    out = tmp_path / "result"
    paths = ["--postop", str(case_paths["postop"]), "--event", str(case_paths["event"]), "--dose", str(case_paths["dose"])]
    assert main(["predict", "--bundle", str(tiny_bundle), *paths, "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    prediction = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
    record = prediction["quality"]
    assert [g["name"] for g in record["gates"]] == list(quality.GATE_NAMES)
    volume = next(g for g in record["gates"] if g["name"] == "brain_volume")
    assert volume["state"] == "fail" and volume["unit"] == "ml" and volume["value"] > quality.BRAIN_ML_FAIL[1]
    assert record["worst"] == "fail"
    unknown = next(g for g in record["gates"] if g["name"] == "out_of_distribution")  # an untrained bundle has no features
    assert unknown["state"] == "warn" and unknown["value"] is None and unknown["message"].startswith("Not available")
    # The untrained bundle's own warning first, then the failed gates.
    assert prediction["verdict"].startswith("Model not validated (no cross-validation AUC) — "
                                            "Not reliable: not a brain (brain volume ")
    assert prediction["verdict"] in printed and "quality: fail" in printed and "[fail] brain_volume:" in printed
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="quality"' in page and "gate-fail" in page and volume["message"].split(",")[0] in page


def test_cohort_table_has_a_column_per_gate(tiny_bundle, case_paths, tmp_path):
    cohort = write_cohort_csv(tmp_path / "cohort.csv", [Case("Q1", "rice", case_paths)])
    assert main(["predict", "--bundle", str(tiny_bundle), "--cohort", str(cohort), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv", encoding="utf-8")))
    assert rows[0]["quality"] == "fail" and rows[0]["quality_brain_volume"] == "fail"
    assert all(rows[0][f"quality_{name}"] in quality.STATES for name in quality.GATE_NAMES)
