"""Benchmark: occlusion sensitivity, incremental engine against brute force and MONAI (issue 7).

    python benchmarks/occlusion.py                 # CPU: FLOPs, 96³ vs MONAI (ROI), presets, 224³ estimate
    python benchmarks/occlusion.py --quick         # smaller samples, a couple of minutes
    python benchmarks/occlusion.py --device cuda   # GPU: also runs the full 224³ five-fold map
    python benchmarks/occlusion.py --full96        # 96³ comparison over the whole grid (MONAI: ~30 min on 2 cores)

Prints
1. FLOPs per occluded box of a 224³, mask-16, stride-8 map, counted while the
   incremental engine runs its real batches on the meta device (shapes only, no
   arithmetic) by the engine's FLOP tally -- checked equal to
   ``torch.utils.flop_counter`` on a batch -- against one full forward pass of
   the same network counted by ``FlopCounterMode`` (target: >= 30x fewer). All
   batches by default (each distinct batch shape run once), 32 random batches
   with ``--quick`` or on a GPU;
2. wall clock of MONAI's ``OcclusionSensitivity`` and of our engine(s) at 96³ on
   the same network, input and settings (mask 16, overlap 0.5 = stride 8), maps
   compared in the same run (target: >= 10x faster). By default over the ROI
   [0, 48)³ (MONAI's ``b_box``; 216 boxes, border and interior ones like the
   whole grid) so that MONAI finishes in minutes; ``--quick``: [0, 24)³, 27 boxes.
   On CUDA twice: in strict float32 (``precision="float32"``), where the maps
   must agree as on the CPU, then with TF32 convolutions (the default there),
   with our engine also in float16, every map measured against MONAI's strict one;
3. forward passes (boxes) of each preset at 224³, and what the incremental
   engine costs for it in forward-pass equivalents;
4. the time of a full 224³ five-fold map at the "standard" preset, estimated
   from the unoccluded pass and a random sample of boxes (printed as an
   ESTIMATE), also with the other Winograd settings and on CUDA in other
   layouts, batches and precisions (float16, strict float32); on CUDA (or with
   ``--profile``) a profile of a few batches by stage and by operator; then, on CUDA or with
   ``--full``, measured: all five folds if the estimate fits ``--budget-s``
   (default 300 s on CUDA), else one fold; on CUDA also in float16 if its
   estimate fits;
5. (not with ``--quick``, not on a GPU) how many boxes of a preprocessed synthetic case are
   skipped because they change no voxel (background), per fill mode.

Network: MONAI resnet18, 3 channels, 2 classes, conv1_t_stride=1 (the
project's), random weights with random BatchNorm statistics (eval mode);
input: Gaussian noise, so no box can be skipped as unchanged.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from RICENetLib.incremental_occlusion import compile_network, default_winograd_channels
from RICENetLib.occlusion_precision import compute_dtype, precision_context, resolve_precision
from RICENetLib.occlusion import (
    OCCLUSION_PRESETS,
    OcclusionSettings,
    _Incremental,
    box_grid,
    count_boxes,
    default_batch_size,
    occlusion_sensitivity,
)


def network(seed: int, device: torch.device) -> torch.nn.Module:
    from monai.networks.nets import resnet18

    torch.manual_seed(seed)
    model = resnet18(spatial_dims=3, n_input_channels=3, num_classes=2)
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval().to(device)


def winograd_name(channels: int) -> str:
    return "Winograd off" if channels == 0 else f"Winograd >= {channels}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def real_batches(order_of, grid, batch: int, sample_batches: int | None, seed: int) -> list[np.ndarray]:
    """The batches a full run would evaluate (boxes sorted by window sizes), or a random few of them."""
    starts = grid.starts
    order = order_of(starts, starts + np.asarray(grid.mask))
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    if sample_batches is not None and sample_batches < len(batches):
        picked = np.random.default_rng(seed).choice(len(batches), sample_batches, replace=False)
        batches = [batches[i] for i in sorted(picked)]
    return batches


def flops_per_box(size: int, settings: OcclusionSettings, batch: int, sample_batches: int | None) -> None:
    model = network(0, torch.device("cpu"))
    with FlopCounterMode(display=False) as full, torch.inference_mode():
        copy.deepcopy(model).to("meta")(torch.zeros(1, 3, size, size, size, device="meta"))
    forward = full.get_total_flops()
    per_box, counted, shapes = incremental_flops(size, settings, batch, sample_batches, model)
    total = count_boxes((size,) * 3, settings)
    what = "all" if counted == total else f"{counted} (random batches of the run) of the"
    print(f"[1] FLOPs at {size}^3, mask {settings.mask_size}, stride {settings.stride} ({what} {total} boxes, "
          f"batches of {batch}; counted on the meta device by the engine's FLOP tally, which equals "
          f"torch.utils.flop_counter's count, once per distinct batch shape ({shapes}) x its occurrences):")
    print(f"    full forward pass (MONAI resnet18, FlopCounterMode): {forward / 1e12:.3f} TFLOP")
    print(f"    incremental, per occluded box:      {per_box / 1e9:.1f} GFLOP  -> {forward / per_box:.1f}x fewer "
          f"(target >= 30x)")
    print(f"    + once per model, the unoccluded pass that fills the cache: {forward / 1e12:.3f} TFLOP")
    stages = interior_box_by_stage(size, settings, model)
    print(f"    one interior box, by stage: " + ", ".join(f"{name} {flops / 1e9:.1f}" for name, flops in stages.items())
          + f" GFLOP (total {sum(stages.values()) / 1e9:.1f}): the deep layers' windows cover most of their maps")


def interior_box_by_stage(size: int, settings: OcclusionSettings, model: torch.nn.Module) -> dict[str, float]:
    """FLOPs of one box in the middle of the image, per ResNet stage (named by output channels, resnet18)."""
    runner = _Incremental(compile_network(model).to("meta", torch.float32),
                          torch.zeros(3, size, size, size, device="meta")).runner
    names = {64: "layer1", 128: "layer2", 256: "layer3", 512: "layer4"}
    stages: dict[str, float] = {}
    count = runner.tally.conv

    def by_stage(weight: torch.Tensor, out: torch.Tensor) -> None:
        name = "stem" if weight.shape[1] == 3 else names.get(weight.shape[0], "other")
        stages[name] = stages.get(name, 0.0) + 2 * out.numel() * int(np.prod(weight.shape[1:]))
        count(weight, out)

    runner.tally.conv = by_stage
    mask = np.asarray(box_grid((size,) * 3, settings).mask)
    start = np.full((1, 3), size // 2) - mask // 2
    runner.logits(start, torch.zeros(1, 3, *mask, device="meta"), start, start + mask)
    return stages


def compare_96(device: torch.device, batch: int, roi_stop: int | None, with_brute: bool, winograd: int | None,
               note: str = "", precision: str | None = None,
               reference: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, float]:
    """Returns MONAI's map (the drop of the target probability) and the unoccluded probability,
    for ``reference`` of a later call.

    ``precision``: ours and MONAI's (None: the device's default, TF32 on CUDA); on CUDA in TF32 our
    engine also runs in float16; ``reference``: a strict float32 run's (map, probability) to measure
    against. The unoccluded probability hints at how the GPU's TF32 rounds: in the CPU emulation
    (``benchmarks/occlusion_precision.py``) truncating shifted a random resnet18's by 1.5e-3,
    rounding to nearest by 2.2e-5.
    """
    from monai.visualize import OcclusionSensitivity

    size = 96
    model = network(1, device)
    x = torch.randn(3, size, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    roi = None if roi_stop is None else ((0, roi_stop),) * 3
    settings = OcclusionSettings(mask_size=16, overlap=0.5, mode="gaussian", roi=roi, batch_size=batch,
                                 winograd_channels=winograd)
    boxes = count_boxes(x.shape[1:], settings)
    where = "whole image" if roi is None else f"ROI {roi[0]} per axis (MONAI b_box)"
    print(f"[2] 96^3, mask 16, overlap 0.5 (stride 8), gaussian fill, {where}: {boxes} boxes, batch {batch}, "
          f"device {device}, {torch.get_num_threads()} threads{note}")

    occlusion = OcclusionSensitivity(model, mask_size=16, n_batch=batch, verbose=False, mode="gaussian",
                                     overlap=0.5, activate=lambda out: out.softmax(1))
    b_box = None if roi is None else [v for pair in roi for v in pair]
    precision = resolve_precision(precision, device)
    sync(device)
    began = time.perf_counter()
    with warnings.catch_warnings(), precision_context(precision, device):
        warnings.simplefilter("ignore")
        occluded, _ = occlusion(x[None], b_box=b_box)
    sync(device)
    monai_seconds = time.perf_counter() - began

    # the engine as configured, then the other Winograd settings: off, from 256, from 512 channels
    runs = {"incremental": {"engine": "incremental", "precision": precision}}
    chosen = default_winograd_channels(device) if winograd is None else winograd
    runs.update({winograd_name(c): {"engine": "incremental", "winograd_channels": c, "precision": precision}
                 for c in (0, 256, 512) if c != chosen})
    if device.type == "cuda" and precision == "tf32":
        runs["float16"] = {"engine": "incremental", "winograd_channels": 0, "precision": "float16"}
    if with_brute:
        runs["brute"] = {"engine": "brute", "precision": precision}
    results = {}
    for name, change in runs.items():
        sync(device)
        began = time.perf_counter()
        results[name] = occlusion_sensitivity([model], x, OcclusionSettings(**{**settings.to_dict(), **change}))
        sync(device)
        results[name].seconds = time.perf_counter() - began
    target = results["incremental"].target_class
    with torch.inference_mode(), precision_context(precision, device):
        p0 = model(x[None]).softmax(1)[0, target]
    theirs = (p0 - torch.as_tensor(occluded)[0, target]).cpu().numpy()  # MONAI's map, over its b_box
    inside = tuple(slice(None) for _ in range(3)) if roi is None else tuple(slice(a, b) for a, b in roi)
    fast = results["incremental"]
    against = "" if reference is None else (f"; against MONAI's strict float32 map "
                                             f"{float(np.abs(theirs - reference[0]).max()):.1e}, unoccluded "
                                             f"p {float(p0):.6f} against {reference[1]:.6f}")
    print(f"    MONAI OcclusionSensitivity ({precision}): {monai_seconds:8.1f} s{against}")
    for name, result in results.items():
        gap = float(np.abs(result.sensitivity[inside] - theirs).max())
        if reference is not None:
            gap_strict = float(np.abs(result.sensitivity[inside] - reference[0]).max())
            gap_text = f"max |map - MONAI's| = {gap:.1e}, - MONAI's float32 map: {gap_strict:.1e}"
        else:
            gap_text = f"max |map - MONAI's| = {gap:.1e}"
        print(f"    ours, {name:15s} ({result.precision}): {result.seconds:8.1f} s   {gap_text} "
              f"(map range {float(np.abs(theirs).max()):.1e}); {monai_seconds / result.seconds:.1f}x MONAI's speed")
    versus_brute = (f"; over our brute force: {results['brute'].seconds / fast.seconds:.1f}x" if with_brute else "")
    print(f"    speed-up of the incremental engine ({f'Winograd from {chosen} channels' if chosen else 'Winograd off'}) "
          f"over MONAI: {monai_seconds / fast.seconds:.1f}x (target >= 10x){versus_brute}")
    full, per_box = flops_over_boxes(size, settings)
    print(f"    exact saving over these boxes (meta device): {per_box / 1e9:.1f} GFLOP per box against "
          f"{full / 1e9:.1f} for a full pass, {full / per_box:.2f}x fewer FLOPs")
    return theirs, float(p0)


def flops_over_boxes(size: int, settings: OcclusionSettings) -> tuple[float, float]:
    """(full pass, mean incremental FLOPs per box) over the grid's boxes, each run alone (no batch padding)."""
    model = network(1, torch.device("cpu"))
    with FlopCounterMode(display=False) as full, torch.inference_mode():
        copy.deepcopy(model).to("meta")(torch.zeros(1, 3, size, size, size, device="meta"))
    runner = _Incremental(compile_network(model).to("meta", torch.float32),
                          torch.zeros(3, size, size, size, device="meta")).runner
    grid = box_grid((size,) * 3, settings)
    mask = np.asarray(grid.mask)
    before = runner.tally.flops
    for start in grid.starts:
        runner.logits(start[None], torch.zeros(1, 3, *mask, device="meta"), start[None], start[None] + mask)
    return full.get_total_flops(), (runner.tally.flops - before) / grid.count


