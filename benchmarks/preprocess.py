"""Benchmark: preprocessing of one full-size synthetic case, step by step (target ≤ 30 s on 2 cores).

    python benchmarks/preprocess.py                         # 1 mm case, 224³, deepbet
    python benchmarks/preprocess.py --quality               # + registration and skull-strip comparisons
    python benchmarks/preprocess.py --spacing 1.0 --seed 3 --repeat 2

The case (MNI-template head with skull, cavity, lesion, dose on its own grid)
is generated and written to a temporary folder first (not timed), so the
timed run reads files as `ricenet preprocess` does. Prints the wall time of
each step, the whole case (wall and CPU), saving, and the accuracy against the
synthetic truth: registration error over the brain, brain-mask Dice, dose
maximum. ``--quality`` adds the registration on the full 1 mm grid (the
working-grid choice) and each skull-stripping backend on the post-op (with a
resection cavity) and the event MRI (cavity and a new lesion).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RICENetLib.preprocessing import PreprocessParameters, preprocess_case
from RICENetLib.registration import RegistrationParameters, mean_displacement_mm, register_rigid
from RICENetLib.resampling import Geometry, resample_to
from RICENetLib.skull_strip import backend_status, dice, skull_strip
from RICENetLib.synthetic import generate_case, write_case


def _brain_points(mask: sitk.Image) -> np.ndarray:
    return Geometry.from_image(mask).index_to_point(np.argwhere(sitk.GetArrayViewFromImage(mask))[:, ::-1].astype(float))


def _repose(case, angle_deg: float, shift_mm: float) -> tuple[sitk.Image, sitk.Transform]:
    """The event MRI moved to ``angle_deg``/``shift_mm`` from the post-op, and that true pose (post-op → event)."""
    centre = case.brain_mask.TransformContinuousIndexToPhysicalPoint(
        tuple(float(v) for v in np.argwhere(sitk.GetArrayViewFromImage(case.brain_mask))[:, ::-1].mean(0)))
    pose = sitk.VersorRigid3DTransform()
    pose.SetCenter(centre)
    pose.SetRotation((0.48, 0.6, 0.64), float(np.radians(angle_deg)))
    pose.SetTranslation(tuple(np.array([0.6, -0.64, 0.48]) * shift_mm))
    through = sitk.CompositeTransform([case.event_from_reference, pose.GetInverse()])
    return sitk.Resample(case.event, case.event, through, sitk.sitkLinear, 0.0, case.event.GetPixelID()), pose


def _timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spacing", type=float, default=1.0, help="voxel size of the synthetic post-op MRI (mm)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (the first also loads deepbet)")
    parser.add_argument("--skull-strip", default="deepbet", choices=("deepbet", "hd-bet", "none"))
    parser.add_argument("--quality", action="store_true", help="also compare registration grids and skull-strip backends")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} "
          "(other work on the machine inflates wall times)")
    started = time.perf_counter()
    case = generate_case("BENCH", "recurrence", seed=args.seed, spacing_mm=args.spacing)
    folder = Path(tempfile.mkdtemp(prefix="ricenet-bench-"))
    paths = write_case(case, folder / "BENCH")
    print(f"synthetic case: post-op {case.postop.GetSize()} at {case.postop.GetSpacing()[0]:g} mm, event "
          f"{case.event.GetSize()} at {tuple(round(v, 2) for v in case.event.GetSpacing())} mm, dose {case.dose.GetSize()} "
          f"at {case.dose.GetSpacing()[0]:g} mm; true pose {case.truth['relative_rotation_deg']:.1f}° / "
          f"{case.truth['relative_translation_mm']:.1f} mm (made in {time.perf_counter() - started:.0f} s, not timed)")

    params = PreprocessParameters(spacing_mm=1.0, input_size=224, skull_strip=args.skull_strip)
    points = _brain_points(case.brain_mask)
    for run in range(args.repeat):
        result, wall, cpu = _timed(preprocess_case, paths["postop"], paths["event"], paths["dose"], params, case_id="BENCH")
        print(f"\nrun {run + 1}: whole case {wall:.1f} s wall, {cpu:.1f} s CPU (target ≤ 30 s wall): "
              f"{'within' if wall <= 30 else 'OVER'} target")
        for step, seconds in result.info["timings_s"].items():
            print(f"  {step:<22} {seconds:6.2f} s")
        _, save_wall, _ = _timed(result.save, folder / f"out{run}")
        print(f"  {'save (not in total)':<22} {save_wall:6.2f} s")

    error = mean_displacement_mm(result.event_to_reference, case.event_from_reference, points)
    truth_mask = resample_to(case.brain_mask, result.model_geometry, interpolator="nearest", pixel=sitk.sitkUInt8)
    dose_in = float(sitk.GetArrayViewFromImage(case.dose).max())
    dose_out = float(result.arrays["dose"].max()) * params.prescription_gy
    registration = result.info["registration"]
    print(f"\nregistration: mean displacement error over the brain {error:.3f} mm "
          f"(metric {registration['metric']:.3f}, iterations per level {registration['iterations_per_level']})")
    print(f"skull strip ({params.skull_strip}) Dice vs synthetic brain mask, model space: {dice(result.brain_mask, truth_mask):.4f}")
    dose_array = sitk.GetArrayViewFromImage(case.dose)
    peak_in = case.dose.TransformIndexToPhysicalPoint(
        [int(v) for v in np.unravel_index(int(np.argmax(dose_array)), dose_array.shape)[::-1]])
    peak_out = result.model_geometry.index_to_point(
        np.array(np.unravel_index(int(np.argmax(result.arrays["dose"])), result.model_geometry.shape)[::-1], dtype=float))
    print(f"dose maximum: input {dose_in:.2f} Gy, model space {dose_out:.2f} Gy ({100 * (dose_out / dose_in - 1):+.2f} %), "
          f"moved {np.linalg.norm(np.subtract(peak_out, peak_in)):.2f} mm (dose voxel {case.dose.GetSpacing()[0]:g} mm)")

    if args.quality:
        print("\nregistration grid (event onto post-op, same case):")
        for label, reg in (("2 mm working grid (default)", RegistrationParameters()),
                           ("full grid, shrink 8/4/2", RegistrationParameters(working_spacing_mm=0, shrink_factors=(8, 4, 2))),
                           ("full grid, shrink 4/2/1", RegistrationParameters(working_spacing_mm=0, smoothing_sigmas_mm=(2.0, 1.0, 0.0)))):
            found, wall, cpu = _timed(register_rigid, case.postop, case.event, reg)
            print(f"  {label:<30} error {mean_displacement_mm(found.transform, case.event_from_reference, points):.3f} mm, "
                  f"{wall:5.1f} s wall, {cpu:5.1f} s CPU")
        event, truth = _repose(case, 15.0, 20.0)
        found, wall, cpu = _timed(register_rigid, case.postop, event)
        print(f"  {'15° / 20 mm pose, default':<30} error {mean_displacement_mm(found.transform, truth, points):.3f} mm, "
              f"{wall:5.1f} s wall, {cpu:5.1f} s CPU")
        event_brain = resample_to(case.brain_mask, Geometry.from_image(case.event), case.event_from_reference.GetInverse(),
                                  interpolator="nearest", pixel=sitk.sitkUInt8)
        print("\nskull stripping, Dice vs synthetic brain mask (own grid):")
        for backend, why_not in backend_status().items():
            if why_not:
                print(f"  {backend:<8} not available: {why_not}")
                continue
            for name, image, truth in (("post-op (cavity)", case.postop, case.brain_mask),
                                       ("event (cavity + lesion)", case.event, event_brain)):
                mask, wall, _ = _timed(skull_strip, image, backend, name=name)
                print(f"  {backend:<8} {name:<24} Dice {dice(mask, truth):.4f}  {wall:5.1f} s")


if __name__ == "__main__":
    main()
