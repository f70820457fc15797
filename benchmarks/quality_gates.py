"""Benchmark: the quality gates' values on normal and faulty synthetic cases (the thresholds' evidence).

    python benchmarks/quality_gates.py                      # seeds 1-6, 64-voxel cases, 3 mm model grid
    python benchmarks/quality_gates.py --seeds 1 2 3 --size 48 --spacing 4

For each seed: the full preprocessing of a normal case (real registration and
skull stripping) and its gates; then the same case with faults, each measured
with the gate's own function: the registration composed with a 30 mm shift,
a non-head volume (a pelvis-like body) given as the event MRI (registered for
real), and the dose grid cropped to the upper half of the head. Prints one
line per case and the range over seeds, which :mod:`RICENetLib.quality`'s
threshold comment quotes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from RICENetLib.preprocessing import PreprocessParameters, preprocess_case
from RICENetLib.quality import brain_overlap, dose_coverage, event_brain_mask
from RICENetLib.registration import register_rigid
from RICENetLib.resampling import isotropic_geometry, resample_to
from RICENetLib.skull_strip import backend_status, skull_strip
from RICENetLib.synthetic import generate_case, non_head_volume


def _shifted(transform: sitk.Transform, shift_mm: float) -> sitk.Transform:
    """``transform`` after a ``shift_mm`` translation along x (reference points move first)."""
    shifted = sitk.CompositeTransform(3)
    shifted.AddTransform(transform)
    shifted.AddTransform(sitk.TranslationTransform(3, (shift_mm, 0.0, 0.0)))
    return shifted


def _upper_half(dose: sitk.Image) -> sitk.Image:
    size = list(dose.GetSize())
    half = size[2] // 2
    return sitk.RegionOfInterest(dose, [size[0], size[1], size[2] - half], [0, 0, half])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--spacing", type=float, default=3.0)
    args = parser.parse_args()
    backend = "deepbet" if backend_status()["deepbet"] is None else "none"
    params = PreprocessParameters(spacing_mm=args.spacing, input_size=96 if args.spacing < 2.5 else 64,
                                  skull_strip=backend)
    print(f"skull stripping: {backend}; model grid {args.spacing} mm; cases of {args.size} voxels")
    table: dict[str, list[float]] = {}
    for seed in args.seeds:
        label = "recurrence" if seed % 2 else "rice"
        case = generate_case(f"Q{seed}", label, seed=seed, size=args.size)
        started = time.perf_counter()
        result = preprocess_case(case.postop, case.event, case.dose, params, case_id=f"Q{seed}")
        seconds = time.perf_counter() - started
        gates = {g["name"]: g for g in result.info["quality"]["gates"]}
        # The faults, each measured with the gate's own function.
        iso = isotropic_geometry(case.postop, args.spacing)
        mask = skull_strip(resample_to(case.postop, iso), backend, name="postop")
        event_mask, _ = event_brain_mask(case.event, args.spacing, backend)
        shifted = brain_overlap(mask, event_mask, _shifted(result.event_to_reference, 30.0))
        body = non_head_volume(case.event, seed=seed)
        registration = register_rigid(case.postop, body, params.registration, check=False)
        body_mask, why = event_brain_mask(body, args.spacing, backend)
        body_overlap = brain_overlap(mask, body_mask, registration.transform)
        cropped = dose_coverage(_upper_half(case.dose), mask)
        row = {
            "overlap": gates["registration_overlap"]["value"],
            "metric": gates["registration_metric"]["value"],
            "brain_ml": gates["brain_volume"]["value"],
            "coverage": gates["dose_coverage"]["value"],
            "dose_max": gates["dose_maximum"]["value"],
            "overlap_shift30": shifted,
            "overlap_body": body_overlap,
            "metric_body": registration.metric,
            "coverage_half": cropped,
        }
        for key, value in row.items():
            table.setdefault(key, []).append(value)
        states = " ".join(f"{g['name']}={g['state']}" for g in gates.values())
        print(f"seed {seed} ({label}, {case.truth['prescription_gy']} Gy, {seconds:.1f} s): "
              + ", ".join(f"{k} {v:.3f}" for k, v in row.items())
              + f"; body converged={registration.converged} {('(' + why[:60] + ')') if why else ''}; {states}")
    print("ranges over seeds:")
    for key, values in table.items():
        print(f"  {key:16s} {min(values):8.3f} .. {max(values):8.3f}")


if __name__ == "__main__":
    main()
