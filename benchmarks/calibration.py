"""Calibration and conformal coverage of a trained bundle on a labelled test cohort (trains nothing).

    python benchmarks/calibration.py --bundle BUNDLE --cohort TEST.csv [--coverage 0.9] [--device cpu]

Every case of the cohort (patients the bundle never saw: not its training
cohort, whose out-of-fold data the temperature was fitted on) is classified
with the bundle. Printed: ECE (10 equal-width bins of the top probability)
and Brier score of the raw ensemble mean and of the calibrated probability;
the share of patients whose conformal set holds their true class, per class
and overall, with the number of patients, against the target coverage; and
how many sets hold one class, both, or none. The bundle's own out-of-fold
figures are printed beside them: "after" there is fitted on the same data.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from RICENetLib.bundle import load_bundle
from RICENetLib.calibration import brier_score, expected_calibration_error
from RICENetLib.cohort import load_cohort
from RICENetLib.conformal import DEFAULT_COVERAGE
from RICENetLib.inference import predict_case
from RICENetLib.trust import assess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--cohort", required=True, help="labelled cohort CSV or folder, not the training cohort")
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    classes = list(bundle.class_names)
    if not bundle.metadata.get("calibration"):
        raise SystemExit(f"{args.bundle}: the bundle has no calibration (trained by an earlier RICE-NET).")
    cases = [c for c in load_cohort(args.cohort, require_labels=True)]
    raw, calibrated, truth, sets = [], [], [], []
    for number, case in enumerate(cases, 1):
        p = case.paths
        prediction = predict_case(bundle, p["postop"], p["event"], p["dose"], device=args.device)
        trust = assess(bundle.metadata, prediction.probabilities, args.coverage)
        raw.append([prediction.probabilities[c] for c in classes])
        calibrated.append([trust["calibrated_probability"][c] for c in classes])
        truth.append(classes.index(case.label))
        sets.append(trust["prediction_set"])
        print(f"{number}/{len(cases)} {case.patient_id}: {case.label}, p {raw[-1][1]:.3f} → {calibrated[-1][1]:.3f}, "
              f"set {sets[-1]['classes']}", file=sys.stderr)
    y = np.array(truth)
    fitted = bundle.metadata["calibration"]
    print(f"bundle {bundle.id}: temperature {fitted['temperature']:.3f} fitted on {fitted['n_patients']} out-of-fold "
          f"patients (there: ECE {fitted['ece_before']:.3f} → {fitted['ece_after']:.3f}, "
          f"Brier {fitted['brier_before']:.3f} → {fitted['brier_after']:.3f})")
    print(f"test cohort, {len(y)} patients ({', '.join(f'{c} {int((y == k).sum())}' for k, c in enumerate(classes))}); "
          "ECE over 10 equal-width bins of the top probability")
    print(f"  raw ensemble mean: ECE {expected_calibration_error(raw, y):.3f}, Brier {brier_score(raw, y):.3f}")
    print(f"  calibrated:        ECE {expected_calibration_error(calibrated, y):.3f}, Brier {brier_score(calibrated, y):.3f}")
    if not sets[0]["available"]:
        print(f"  no conformal sets: {sets[0]['reason']}")
        return 0
    inside = np.array([classes[t] in s["classes"] for t, s in zip(y, sets)])
    share = f"{100 * args.coverage:g} %"
    print(f"  {share} sets: true class inside for {inside.sum()} of {len(y)} ({inside.mean():.1%})")
    for k, c in enumerate(classes):
        members = y == k
        if members.any():
            print(f"    {c}: {inside[members].sum()} of {members.sum()} ({inside[members].mean():.1%})")
    sizes = np.array([len(s["classes"]) for s in sets])
    print(f"  set sizes: one class {int((sizes == 1).sum())}, both {int((sizes == 2).sum())}, "
          f"empty {int((sizes == 0).sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
