"""Benchmark: how far the synthetic class rule can be read from the ground truth (issue 4).

    python benchmarks/synthetic_rule.py --cohort benchmarks/results/synthetic_cv64/cohort/cohort.csv
    python benchmarks/synthetic_rule.py --cohort C/cohort.csv --folds C/../folds.json   # the CNN's folds

A synthetic case's ``truth/`` folder says where its lesion is and what it is
like. This prints, per lesion variant, the features a reader of the images
would have to measure (distance from the cavity wall, lesion volume, number of
foci), and the validation macro F1 of simple rules on those features, fitted
on the training folds and scored on each validation fold exactly as the CNN is
(same folds). It is the yardstick for the CNN's figure: a network that read
those features perfectly, but nothing else, would score about this. What the
rules cannot see (rim thickness, patchiness) separates the classes further, but
it is 1–4 mm, so only fine voxels show it.
"""

from __future__ import annotations

import argparse
import json
from itertools import product
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RICENetLib.cohort import load_cohort
from RICENetTrainingLib.folds import folds_for_cohort
from RICENetLib.metrics import format_mean_sd, macro_f1


def features(cases) -> dict[str, np.ndarray]:
    rows = []
    for case in cases:
        truth = Path(case.paths["event"]).parent / "truth"
        if not (truth / "truth.json").exists():
            raise SystemExit(f"{case.patient_id}: no {truth / 'truth.json'}; this needs a cohort from `ricenet synth`.")
        info = json.loads((truth / "truth.json").read_text(encoding="utf-8"))
        mask = sitk.ReadImage(str(truth / "lesion_mask.nii.gz"))
        volume = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * float(np.prod(mask.GetSpacing()))
        rows.append((info["lesion_variant"], float(info["lesion_distance_to_cavity_wall_mm"]), volume,
                     len(info["lesion_centres_anatomy_mm"])))
    variant, distance, volume, foci = zip(*rows)
    return {"variant": np.array(variant), "distance": np.array(distance), "volume": np.array(volume),
            "foci": np.array(foci)}


# Each rule: a name and a function (features, thresholds) -> 1 for recurrence; thresholds are fitted.
RULES = {
    "distance to the cavity wall <= a": (lambda f, a, b: f["distance"] <= a, ("distance", None)),
    "lesion volume >= b": (lambda f, a, b: f["volume"] >= b, (None, "volume")),
    "distance <= a, or volume >= b": (lambda f, a, b: (f["distance"] <= a) | (f["volume"] >= b), ("distance", "volume")),
    "distance <= a and one focus": (lambda f, a, b: (f["distance"] <= a) & (f["foci"] == 1), ("distance", None)),
}


def fit(rule, names, f, y, train) -> tuple[float, float]:
    grids = [np.unique(f[n][train]) if n else np.array([np.nan]) for n in names]
    sub = {k: v[train] for k, v in f.items()}
    return max(product(*grids), key=lambda ab: macro_f1(y[train], rule(sub, *ab).astype(int)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, help="cohort.csv of a synthetic cohort (with truth folders)")
    parser.add_argument("--folds", help="folds.json to use (default: beside the cohort, made if missing)")
    parser.add_argument("--n-folds", type=int, default=5)
    args = parser.parse_args()
    cases = load_cohort(args.cohort)
    folds = folds_for_cohort(cases, args.folds or Path(args.cohort).with_name("folds.json"), args.n_folds)
    f = features(cases)
    y = np.array([int(c.label == "recurrence") for c in cases])
    ids = [c.patient_id for c in cases]
    print(f"{len(cases)} cases ({int(y.sum())} recurrence, {int(len(y) - y.sum())} RICE)")
    for variant in sorted(set(f["variant"])):
        sel = f["variant"] == variant
        print(f"  {variant:20s} {int(sel.sum()):3d}: distance to wall {f['distance'][sel].min():5.1f}–"
              f"{f['distance'][sel].max():5.1f} mm, volume {f['volume'][sel].min():6.0f}–{f['volume'][sel].max():6.0f}"
              f" mm³, foci {f['foci'][sel].min()}–{f['foci'][sel].max()}")
    print(f"validation macro F1 of rules fitted on the training folds ({folds.n_folds} folds, mean ± sd):")
    for name, (rule, names) in RULES.items():
        scores = []
        for k in range(folds.n_folds):
            held = set(folds.validation_ids(k))
            val = np.array([i in held for i in ids])
            a, b = fit(rule, names, f, y, ~val)
            sub = {key: v[val] for key, v in f.items()}
            scores.append(macro_f1(y[val], rule(sub, a, b).astype(int)))
        summary = {"mean": float(np.mean(scores)), "sd": float(np.std(scores, ddof=1)), "n": len(scores)}
        print(f"  {name:32s} {format_mean_sd(summary, 3)}  (folds: {', '.join(f'{s:.3f}' for s in scores)})")


if __name__ == "__main__":
    main()
