"""Benchmark: how far an occlusion map in TF32 or float16 lands from the float32 map (issue 7).

On a GPU the map's time is its convolutions, and the fast ones are not strict
float32: cuDNN's default for float32 is TF32 (operands rounded to 10 mantissa
bits), and float16 rounds to the same 10 bits and also stores the activations
in them. This prints, for every box of a mask-16, stride-8 map, the largest
difference in the target-class probability against the float32 engine, and
the largest difference in a box's drop of it (a map voxel averages the drops of the
boxes over it, so the maps differ by no more), for

* ``float16``: the incremental engine in half precision (``precision="float16"``), run for real;
* ``tf32 (nearest)`` / ``tf32 (truncate)``: float32 with every convolution's
  input and weight rounded to TF32 first (to nearest even, or by dropping the
  13 low bits; which of the two a GPU's tensor cores do is up to its kernels),
  the products summed in float32: TF32 as a tensor core computes it, emulated on the CPU.

The issue's bound for the exact engine is 1e-4 in probability.

    python benchmarks/occlusion_precision.py                      # a random resnet18 (the timing benchmark's)
    python benchmarks/occlusion_precision.py --bundle B --models 2  # also B's first two fold models
    python benchmarks/occlusion_precision.py --bundle B --no-random --seeds 1 2 3

The images: synthetic cases (``generate_case``, one per seed) preprocessed with
the bundle's parameters (without a bundle: 64³ at 1.5 mm around the dose, no
skull strip). The differences are largest where the probability is neither 0
nor 1. On 2 cores each network takes a few minutes per case at 64³.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import types
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

import RICENetLib.incremental_occlusion as engine_module
from RICENetLib.bundle import load_bundle
from RICENetLib.occlusion import OcclusionSettings, _changed_box, _Fill, _Incremental, box_grid
from RICENetLib.incremental_occlusion import compile_network
from RICENetLib.preprocessing import PreprocessParameters, preprocess_case
from RICENetLib.synthetic import generate_case

from occlusion import network as random_network


def to_tf32(t: torch.Tensor, rounding: str) -> torch.Tensor:
    """float32 with the 13 low mantissa bits cleared: rounded to nearest even, or truncated."""
    bits = t.contiguous().view(torch.int32)
    if rounding == "nearest":
        bits = bits + 0xFFF + ((bits >> 13) & 1)
    return (bits & -8192).view(torch.float32)


@contextlib.contextmanager
def tf32_convolutions(rounding: str) -> Iterator[None]:
    """The incremental engine's convolutions with TF32 operands (its module's ``F``, swapped back after)."""
    shim = types.SimpleNamespace(**{name: getattr(F, name) for name in dir(F) if not name.startswith("__")})
    shim.conv3d = lambda x, w, *args, **kwargs: F.conv3d(to_tf32(x, rounding), to_tf32(w, rounding), *args, **kwargs)
    engine_module.F = shim
    try:
        yield
    finally:
        engine_module.F = F


def box_probabilities(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, target: int | None,
                      settings: OcclusionSettings) -> tuple[float, np.ndarray, int]:
    """(unoccluded probability, per-box probabilities, target class) of the incremental engine in ``dtype``;
    boxes that change nothing get the unoccluded probability, as in a map."""
    evaluator = _Incremental(compile_network(model), x.to(dtype), winograd_channels=0)
    base = evaluator.base_logits.double().softmax(-1)
    target = int(base.argmax()) if target is None else target
    grid = box_grid(x.shape[1:], settings)
    fill = _Fill(x, grid.mask, settings.mode, None)
    p = np.full(grid.count, float(base[target]))
    for first in range(0, grid.count, 8):
        starts = grid.starts[first:first + 8]
        original, patches = fill.occlude(starts)
        lo, hi = _changed_box(original, patches, starts)
        live = np.flatnonzero((lo < hi).all(axis=1))
        if len(live):
            logits = evaluator.logits(starts[live], patches[live], lo[live], hi[live])
            p[first + live] = logits.double().softmax(-1)[:, target].numpy()
    return float(base[target]), p, target


def synthetic_image(parameters: PreprocessParameters, seed: int, modalities: tuple[str, ...]) -> torch.Tensor:
    case = generate_case(f"Q{seed:03d}", ("recurrence", "rice")[seed % 2], seed=seed, spacing_mm=1.25)
    prepared = preprocess_case(case.postop, case.event, case.dose, parameters)
    return torch.from_numpy(np.ascontiguousarray(prepared.stack(modalities))).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="a model bundle: its fold models and its preprocessing")
    parser.add_argument("--models", type=int, default=2, help="how many of the bundle's fold models (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the synthetic cases' seeds (default 0)")
    parser.add_argument("--no-random", action="store_true", help="leave out the random network")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models: dict[str, torch.nn.Module] = {} if args.no_random else {"random resnet18": random_network(0, torch.device("cpu"))}
    if args.bundle:
        bundle = load_bundle(args.bundle)
        parameters, modalities = PreprocessParameters.from_dict(bundle.preprocessing), bundle.modalities
        models.update({f"{bundle.id} fold {f.index}": m for f, m in zip(bundle.folds, bundle.models()[:args.models])})
    else:
        parameters = PreprocessParameters(input_size=64, spacing_mm=1.5, crop_centre="dose", skull_strip="none")
        modalities = ("postop", "event", "dose")
    settings = OcclusionSettings(mask_size=16, stride=8, mode="gaussian")
    print(f"torch {torch.__version__}; mask 16, stride 8, gaussian fill; differences against the float32 "
          "incremental engine (target class: float32's)")
    worst: dict[str, float] = {}
    for seed in args.seeds:
        x = synthetic_image(parameters, seed, modalities)
        print(f"synthetic case seed {seed}, {tuple(x.shape)}, {box_grid(x.shape[1:], settings).count} boxes")
        for name, model in models.items():
            compare(name, model, x, settings, worst)
    print("largest over all: " + "; ".join(f"{k} {v:.1e}" for k, v in worst.items()))


def compare(name: str, model: torch.nn.Module, x: torch.Tensor, settings: OcclusionSettings,
            worst: dict[str, float]) -> None:
    if model.conv1.in_channels != x.shape[0]:
        print(f"  {name}: skipped ({model.conv1.in_channels} input channels, the image has {x.shape[0]})")
        return
    variants = {"float16": (torch.float16, None), "tf32 (nearest)": (torch.float32, "nearest"),
                "tf32 (truncate)": (torch.float32, "truncate")}
    began = time.perf_counter()
    base, exact, target = box_probabilities(model, x, torch.float32, None, settings)
    drops = base - exact
    print(f"  {name}: p = {base:.4f} (class {target}); largest drop of a box {np.abs(drops).max():.2e}")
    for label, (dtype, rounding) in variants.items():
        with tf32_convolutions(rounding) if rounding else contextlib.nullcontext():
            b, p, _ = box_probabilities(model, x, dtype, target, settings)
        gap_p, gap_drop = float(np.abs(p - exact).max()), float(np.abs((b - p) - drops).max())
        for key, value in ((f"{label} p", gap_p), (f"{label} drop", gap_drop)):
            worst[key] = max(worst.get(key, 0.0), value)
        print(f"    {label:16s} max |p - p32| {gap_p:.1e} (unoccluded {abs(b - base):.1e}); "
              f"max |drop - drop32| {gap_drop:.1e}")
    print(f"    ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
