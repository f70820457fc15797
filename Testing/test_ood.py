"""The out-of-distribution gate (RICENetLib.ood): features sealed in the bundle, captured in the prediction's own pass.

The bundle is ``conftest.trained_tiny_bundle``: a tiny ensemble trained on
noise arrays holding a bright cube. New arrays from the same generator are
in distribution; arrays with other intensities and a pelvis-like body run
through the whole pipeline are not. ``test_trust`` checks that a synthetic
head (another anatomy to this bundle) fails the gate in every output.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from RICENetLib import ood, quality
from RICENetLib.bundle import BUNDLE_FILE, OOD_FILE, load_bundle
from RICENetLib.errors import BundleError
from training_data import make_cohort, one_thread  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def bundle(trained_tiny_bundle):
    loaded = load_bundle(trained_tiny_bundle)
    loaded.networks = loaded.models()  # built once for the module
    return loaded


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _gate(bundle, image: np.ndarray) -> quality.Gate:
    models = getattr(bundle, "networks", None) or bundle.models()
    with ood.capture_features(models) as features, torch.inference_mode():
        for model in models:
            model(torch.from_numpy(image)[None])
    return ood.assess(bundle, [f[0][0].numpy() for f in features])


def test_ledoit_wolf_is_scikit_learns_estimator():
    from sklearn.covariance import LedoitWolf

    x = np.random.default_rng(3).normal(size=(30, 50)) * np.linspace(0.5, 3.0, 50)
    location, precision, shrinkage = ood.ledoit_wolf(x)
    reference = LedoitWolf().fit(x)
    assert shrinkage == pytest.approx(reference.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(precision, reference.precision_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ood.mahalanobis(x[:3], location, precision) ** 2, reference.mahalanobis(x[:3]), rtol=1e-6)


def test_the_bundle_holds_every_patient_features_and_out_of_fold_distances(bundle):
    entry = bundle.metadata["out_of_distribution"]
    n_patients, dim = len(entry["patients"]), entry["feature_dim"]
    assert n_patients == 20 and dim == 64  # resnet18's 512 pooled features, eight times narrower
    assert tuple(bundle.ood_tensors["features"].shape) == (2, 20, 64)
    validated = {f.index: set(f.validation_patients) for f in bundle.folds}
    assert sorted(e["patient_id"] for e in entry["reference"]) == sorted(entry["patients"])
    assert all(e["patient_id"] in validated[e["fold"]] for e in entry["reference"])  # out of fold, each once
    # The reference distances are the validation patients' under their own fold's stored statistics.
    k, first = 0, next(e for e in entry["reference"] if e["fold"] == 0)
    row = bundle.ood_tensors["features"][k, entry["patients"].index(first["patient_id"])].double().numpy()
    distance = ood.mahalanobis(row, bundle.ood_tensors["location"][k].double().numpy(),
                               bundle.ood_tensors["precision"][k].double().numpy())[0]
    assert distance == pytest.approx(first["distance"], rel=1e-4)


def test_new_patients_of_the_training_distribution_pass(bundle):
    _, arrays = make_cohort(4, 4, seed=3)
    gates = [_gate(bundle, a) for a in arrays.values()]
    assert all(g.state != "fail" for g in gates), [g.message for g in gates]
    assert sum(g.state == "pass" for g in gates) >= 7, [g.message for g in gates]  # 1 in 20 may warn by design
    assert "within the training cohort" in next(g for g in gates if g.state == "pass").message


@pytest.mark.parametrize("change", ["brighter", "constant"])
def test_inputs_unlike_the_training_cohort_fail(bundle, change):
    _, arrays = make_cohort(1, 0, seed=4)
    image = next(iter(arrays.values()))
    image = image * 3.0 if change == "brighter" else np.full_like(image, 0.5)
    gate = _gate(bundle, image)
    assert gate.state == "fail" and gate.value == 100.0, gate.message
    assert f"fail > {ood.FAIL_Z:g} robust SD" in gate.threshold
    assert quality.QualityReport((gate,)).verdict_prefix().startswith("Not reliable: unlike the training cohort")


def test_a_pelvis_like_body_through_the_pipeline_fails_the_gate_from_the_same_forward_pass(trained_tiny_bundle,
                                                                                           monkeypatch):
    from RICENetLib import inference
    from RICENetLib.synthetic import generate_case, non_head_volume

    calls = []
    real = inference.fold_probabilities
    monkeypatch.setattr(inference, "fold_probabilities", lambda *a, **k: calls.append(1) or real(*a, **k))
    case = generate_case("B1", "rice", seed=2, size=32)
    body = non_head_volume(case.postop, seed=5)
    prediction = inference.predict_case(trained_tiny_bundle, body, body, case.dose, device="cpu")
    report = quality.report_of(prediction)
    assert [g.name for g in report.gates] == list(quality.GATE_NAMES)
    assert report.gate("out_of_distribution").state == "fail" and calls == [1]  # one pass, features hooked


def test_a_bundle_without_features_says_not_available(bundle):
    """As a bundle from before this gate (``test_quality_outputs`` runs one through ``ricenet predict``)."""
    old = copy.copy(bundle)
    old.metadata = {k: v for k, v in bundle.metadata.items() if k != "out_of_distribution"}
    old.ood_tensors = None
    gate = _gate(old, np.zeros((3, 32, 32, 32), np.float32))
    assert gate.state == "warn" and gate.value is None and gate.message.startswith("Not available: this bundle holds")
    assert gate.short() == "not measured"
    few = copy.copy(bundle)
    few.metadata = dict(bundle.metadata, out_of_distribution=dict(bundle.metadata["out_of_distribution"]))
    few.metadata["out_of_distribution"]["reference"] = bundle.metadata["out_of_distribution"]["reference"][:12]
    assert "holds 12 out-of-fold patients; at least 20" in _gate(few, np.zeros((3, 32, 32, 32), np.float32)).message


def test_features_are_sealed_in_the_bundle(trained_tiny_bundle, tmp_path):
    changed = shutil.copytree(trained_tiny_bundle, tmp_path / "features")
    data = bytearray((changed / OOD_FILE).read_bytes())
    data[-1] ^= 1
    (changed / OOD_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the SHA-256"):
        load_bundle(changed)
    (changed / OOD_FILE).unlink()
    with pytest.raises(BundleError, match="features .*are missing"):
        load_bundle(changed)
    edited = shutil.copytree(trained_tiny_bundle, tmp_path / "edited")
    header = json.loads((edited / BUNDLE_FILE).read_text(encoding="utf-8"))
    header["out_of_distribution"]["reference"][0]["distance"] = 0.0
    (edited / BUNDLE_FILE).write_text(json.dumps(header), encoding="utf-8")
    with pytest.raises(BundleError, match="was changed after the bundle was written"):
        load_bundle(edited)
