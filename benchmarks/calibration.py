"""Calibration and conformal coverage of a trained bundle on a labelled test cohort (trains nothing).

    python benchmarks/calibration.py --bundle BUNDLE --cohort TEST.csv [--coverage 0.9] [--device cpu]
    python benchmarks/calibration.py --bundle BUNDLE --new-patients 40 [--seed 9001] [--size 96 | --spacing 1]
        [--label-noise P] [--classes paper|distinct] [--skull-stripped] [--workers N] [--keep DIR]

``--new-patients N`` synthesises N new patients first (``ricenet synth``'s
generator, ``--seed`` different from the training cohort's so none is a
training patient; the same ``--size``/``--spacing``, ``--label-noise``, ``--classes`` and
``--skull-stripped`` as the training cohort), in a temporary folder unless ``--keep DIR``.

Every case of the cohort (patients the bundle never saw: not its training
cohort, whose out-of-fold data the temperature was fitted on) is classified
with the bundle. Printed: ECE (10 equal-width bins of the top probability)
and Brier score of the raw ensemble mean and of the calibrated probability;
the share of patients whose conformal set holds their true class, per class
and overall, with the number of patients, against the target coverage; and
how many sets hold one class, both, or none. The bundle's own out-of-fold
figures are printed beside them: "after" there is fitted on the same data.
Also counted: the out-of-distribution gate's states on these patients (new
patients of the training distribution should mostly pass).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cohort", help="labelled cohort CSV or folder, not the training cohort")
    source.add_argument("--new-patients", type=int, metavar="N", help="synthesise N new patients and use them")
    parser.add_argument("--seed", type=int, default=9001, help="seed of the new patients (default 9001)")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--spacing", type=float, default=None, metavar="MM", help="new patients' voxel size (default 1)")
    grid.add_argument("--size", type=int, default=None, metavar="VOX", help="new patients' voxels across instead")
    parser.add_argument("--label-noise", type=float, default=0.0, metavar="P")
    parser.add_argument("--classes", choices=("paper", "distinct"), default="paper",
                        help="the new patients' class rule: the training cohort's (the demo's is distinct)")
    parser.add_argument("--skull-stripped", action="store_true",
                        help="write the new patients brain-only, as the demo's cohort is")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="processes making the new patients")
    parser.add_argument("--keep", metavar="DIR", help="write the new patients here instead of a temporary folder")
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    if not bundle.metadata.get("calibration"):
        raise SystemExit(f"{args.bundle}: the bundle has no calibration (trained by an earlier RICE-NET).")
    if args.cohort:
        return evaluate(bundle, args.cohort, args)
    from RICENetLib.synthetic import write_cohort

    with tempfile.TemporaryDirectory(prefix="ricenet-new-patients-") as scratch:
        folder = Path(args.keep) if args.keep else Path(scratch) / "cohort"
        print(f"synthesising {args.new_patients} new patients (seed {args.seed}) in {folder}", file=sys.stderr)
        cohort = write_cohort(folder, cases=args.new_patients, seed=args.seed, size=args.size,
                              spacing_mm=None if args.size else (args.spacing or 1.0), label_noise=args.label_noise,
                              workers=args.workers, classes=args.classes, skull_stripped=args.skull_stripped)
        return evaluate(bundle, cohort, args)


def evaluate(bundle, cohort, args: argparse.Namespace) -> int:
    """Classify every patient of ``cohort`` and print the figures (see the module docstring)."""
    from RICENetLib.quality import report_of

    classes = list(bundle.class_names)
    cases = [c for c in load_cohort(cohort, require_labels=True)]
    ood_states: Counter = Counter()
    raw, calibrated, truth, sets = [], [], [], []
    for number, case in enumerate(cases, 1):
        p = case.paths
        prediction = predict_case(bundle, p["postop"], p["event"], p["dose"], device=args.device)
        trust = assess(bundle.metadata, prediction.probabilities, args.coverage)
        raw.append([prediction.probabilities[c] for c in classes])
        calibrated.append([trust["calibrated_probability"][c] for c in classes])
        truth.append(classes.index(case.label))
        sets.append(trust["prediction_set"])
        gates = report_of(prediction)
        ood_states[gates.gate("out_of_distribution").state if gates and gates.gate("out_of_distribution") else "none"] += 1
        print(f"{number}/{len(cases)} {case.patient_id}: {case.label}, p {raw[-1][1]:.3f} → {calibrated[-1][1]:.3f}, "
              f"set {sets[-1]['classes']}", file=sys.stderr)
    y = np.array(truth)
    fitted = bundle.metadata["calibration"]
    print(f"bundle {bundle.id}: temperature {fitted['temperature']:.3f} fitted on {fitted['n_patients']} out-of-fold "
          f"patients (there: ECE {fitted['ece_before']:.3f} → {fitted['ece_after']:.3f}, "
          f"Brier {fitted['brier_before']:.3f} → {fitted['brier_after']:.3f})")
    print(f"test cohort, {len(y)} patients ({', '.join(f'{c} {int((y == k).sum())}' for k, c in enumerate(classes))}); "
          "ECE over 10 equal-width bins of the top probability")
    print(f"  out-of-distribution gate: {', '.join(f'{k} {v}' for k, v in sorted(ood_states.items()))}")
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
