"""The arithmetic of an occlusion map: strict float32, TF32 and float16 (issue 7).

float16 runs for real on the CPU (slower there, but the same rounding as on a
GPU); TF32 exists only on CUDA, so on this machine its setting is checked for
what it switches, not for its numbers (those are in
``benchmarks/occlusion_precision.py``, which emulates it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from RICENetLib.errors import InputError
from RICENetLib.incremental_occlusion import IncrementalRunner, compile_network
from RICENetLib.occlusion import OcclusionSettings, occlusion_sensitivity
from RICENetLib.occlusion_precision import default_precision, precision_context, resolve_precision

from test_occlusion import image, one_thread, small_resnet  # noqa: F401 - the fixture applies here too


def test_float16_map_is_close_to_float32_but_really_half_precision():
    model, x = small_resnet(seed=4), image(size=16, seed=4)  # small: half precision is slow on most CPUs
    settings = dict(mask_size=6, stride=5)
    exact = occlusion_sensitivity([model], x, OcclusionSettings(**settings, engine="brute", precision="float32"))
    assert exact.precision == "float32" and np.abs(exact.sensitivity).max() > 1e-3
    for engine in ("incremental", "brute"):
        half = occlusion_sensitivity([model], x, OcclusionSettings(**settings, engine=engine, precision="float16"))
        assert half.engine == engine and half.precision == "float16"
        gap = np.abs(half.sensitivity - exact.sensitivity).max()
        # half precision is visible (so it really ran) and small against the map
        assert 1e-7 < gap <= 2e-3, (engine, gap)
        assert half.to_dict()["precision"] == "float16"
    assert next(model.parameters()).dtype == torch.float32, "the model is left in float32"


def test_float16_engine_keeps_half_maps_and_a_float32_head():
    model, x = small_resnet(seed=5), image(size=16, seed=5)
    runner = IncrementalRunner(compile_network(model), x.half())
    assert runner.net.stem.weight.dtype == torch.float16
    assert all(conv.winograd is None for block in runner.net.blocks for conv in block.main), "no Winograd in float16"
    assert runner.net.fc_weight.dtype == torch.float32 and runner.base_logits.dtype == torch.float32
    with torch.no_grad():
        reference = model(x[None])[0]
    assert torch.allclose(runner.base_logits, reference, atol=5e-3, rtol=0)


def test_float16_overflow_is_a_clear_error():
    model, x = small_resnet(seed=6), image(size=16, seed=6)
    with torch.no_grad():
        model.conv1.weight.mul_(1e5)  # activations far past float16's 65,504
    with pytest.raises(InputError, match="non-finite outputs in float16 precision.*tf32"):
        occlusion_sensitivity([model], x, OcclusionSettings(mask_size=6, stride=5, precision="float16"))
    occlusion_sensitivity([model], x, OcclusionSettings(mask_size=6, stride=5, precision="float32"))  # fine in float32


def test_precision_settings_validate_and_round_trip():
    settings = OcclusionSettings(precision="float16", winograd_channels=0)
    assert OcclusionSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    with pytest.raises(InputError, match="precision 'double' is unknown"):
        OcclusionSettings(precision="double").validate()
    with pytest.raises(InputError, match="winograd_channels must be 0"):
        OcclusionSettings(precision="float16", winograd_channels=256).validate()
    assert default_precision("cuda") == "tf32" and default_precision("cpu") == "float32"
    assert resolve_precision("tf32", "cuda:0") == "tf32" and resolve_precision("tf32", "cpu") == "float32"
    assert resolve_precision("float16", "cpu") == "float16" and resolve_precision(None, "cuda") == "tf32"
    for asked in (None, "tf32"):  # a CPU has no TF32: the result says what it computed in
        settings = OcclusionSettings(mask_size=8, stride=8, precision=asked)
        assert occlusion_sensitivity([small_resnet()], image(size=16), settings).precision == "float32"


@pytest.mark.parametrize("precision, allowed", [("float32", False), ("tf32", True)])
def test_cuda_tf32_switches_are_set_for_the_map_and_restored(precision, allowed):
    """The flags are plain process settings, so this runs without a GPU."""
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = (not allowed, not allowed)
    try:
        with precision_context(precision, "cuda"):
            assert torch.backends.cudnn.allow_tf32 is allowed
            assert torch.backends.cuda.matmul.allow_tf32 is False  # the head and Winograd's products: strict
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (not allowed, not allowed)
        with pytest.raises(RuntimeError):
            with precision_context(precision, "cuda"):
                raise RuntimeError("a failing map")
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (not allowed, not allowed)
        with precision_context(precision, "cpu"):  # nothing to switch off CUDA
            assert torch.backends.cudnn.allow_tf32 is (not allowed)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_tf32_emulation_of_the_precision_benchmark():
    """benchmarks/occlusion_precision.py's figures rest on this rounding: 10 mantissa bits, as a tensor core keeps."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import occlusion_precision as bench
    finally:
        sys.path.pop(0)
    import RICENetLib.incremental_occlusion as engine

    ulp = 2.0 ** -10  # TF32's spacing just above 1
    x = torch.tensor([1.0, 1 + ulp / 2, 1 + 3 * ulp / 4, 1 + 3 * ulp / 2, -(1 + 3 * ulp / 4), 3.0e-3])
    nearest, truncated = bench.to_tf32(x, "nearest"), bench.to_tf32(x, "truncate")
    assert nearest[:5].tolist() == [1.0, 1.0, 1 + ulp, 1 + 2 * ulp, -(1 + ulp)]  # ties to even
    assert truncated[:5].tolist() == [1.0, 1.0, 1.0, 1 + ulp, -1.0]
    for y in (nearest, truncated):  # 13 low bits cleared, within TF32's relative precision
        assert ((y.view(torch.int32) & 0x1FFF) == 0).all()
        assert torch.allclose(y, x, rtol=2.0 ** -10, atol=0)
    real = engine.F
    with bench.tf32_convolutions("nearest"):
        assert engine.F is not real and engine.F.relu is torch.nn.functional.relu
    assert engine.F is real


def test_cli_offers_exactly_the_engine_precisions():
    """The CLI spells the choices out (importing torch for `ricenet --help` would be slow): kept in step here."""
    import argparse

    from RICENetLib.commands import predict
    from RICENetLib.occlusion_precision import PRECISIONS

    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    option = next(a for a in parser._actions if "--occlusion-precision" in a.option_strings)
    assert tuple(option.choices) == PRECISIONS
