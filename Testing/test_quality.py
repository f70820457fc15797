"""Quality gates (RICENetLib.quality) on a normal synthetic case and on faulty ones, with real registration.

The normal case goes through the whole preprocessing (SimpleITK registration,
deepbet on both MRIs when installed); each fault is measured with the gate's
own function: the registration composed with a 30 mm shift, a pelvis-like
body given as the event MRI (registered for real: it "converges"), and a dose
grid cropped to the upper half of the head.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib import quality
from RICENetLib.errors import InputError
from RICENetLib.preprocessing import PreprocessParameters, PreprocessResult, preprocess_case
from RICENetLib.quality import Gate, QualityReport
from RICENetLib.registration import register_rigid
from RICENetLib.report import html_report, prediction_verdict
from RICENetLib.skull_strip import backend_status
from RICENetLib.synthetic import non_head_volume

pytestmark = pytest.mark.skipif(backend_status()["deepbet"] is not None,
                                reason="the brain-overlap gate needs a real skull stripper (deepbet)")
PARAMS = PreprocessParameters(spacing_mm=4.0, input_size=48, skull_strip="deepbet")


@pytest.fixture(scope="module")
def normal(small_case) -> PreprocessResult:
    return preprocess_case(small_case.postop, small_case.event, small_case.dose, PARAMS, case_id="T001")


@pytest.fixture(scope="module")
def masks(normal, small_case) -> dict[str, sitk.Image]:
    """The post-op brain mask (model grid: a box of the isotropic grid holding the whole brain) and the event's own."""
    event_mask, why = quality.event_brain_mask(small_case.event, PARAMS.spacing_mm, PARAMS.skull_strip)
    assert event_mask is not None, why
    return {"reference": normal.model_image(normal.brain_mask), "event": event_mask}


def _shifted(transform: sitk.Transform, shift_mm: float) -> sitk.Transform:
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(transform)
    composite.AddTransform(sitk.TranslationTransform(3, (shift_mm, 0.0, 0.0)))
    return composite


def test_a_normal_case_passes_every_gate_and_keeps_them_on_disk(normal, tmp_path):
    report = QualityReport.from_dict(normal.info["quality"])
    assert [g.name for g in report.gates] == list(quality.PREPROCESSING_GATES)
    assert report.worst == "pass", report.summary()
    assert report.gate("registration_overlap").value >= 0.95  # measured 0.978 (benchmarks/quality_gates.py)
    assert report.gate("dose_coverage").value > 0.99
    assert report.gate("dose_maximum").value == pytest.approx(normal.info["dose"]["input_max_gy"] / 60.0)
    assert report.verdict_prefix() == ""
    # A saved (or cached) result keeps its gates.
    loaded = PreprocessResult.load(normal.save(tmp_path / "pre"))
    assert loaded.info["quality"] == json.loads(json.dumps(normal.info["quality"]))


def test_a_registration_30_mm_off_fails_the_overlap_gate(normal, masks):
    good = quality.brain_overlap(masks["reference"], masks["event"], normal.event_to_reference)
    off = quality.brain_overlap(masks["reference"], masks["event"], _shifted(normal.event_to_reference, 30.0))
    assert good >= 0.95 and quality.registration_overlap_gate(good).state == "pass"
    gate = quality.registration_overlap_gate(off)
    assert off < quality.OVERLAP_FAIL - 0.05 and gate.state == "fail"  # measured 0.69-0.70
    assert "registration failed" in QualityReport((gate,)).verdict_prefix()


@pytest.mark.parametrize("scale, state", [(1.10, "warn"), (1.20, "fail")])
def test_another_persons_event_brain_trips_the_overlap_gate(normal, masks, scale, state):
    """Another person's brain, modelled as this one 10 % or 20 % larger (adult brains differ by that much; one
    template is all the synthetic generator has). A rigid registration cannot undo size, as it cannot undo another
    person's shape: the best rigid pose (this case's) composed with the scale about the brain's centre.
    Measured Dice: 1.08 → 0.89, 1.12 → 0.83, 1.15 → 0.80, 1.20 → 0.74."""
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(sitk.Cast(masks["event"], sitk.sitkUInt8))
    larger = sitk.ScaleTransform(3, (1.0 / scale,) * 3)  # reference points → event points of a larger brain
    larger.SetCenter(shape.GetCentroid(1))
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(normal.event_to_reference)
    composite.AddTransform(larger)
    overlap = quality.brain_overlap(masks["reference"], masks["event"], composite)
    assert quality.registration_overlap_gate(overlap).state == state, overlap