def incremental_flops(size: int, settings: OcclusionSettings, batch: int, sample_batches: int | None,
                      model: torch.nn.Module) -> tuple[float, int, int]:
    """(FLOPs per box, boxes counted, distinct batch shapes) of the engine's real batches, on the meta device."""
    x = torch.zeros(3, size, size, size, device="meta")
    evaluator = _Incremental(compile_network(model).to("meta", torch.float32), x)  # what a real run uses
    runner = evaluator.runner
    grid = box_grid(x.shape[1:], settings)
    mask = np.asarray(grid.mask)
    batches = real_batches(evaluator.order, grid, batch, sample_batches, 0)
    # A batch's FLOPs depend only on its size and its window extents per layer: run each
    # distinct (size, extents) once and weight it by how often it occurs.
    shapes: dict[tuple, list] = {}
    for part in batches:
        starts = grid.starts[part]
        extents = tuple(tuple(runner._window(interval, limit)[0])
                        for interval, limit in zip(runner.geometry.intervals(starts, starts + mask)[1:],
                                                   runner.geometry.sizes[1:]))
        shapes.setdefault((len(part), extents), [part, 0])[1] += 1
    total = 0
    for part, times in shapes.values():
        starts = grid.starts[part]
        before = runner.tally.flops
        evaluator.logits(starts, torch.zeros(len(part), 3, *grid.mask, device="meta"), starts, starts + mask)
        total += (runner.tally.flops - before) * times
    # the engine's own tally agrees with torch's FLOP counter (checked on one batch)
    part = batches[len(batches) // 2]
    starts = grid.starts[part]
    before = runner.tally.flops
    with FlopCounterMode(display=False) as check:
        evaluator.logits(starts, torch.zeros(len(part), 3, *grid.mask, device="meta"), starts, starts + mask)
    assert check.get_total_flops() == runner.tally.flops - before, "tally and FlopCounterMode disagree"
    counted = sum(len(part) for part in batches)
    return total / counted, counted, len(shapes)


def presets(size: int, batch: int, quick: bool) -> None:
    model = network(0, torch.device("cpu"))
    with FlopCounterMode(display=False) as full, torch.inference_mode():
        copy.deepcopy(model).to("meta")(torch.zeros(1, 3, size, size, size, device="meta"))
    forward = full.get_total_flops()
    print(f"[3] presets at {size}^3: boxes = forward passes per model for brute force (x5 five folds, x4 with "
          "per-modality maps); the incremental engine's cost in forward-pass equivalents (FLOPs, sampled batches):")
    for name, settings in OCCLUSION_PRESETS.items():
        boxes = count_boxes((size,) * 3, settings)
        per_box, _, _ = incremental_flops(size, settings, batch, 8 if quick else 32, model)
        print(f"    {name:9s} mask {settings.mask_size}, stride {settings.stride}: {boxes:6d} per model "
              f"({5 * boxes} five folds, {20 * boxes} with per-modality maps); incremental: "
              f"{per_box / 1e9:.0f} GFLOP per box = {boxes * per_box / forward + 1:.0f} forward-pass "
              f"equivalents per model, cache pass included")


def background_boxes(size: int) -> None:
    """How many 'standard' boxes of a preprocessed synthetic case change nothing (skipped exactly)."""
    from RICENetLib.occlusion import _changed_box, _Fill
    from RICENetLib.preprocessing import PreprocessParameters, preprocess_case
    from RICENetLib.synthetic import generate_case

    try:
        case = generate_case("B001", "recurrence", seed=3, spacing_mm=1.0)
        prepared = preprocess_case(case.postop, case.event, case.dose, PreprocessParameters(input_size=size))
    except Exception as error:  # another module's problem must not hide this benchmark's figures
        print(f"[5] skipped: could not preprocess a synthetic case ({error})")
        return
    x = torch.from_numpy(np.stack([prepared.arrays[m] for m in ("postop", "event", "dose")]))
    print(f"[5] a preprocessed synthetic case at {size}^3 (MRIs zero outside the brain; dose as planned): "
          "boxes that change no voxel are skipped exactly")
    for mode in ("gaussian", 0.0, "mean_img"):
        settings = OcclusionSettings(**{**OCCLUSION_PRESETS["standard"].to_dict(), "mode": mode})
        grid = box_grid(x.shape[1:], settings)
        fill = _Fill(x, grid.mask, mode, None)
        live = 0
        for first in range(0, grid.count, 512):
            starts = grid.starts[first:first + 512]
            lo, hi = _changed_box(*fill.occlude(starts), starts)
            live += int((lo < hi).all(axis=1).sum())
        print(f"    fill {mode!s:9s}: {grid.count - live} of {grid.count} boxes skipped "
              f"({100 * (grid.count - live) / grid.count:.0f}%)")


def estimate_per_box(device: torch.device, x: torch.Tensor, grid, batch: int, sample: int,
                     channels_last: bool | None = None, winograd: int | None = None,
                     precision: str | None = None) -> tuple[float, float, int]:
    """(unoccluded pass + cache seconds, seconds per box, boxes timed) from random batches of the real run.

    ``channels_last``, ``winograd``, ``precision``: the engine's layout, Winograd and precision
    switches (None: its defaults).
    """
    precision = resolve_precision(precision, device)
    with precision_context(precision, device):
        return _estimate_per_box(device, x.to(compute_dtype(precision, x.dtype)), grid, batch, sample,
                                 channels_last, winograd)


def _estimate_per_box(device: torch.device, x: torch.Tensor, grid, batch: int, sample: int,
                      channels_last: bool | None, winograd: int | None) -> tuple[float, float, int]:
    sync(device)
    began = time.perf_counter()
    evaluator = _Incremental(compile_network(network(10, device)).to(device, x.dtype), x, channels_last, winograd)
    sync(device)
    cache_seconds = time.perf_counter() - began
    batches = real_batches(evaluator.order, grid, batch, max(sample // batch, 1), 1)
    run_batches(evaluator, grid, batches[:1] if device.type == "cpu" else batches)  # warm-up (GPU: each shape once)
    sync(device)
    began = time.perf_counter()
    run_batches(evaluator, grid, batches)
    sync(device)
    timed = sum(len(part) for part in batches)
    return cache_seconds, (time.perf_counter() - began) / timed, timed


def run_batches(evaluator: _Incremental, grid, batches: list[np.ndarray]) -> None:
    """Evaluate boxes of the grid, batch by batch, with the same random box contents (what is timed)."""
    dtype, device = evaluator.runner.net.stem.weight.dtype, evaluator.runner.net.stem.weight.device
    largest = max(len(part) for part in batches)
    patches = torch.randn(largest, 3, *grid.mask, generator=torch.Generator().manual_seed(3)).to(device, dtype)
    mask = np.asarray(grid.mask)
    for part in batches:
        starts = grid.starts[part]
        evaluator.logits(starts, patches[:len(part)], starts, starts + mask)


def full_224(device: torch.device, batch: int, measure: bool, sample: int, budget_s: float | None,
             winograd: int | None, folds: int = 5, profile: bool = False) -> None:
    """Estimate the 224³ five-fold 'standard' map from a sample of boxes; then, if asked, measure what fits.

    The estimate comes first so that a GPU lease, whose time is short, never
    starts a run that cannot finish: all folds are measured when the estimate
    fits ``budget_s``, else one fold (and the five-fold time is that times five,
    printed as such), else nothing. The estimate is also printed with the
    other Winograd settings (off, from 256, from 512 channels), and on CUDA
    for the NCDHW layout, for half and double the batch, and in float16 and in
    strict float32 (the default there is TF32); on CUDA the float16 map is
    measured too when its estimate fits the budget.
    """
    size = 224
    settings = OCCLUSION_PRESETS["standard"]
    grid = box_grid((size,) * 3, settings)
    x = torch.randn(3, size, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    print(f"[4] full {size}^3 {folds}-fold map, 'standard' preset ({grid.count} boxes per model), {device}, "
          f"{torch.get_num_threads()} threads:")
    variants = [("engine default", batch, None, winograd, None)]
    chosen = default_winograd_channels(device) if winograd is None else winograd
    variants += [(winograd_name(c), batch, None, c, None) for c in (0, 256, 512) if c != chosen]
    if device.type == "cuda":
        variants += [("NCDHW layout", batch, False, winograd, None),
                     (f"batch {batch // 2}", batch // 2, None, winograd, None),
                     (f"batch {2 * batch}", 2 * batch, None, winograd, None),
                     ("float16", batch, None, 0, "float16"), ("float32 strict", batch, None, winograd, "float32")]
    estimates, cache_seconds = {}, {}
    for name, size_of_batch, layout, channels, precision in variants:
        cache_seconds[name], per_box, timed = estimate_per_box(device, x, grid, size_of_batch, sample, layout,
                                                               channels, precision)
        estimates[name] = total = folds * (cache_seconds[name] + grid.count * per_box)
        print(f"    {name:17s}: unoccluded pass + cache {cache_seconds[name]:.2f} s per model; {per_box * 1e3:.2f} ms per box "
              f"({timed} boxes: random batches of the real run, batch {size_of_batch}) -> ESTIMATE {total:.0f} s "
              f"= {total / 3600:.2f} h for {folds} folds")
    total = estimates["engine default"]
    per_model = total / folds
    # brute force pays one forward pass per box: on a CPU about the unoccluded pass, on a GPU timed warm
    forward = cache_seconds["engine default"] if device.type == "cpu" else estimate_forward(device, x)
    print(f"    brute force ESTIMATE: {folds * grid.count * forward / 3600:.1f} h "
          f"({folds * grid.count} forward passes of {forward:.3f} s)")
    if profile or device.type == "cuda":
        try:
            profile_ops(device, x, grid, batch, winograd)
        except Exception as error:  # a profiler problem must not cost the lease its measured map
            print(f"    profile failed: {type(error).__name__}: {error}")
    if not measure:
        return
    budget = float("inf") if budget_s is None else budget_s
    run_folds = folds if total <= budget else 1 if per_model <= budget else 0
    if not run_folds:
        print(f"    not measured: even one fold ({per_model:.0f} s estimated) exceeds the budget of {budget:.0f} s")
        return
    measure_map(device, x, settings, batch, winograd, None, "engine default", run_folds, folds, total, budget)
    if device.type == "cuda" and estimates["float16"] <= budget:
        measure_map(device, x, settings, batch, 0, "float16", "float16", folds, folds, estimates["float16"], budget)


def profile_ops(device: torch.device, x: torch.Tensor, grid, batch: int, winograd: int | None,
                batches: int = 4) -> None:
    """Where a batch's time goes, by operator (torch.profiler over a few warm batches of the real run):
    which kernels the next optimisation should aim at."""
    from torch.profiler import ProfilerActivity, profile

    precision = resolve_precision(None, device)
    with precision_context(precision, device):
        evaluator = _Incremental(compile_network(network(10, device)).to(device, torch.float32), x, None, winograd)
        parts = real_batches(evaluator.order, grid, batch, batches, 5)
        run_batches(evaluator, grid, parts)  # warm-up: each shape once
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as trace:
            run_batches(evaluator, grid, parts)
            sync(device)
    events = trace.key_averages()
    boxes = sum(len(part) for part in parts)
    print(f"    profile of {len(parts)} batches of {batch} ({precision}), by stage (the engine's record_function "
          f"labels), per box: CPU ms (launching, on a GPU) / device ms")
    def network_order(event) -> tuple[int, int]:  # stem, block 0, 1, ..., pool + head
        words = event.key.split()
        return (1, int(words[3])) if words[2] == "block" else (0 if words[2] == "stem" else 2, 0)

    for event in sorted((e for e in events if e.key.startswith("occlusion stage:")), key=network_order):
        on_device = getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0)
        print(f"      {event.key[len('occlusion stage: '):]:28s} {event.cpu_time_total / 1e3 / boxes:8.3f} "
              f"{on_device / 1e3 / boxes:8.3f}")
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"    operators by {key}:")
    print("\n".join("      " + line for line in events.table(sort_by=key, row_limit=14).splitlines()))


def measure_map(device: torch.device, x: torch.Tensor, settings: OcclusionSettings, batch: int, winograd: int | None,
                precision: str | None, name: str, run_folds: int, folds: int, estimate: float, budget: float) -> None:
    """Time the map `ricenet predict` computes, with ``run_folds`` of the benchmark's random models."""
    models = [network(10 + f, device) for f in range(run_folds)]
    sync(device)
    began = time.perf_counter()
    # what `ricenet predict` runs, at the benchmark's batch (by default the engine's own)
    result = occlusion_sensitivity(models, x, OcclusionSettings(**{**settings.to_dict(), "batch_size": batch,
                                                                   "winograd_channels": winograd,
                                                                   "precision": precision}))
    sync(device)
    seconds = time.perf_counter() - began
    what = f"{result.engine}, {result.precision}; {result.forward_passes} box evaluations; batch {batch}"
    if run_folds == folds:
        print(f"    MEASURED ({name}): {seconds:.1f} s for the {folds}-fold map ({what})")
    else:
        print(f"    MEASURED ({name}): {seconds:.1f} s for ONE fold ({what}); {folds} folds at that rate: "
              f"{folds * seconds:.0f} s (the estimate of {estimate:.0f} s exceeded the budget of {budget:.0f} s)")


def estimate_forward(device: torch.device, x: torch.Tensor) -> float:
    """Seconds of one plain forward pass (what brute force pays per box)."""
    model = network(10, device)
    with torch.inference_mode():
        model(x[None])
        sync(device)
        began = time.perf_counter()
        model(x[None])
        sync(device)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small samples: a couple of minutes on 2 cores")
    parser.add_argument("--skip-full", action="store_true", help="estimate the 224^3 five-fold time from a sample")
    parser.add_argument("--full", action="store_true", help="run the 224^3 five-fold map even on a CPU (hours)")
    parser.add_argument("--full96", action="store_true", help="compare with MONAI over the whole 96^3 grid")
    parser.add_argument("--with-brute", action="store_true", help="also time our brute-force engine at 96^3 "
                        "(always with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="boxes per batch (default: the engine's, 8 on CPU, 64 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--winograd-channels", type=int, default=None, metavar="C",
                        help="[2], [4]: Winograd's algorithm for 3x3x3 convolutions of >= C channels (0: off; "
                        "default: the engine's choice for the device)")
    parser.add_argument("--profile", action="store_true",
                        help="[4]: time by stage and by operator over a few batches (always on CUDA)")
    parser.add_argument("--timings-only", action="store_true",
                        help="skip [1] and [3], FLOP counts that do not depend on the device (saves a GPU lease's time)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="[4]: measure five folds only if the estimate fits this many seconds, else one fold "
                        "(default: 300 on CUDA, unlimited with --full)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch or default_batch_size(device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", {torch.get_num_threads()} CPU threads")
    # [1], [3] and [5] do not depend on the device and are CPU-bound: on a GPU machine, whose
    # time is short, they take their quick form (sampled batches; [5] left out).
    thorough = not args.quick and device.type == "cpu"
    if not args.timings_only:
        flops_per_box(224, OCCLUSION_PRESETS["standard"], batch, None if thorough else 32)
    roi_stop = None if args.full96 else (24 if args.quick else 48)
    if device.type == "cuda":  # strict float32 first: the reference the faster precisions are measured against
        strict = compare_96(device, batch, roi_stop, False, args.winograd_channels, ", TF32 off (strict float32)",
                            precision="float32")
        compare_96(device, batch, roi_stop, args.quick or args.with_brute, args.winograd_channels,
                   ", TF32 convolutions (torch's default on CUDA)", precision="tf32", reference=strict)
    else:
        compare_96(device, batch, roi_stop, args.quick or args.with_brute, args.winograd_channels)
    if not args.timings_only:
        presets(224, batch, not thorough)
    measure = not args.skip_full and (device.type != "cpu" or args.full)
    budget = args.budget_s if args.budget_s is not None else (300.0 if device.type == "cuda" else None)
    full_224(device, batch, measure, 8 if args.quick else (256 if device.type == "cuda" else 32), budget,
             args.winograd_channels, profile=args.profile)
    if thorough:
        background_boxes(224)


if __name__ == "__main__":
    main()
