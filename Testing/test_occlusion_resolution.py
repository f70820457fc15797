"""Occlusion grids that cannot resolve the model's input warn and say which mask and stride would."""

from __future__ import annotations

import logging

import pytest

from RICENetLib.cli import main
from RICENetLib.occlusion import OCCLUSION_PRESETS, OcclusionSettings, box_grid
from RICENetLib.occlusion_resolution import boxes_per_axis, resolution_warning, settings_warning, suggested_grid
from RICENetLib.slicer_logic import untrained_bundle


@pytest.mark.parametrize("size, mask, stride", [(40, 32, 32), (40, 8, 4), (32, 32, 32), (224, 16, 8), (50, 7, 3),
                                                ((40, 48, 32), 16, None)])
def test_boxes_per_axis_counts_the_grid_that_occlusion_uses(size, mask, stride):
    shape = size if isinstance(size, tuple) else (size,) * 3
    grid = box_grid(shape, OcclusionSettings(mask_size=mask, stride=stride))
    counted = tuple(len(set(grid.starts[:, axis].tolist())) for axis in range(3))
    assert boxes_per_axis(shape, mask, stride) == counted


def test_quick_preset_on_a_40_voxel_input_warns_with_a_grid_that_resolves():
    quick = OCCLUSION_PRESETS["quick"]
    warning = settings_warning((40, 40, 40), quick)
    assert warning is not None and "2 × 2 × 2 boxes (8 in all)" in warning
    assert "--occlusion-mask 8 --occlusion-stride 4" in warning
    mask, stride = suggested_grid(40)
    assert resolution_warning(40, mask, stride) is None and min(boxes_per_axis(40, mask, stride)) >= 4
    assert settings_warning((224,) * 3, OCCLUSION_PRESETS["standard"]) is None
    assert settings_warning((224,) * 3, OCCLUSION_PRESETS["quick"]) is None  # 7 boxes per axis at 224³


def test_a_box_larger_than_a_quarter_of_the_input_warns_however_dense():
    assert min(boxes_per_axis(40, 12, 1)) == 29
    assert "--occlusion-mask 8" in resolution_warning(40, 12, 1)
    assert resolution_warning(40, 10, 2) is None
    assert settings_warning(40, {"mask_size": 16, "stride": None, "overlap": 0.5}) is not None  # stride 8: 4 boxes, 16 > 10


def test_predict_cli_warns_before_the_work(tmp_path, caplog):
    bundle = untrained_bundle(tmp_path / "bundle", n_folds=1, input_size=40)
    missing = [str(tmp_path / f"{name}.nii.gz") for name in ("postop", "event", "dose")]
    base = ["predict", "--bundle", str(bundle), "--postop", missing[0], "--event", missing[1], "--dose", missing[2]]
    with caplog.at_level(logging.WARNING):
        assert main(base + ["--out", str(tmp_path / "a"), "--occlusion", "quick"]) == 2  # the inputs do not exist
    warned = [r.getMessage() for r in caplog.records if "opaque blocks" in r.getMessage()]
    assert warned and warned[0].startswith("--occlusion quick: occlusion boxes of 32 voxels every 32 on this model's 40³")