def test_a_non_head_event_mri_registers_but_fails_the_gates(small_case, masks):
    body = non_head_volume(small_case.event, seed=5)
    registration = register_rigid(small_case.postop, body, PARAMS.registration)  # the pipeline's check accepts it
    assert registration.converged
    body_mask, why = quality.event_brain_mask(body, PARAMS.spacing_mm, PARAMS.skull_strip)
    overlap = quality.brain_overlap(masks["reference"], body_mask, registration.transform)
    assert quality.registration_overlap_gate(overlap, why if body_mask is None else "").state == "fail"
    assert quality.registration_metric_gate(registration.metric).state == "warn"  # measured -0.18 (normal: -1.0)


def test_a_dose_grid_missing_half_the_brain_fails_the_coverage_gate(small_case, masks):
    dose = small_case.dose
    size = list(dose.GetSize())
    upper = sitk.RegionOfInterest(dose, [size[0], size[1], size[2] - size[2] // 2], [0, 0, size[2] // 2])
    assert quality.dose_coverage(dose, masks["reference"]) > 0.99
    fraction = quality.dose_coverage(upper, masks["reference"])
    assert 0.3 < fraction < quality.COVERAGE_FAIL - 0.1  # measured 0.56-0.62
    gate = quality.dose_coverage_gate(fraction)
    assert gate.state == "fail" and f"{100 * fraction:.0f} %" in gate.message


# --------------------------------------------------------------------------- the gates as data


@pytest.mark.parametrize("value, state", [(0.98, "pass"), (0.85, "warn"), (0.5, "fail")])
def test_overlap_thresholds(value, state):
    assert quality.registration_overlap_gate(value).state == state


@pytest.mark.parametrize("max_gy, state", [(62.0, "pass"), (42.0, "warn"), (2.0, "fail"), (150.0, "fail")])
def test_dose_maximum_against_the_prescription(max_gy, state):
    gate = quality.dose_maximum_gate(max_gy, 60.0)
    assert gate.state == state and gate.value == pytest.approx(max_gy / 60.0)


def test_report_round_trip_verdict_and_html():
    report = QualityReport((quality.registration_overlap_gate(0.41), quality.brain_volume_gate(1300.0),
                            quality.dose_maximum_gate(41.0, 60.0)))
    assert report.worst == "fail"
    assert QualityReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    prediction = {"label": "recurrence", "probabilities": {"recurrence": 0.8, "rice": 0.2}, "agreement": "5/5",
                  "votes": {"recurrence": 5, "rice": 0}, "folds": [], "quality": report.to_dict()}
    verdict = prediction_verdict(prediction)
    assert verdict == "Not reliable: registration failed (brain overlap 0.41). Recurrence — 5 of 5 folds, mean p = 0.80"
    page = html_report(prediction)
    assert 'id="quality"' in page and "gate-fail" in page and "gate-warn" in page and "gate-pass" in page
    assert quality.csv_columns(report)["quality"] == "fail"
    assert quality.csv_columns(report)["quality_dose_maximum"] == "warn"
    assert quality.csv_columns(report)["quality_dose_coverage"] == ""  # not measured in this report
    without = dict(prediction, quality=None)
    assert prediction_verdict(without).startswith("Recurrence") and "Not computed" in html_report(without)
    with pytest.raises(InputError, match="unknown state"):
        Gate("x", "maybe", 1.0, "", "", "")
    with pytest.raises(InputError, match="list of gates"):
        QualityReport.from_dict({"worst": "pass"})


def test_percentiles_read_as_english_ordinals():
    from RICENetLib.quality import ordinal

    assert [ordinal(v) for v in (1, 2, 3, 4, 11, 12, 13, 21, 22, 61.6, 100, 111, 0)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "62nd", "100th", "111th", "0th"]
