"""Benchmark: does the occlusion heatmap peak where a reader expects it?

For every case of a synthetic cohort (which carries its ground truth in
``truth/``), classify it with a bundle, compute the occlusion map, and check
whether the map's peak lies inside the lesion or the high-dose region (≥ 95 %
of the prescription), each grown by one model voxel. An occlusion map is flat
over blocks of ``stride`` voxels, so "the peak" is the whole hottest block (the
voxels within 1 % of the maximum), not the first maximal voxel; the benchmark
also prints the distance from that block to the lesion in mm, to set against
the box edge. Prints one line per case,
the fractions, and the ensemble's macro F1 on these cases (an independent test
set when the cohort was not used for training).

    python benchmarks/occlusion_localisation.py --bundle ricenet-demo/bundle \\
        --cohort ricenet-demo/cohort/cohort.csv --cases 8 --preset standard
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import SimpleITK as sitk

from RICENetLib.bundle import load_bundle
from RICENetLib.cohort import load_cohort
from RICENetLib.inference import predict_case, resolve_occlusion
from RICENetLib.metrics import classification_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--cohort", required=True, help="a synthetic cohort (ricenet synth), with truth/ folders")
    parser.add_argument("--cases", type=int, default=8, help="how many cases (the last N of the table)")
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--mask", type=int, help="occlusion box edge in model voxels (overrides the preset)")
    parser.add_argument("--stride", type=int, help="step between boxes in model voxels (overrides the preset)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    occlusion = resolve_occlusion(args.preset, mask_size=args.mask, stride=args.stride)
    bundle = load_bundle(args.bundle)
    cases = load_cohort(args.cohort)[-args.cases:]
    hits = {"lesion": 0, "high_dose": 0, "either": 0, "correct": 0}
    truth_labels, probabilities, distances = [], [], []
    start = time.perf_counter()
    for case in cases:
        p = case.paths
        truth_dir = p["postop"].parent / "truth"
        truth = json.loads((truth_dir / "truth.json").read_text(encoding="utf-8"))
        prediction = predict_case(bundle, p["postop"], p["event"], p["dose"], device=args.device, occlusion=occlusion)
        prepared = prediction.preprocessed
        heat = prediction.occlusion_model_space
        model = prepared.model_image(heat)
        # Lesion mask (event grid) → model grid through the registration (reference → event points).
        lesion_event = sitk.ReadImage(str(truth_dir / "lesion_mask.nii.gz"))
        lesion_image = sitk.Cast(sitk.Resample(lesion_event, model, prediction.event_to_reference,
                                               sitk.sitkNearestNeighbor, 0), sitk.sitkUInt8)
        lesion = sitk.GetArrayFromImage(lesion_image)
        dose = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(p["dose"])), model, sitk.Transform(),
                                                    sitk.sitkLinear, 0.0))
        high = dose >= 0.95 * truth["prescription_gy"]
        grow = lambda m: sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(m.astype(np.uint8)), [1, 1, 1])) > 0  # noqa: E731
        peak = heat >= heat.max() - 0.01 * (heat.max() - heat.min())
        in_lesion, in_dose = bool(grow(lesion)[peak].any()), bool(grow(high)[peak].any())
        to_lesion = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
            lesion_image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
        distance = max(float(to_lesion[peak].min()), 0.0) + 0.0 if lesion.any() else float("nan")  # + 0.0: no "-0"
        distances.append(distance)
        hits["lesion"] += in_lesion
        hits["high_dose"] += in_dose
        hits["either"] += in_lesion or in_dose
        hits["correct"] += prediction.label == case.label
        truth_labels.append(bundle.class_names.index(case.label))
        probabilities.append([prediction.probabilities[name] for name in bundle.class_names])
        print(f"{case.patient_id} ({case.label}, {truth['lesion_variant']}): predicted {prediction.label} "
              f"{prediction.agreement}; peak in lesion {in_lesion} ({distance:.0f} mm away), in ≥95 % dose {in_dose}",
              flush=True)
    n = len(cases)
    print(f"\n{n} cases, preset {args.preset}, {time.perf_counter() - start:.0f} s")
    print(f"peak inside the lesion: {hits['lesion']}/{n}; inside the ≥95 % isodose: {hits['high_dose']}/{n}; "
          f"either: {hits['either']}/{n}; classified correctly: {hits['correct']}/{n}")
    box_mm = occlusion.mask_size * float(bundle.preprocessing.get("spacing_mm", 1.0))
    print(f"distance from the hottest block to the lesion: median {np.nanmedian(distances):.0f} mm, "
          f"max {np.nanmax(distances):.0f} mm (occlusion box edge {box_mm:.0f} mm)")
    metrics = classification_metrics(truth_labels, np.asarray(probabilities))
    print(f"ensemble on these cases: macro F1 {metrics['macro_f1']:.3f}, accuracy {metrics['accuracy']:.3f}, "
          f"AUC {metrics['auc']:.3f}")


if __name__ == "__main__":
    main()
