"""Ensemble arithmetic and the report: vote, agreement, ties, verdict line, HTML."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.errors import InputError
from RICENetLib.inference import combine_folds, resolve_occlusion, select_device
from RICENetLib.occlusion import OCCLUSION_PRESETS
from RICENetLib.report import html_report, overview_figure, prediction_verdict

CLASSES = ("recurrence", "rice")


def test_majority_vote_and_agreement():
    probabilities = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.55, 0.45]])
    result = combine_folds(probabilities, CLASSES, [0, 1, 2, 3, 4])
    assert result["label"] == "recurrence"
    assert result["votes"] == {"recurrence": 4, "rice": 1}
    assert result["agreement"] == "4/5"
    assert result["probabilities"]["recurrence"] == pytest.approx(probabilities[:, 0].mean())
    assert result["spread"]["rice"] == pytest.approx(probabilities[:, 1].std())
    assert [f.label for f in result["folds"]] == ["recurrence", "recurrence", "rice", "recurrence", "recurrence"]


def test_vote_beats_mean_probability():
    """Three confident-enough RICE folds outvote two very confident recurrence folds."""
    probabilities = np.array([[0.99, 0.01], [0.99, 0.01], [0.4, 0.6], [0.45, 0.55], [0.45, 0.55]])
    result = combine_folds(probabilities, CLASSES, range(5))
    assert result["label"] == "rice" and result["agreement"] == "3/5"
    assert result["probabilities"]["recurrence"] > 0.5


def test_tie_goes_to_higher_mean_probability():
    result = combine_folds(np.array([[0.9, 0.1], [0.4, 0.6]]), CLASSES, [0, 1])
    assert result["label"] == "recurrence" and result["agreement"] == "1/2"


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(InputError, match="Unknown device"):
        select_device("tpu-please")


def _prediction():
    result = combine_folds(np.array([[0.8, 0.2], [0.9, 0.1], [0.7, 0.3], [0.3, 0.7], [0.75, 0.25]]), CLASSES, range(5))
    return {**result, "folds": [{"fold": f.fold, "probabilities": f.probabilities, "label": f.label} for f in result["folds"]],
            "bundle_id": "ricenet-test", "timings_s": {"total": 1.5}}


def test_occlusion_presets_and_their_changes():
    assert resolve_occlusion(None) is None and resolve_occlusion("quick") == OCCLUSION_PRESETS["quick"]
    changed = resolve_occlusion("standard", mask_size=8, stride=None)  # None keeps the preset's stride
    assert (changed.mask_size, changed.stride) == (8, OCCLUSION_PRESETS["standard"].stride)
    assert OCCLUSION_PRESETS["standard"].mask_size == 16  # the preset itself is left alone
    with pytest.raises(InputError, match="Unknown occlusion preset 'huge'"):
        resolve_occlusion("huge")
    with pytest.raises(InputError, match="mask_size given without an occlusion preset"):
        resolve_occlusion(None, mask_size=8)


def test_verdict_line():
    assert prediction_verdict(_prediction()) == "Recurrence — 4 of 5 folds, mean p = 0.69"


def test_html_report_is_self_contained():
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((20, 24, 28)).astype(np.float32) * 100)
    heat = sitk.GetImageFromArray(np.zeros((20, 24, 28), np.float32))
    heat[10, 12, 14] = 1.0
    dose = sitk.GetImageFromArray(np.linspace(0, 65, 20 * 24 * 28, dtype=np.float32).reshape(20, 24, 28))
    png = overview_figure(image, image, heat, dose, title="test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = html_report(_prediction(), png, {"postop": "a <b>.nii.gz"})
    assert "data:image/png;base64," in page and "Recurrence — 4 of 5 folds" in page
    assert "a &lt;b&gt;.nii.gz" in page, "inputs are escaped"
    assert "http://" not in page and "https://" not in page, "no external resources"


def test_a_fold_with_a_non_finite_output_is_an_error_naming_the_fold():
    """A NaN fold is not a vote: no verdict 'Recurrence — 2 of 2 folds, mean p = nan'."""
    from RICENetLib.errors import BundleError

    probabilities = np.array([[0.9, 0.1], [np.nan, np.nan], [0.8, 0.2], [np.inf, 0.0]])
    with pytest.raises(BundleError, match=r"Model bundle b/: folds 3, 5 gave a non-finite output"):
        combine_folds(probabilities, CLASSES, [0, 3, 4, 5], source="Model bundle b/")


def test_an_overflowing_network_is_refused_not_counted():
    """Finite but extreme weights: the real network's logits overflow to inf, softmax gives NaN."""
    import torch

    from RICENetLib.errors import BundleError
    from RICENetLib.inference import fold_probabilities
    from RICENetLib.model import build_network, default_architecture

    torch.manual_seed(0)
    models = [build_network(dict(default_architecture(3), widen_factor=0.125)).eval() for _ in range(2)]
    with torch.no_grad():
        models[1].fc.weight.abs_().mul_(1e38)  # both logits +inf: softmax of inf - inf
    probabilities = fold_probabilities(models, torch.randn(3, 16, 16, 16), torch.device("cpu"))
    assert np.isfinite(probabilities[0]).all() and not np.isfinite(probabilities[1]).all()
    with pytest.raises(BundleError, match="fold 1 gave a non-finite output"):
        combine_folds(probabilities, CLASSES, [0, 1])
