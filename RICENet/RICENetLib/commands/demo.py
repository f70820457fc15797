"""``ricenet demo``: the whole pipeline on a built-in synthetic cohort.

Synthesise a cohort, hold one case out, train a quick 5-fold ensemble on the
rest (small input, few epochs: minutes on a laptop CPU), then classify the
held-out case with an occlusion heatmap and write the report. Each stage is
the same code path as the corresponding ``ricenet`` subcommand, and a stage
whose output already exists is reused, so a second run is quick.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

NAME = "demo"
HELP = "run the whole pipeline on a synthetic cohort: synthesise, train a quick 5-fold ensemble, classify a held-out case"
DESCRIPTION = __doc__.split("\n\n")[1].replace("\n", " ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="ricenet-demo", help="output folder (default ./ricenet-demo)")
    parser.add_argument("--cases", type=int, default=20, help="synthetic patients, one of them held out (default 20)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per fold (default 10; the paper: 800)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--input-size", type=int, default=40, help="network input size in voxels (default 40)")
    parser.add_argument("--spacing", type=float, default=5.0, help="model-space voxel size in mm (default 5)")
    parser.add_argument("--occlusion-mask", type=int, default=8, help="occlusion box edge in model voxels (default 8)")
    parser.add_argument("--occlusion-stride", type=int, default=4, help="step between occlusion boxes (default 4)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from ..cli import main as ricenet
    from ..cohort import load_cohort, write_cohort_csv
    from ..errors import InputError
    from ..output_folder import check_writable
    from ..synthetic import summarise_cohort, write_cohort
    from .progressbar import progress_bar

    if args.cases < args.folds + 2:
        raise InputError(f"--cases {args.cases} is too few for {args.folds} folds and a held-out case; "
                         f"use at least {args.folds + 2}.")
    start = time.perf_counter()
    out = Path(args.out).resolve()
    check_writable(out)  # not after the synthetic cohort and the training
    cohort_csv = out / "cohort" / "cohort.csv"
    step = lambda text: print(f"\n== {text} ==", flush=True)  # noqa: E731

    step(f"1/3 synthetic cohort: {args.cases} patients → {cohort_csv.parent}")
    if not cohort_csv.exists():
        with progress_bar("synthesising") as progress:
            write_cohort(cohort_csv.parent, cases=args.cases, seed=args.seed, size=64, progress=progress)
    summary = summarise_cohort(cohort_csv)
    print(f"labels {summary['labels']}; lesion variants {summary['lesion_variants']}")
    cases = load_cohort(cohort_csv)
    held_out, training = cases[-1], cases[:-1]
    train_csv = write_cohort_csv(out / "cohort" / "train.csv", training)

    bundle = out / "bundle"
    step(f"2/3 training a {args.folds}-fold ensemble on {len(training)} patients "
         f"({args.epochs} epochs, {args.input_size}³ at {args.spacing:g} mm) → {bundle}")
    if not (bundle / "bundle.json").exists():
        work = out / "training"
        train = ["train", "--cohort", str(train_csv), "--out", str(bundle), "--work-dir", str(work),
                 "--folds", str(args.folds), "--epochs", str(args.epochs), "--input-size", str(args.input_size),
                 "--spacing", str(args.spacing), "--conv1-stride", "2", "--batch-size", "4",
                 "--seed", str(args.seed), "--device", args.device, "--cache", str(out / "cache")]
        if work.exists():
            train.append("--resume")
        code = ricenet(train)
        if code:
            return code
    else:
        print("(reusing the trained bundle)")

    prediction_dir = out / "prediction"
    step(f"3/3 classifying held-out patient {held_out.patient_id} with an occlusion map (box {args.occlusion_mask}, stride {args.occlusion_stride}) → {prediction_dir}")
    p = held_out.paths
    code = ricenet(["predict", "--bundle", str(bundle), "--postop", str(p["postop"]), "--event", str(p["event"]),
                    "--dose", str(p["dose"]), "--out", str(prediction_dir), "--occlusion", "standard",
                    "--occlusion-mask", str(args.occlusion_mask), "--occlusion-stride", str(args.occlusion_stride),
                    "--device", args.device, "--overwrite"])
    if code:
        return code
    prediction = json.loads((prediction_dir / "prediction.json").read_text(encoding="utf-8"))
    metrics = json.loads((bundle / "bundle.json").read_text(encoding="utf-8")).get("metrics", {}).get("macro_f1", {})
    step("done")
    print(f"held-out patient {held_out.patient_id}: true label {held_out.label}; predicted {prediction['verdict']}")
    if metrics.get("mean") is not None:
        sd = metrics.get("sd")
        print(f"cross-validation macro F1 of this quick ensemble: {metrics['mean']:.2f}"
              + (f" ± {sd:.2f}" if sd is not None else "") + f" over {metrics.get('n')} folds "
              "(a demo run: tiny inputs and few epochs, not a trained clinical model)")
    print(f"report:   {prediction_dir / 'report.html'}")
    print(f"heatmap:  {prediction_dir / 'occlusion.nii.gz'} (post-op space; load it over the MRI in Slicer)")
    print(f"overview: {prediction_dir / 'overview.png'}")
    print(f"bundle:   {bundle}")
    print(f"total time: {time.perf_counter() - start:.0f} s")
    return 0
