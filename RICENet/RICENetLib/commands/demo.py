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
import shutil
from pathlib import Path
from typing import Any

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
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the training checkpoints (OUT/training, gigabytes) once the bundle is written")


#: Edge of the synthetic volumes in voxels (fixed: part of what makes the cohort).
COHORT_SIZE = 64


def stage_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """What decides each stage's result (``--device`` and ``--out`` do not: they are not recorded)."""
    return {
        "cohort": {"cases": args.cases, "seed": args.seed, "size": COHORT_SIZE},
        "bundle": {"folds": args.folds, "epochs": args.epochs, "input_size": args.input_size,
                   "spacing": float(args.spacing), "seed": args.seed, "conv1_stride": 2, "batch_size": 4},
        "prediction": {"occlusion_mask": args.occlusion_mask, "occlusion_stride": args.occlusion_stride},
    }


def remove_checkpoints(work: Path) -> int:
    """Delete the training checkpoints under ``work`` (logs and curves stay); returns the bytes freed."""
    from RICENetTrainingLib.training import CHECKPOINT_NAME

    freed = 0
    for path in sorted(work.glob(f"*/{CHECKPOINT_NAME}")):
        freed += path.stat().st_size
        path.unlink()
    return freed


def held_out_summary(truth: str, predicted: str, metrics: dict[str, Any], n_training: int) -> list[str]:
    """Plain lines on how well the demo's ensemble did: the held-out patient, then the bundle's CV figures."""
    lines = [f"1 held-out patient (never seen in training): true {truth}, predicted {predicted}: "
             f"{'right' if truth == predicted else 'wrong'}. One patient says little: a coin would be right half the time."]
    f1, accuracy = metrics.get("macro_f1") or {}, metrics.get("accuracy") or {}
    if f1.get("mean") is not None:
        n = f1.get("n")
        text = f"cross-validation over {n} folds of the {n_training} training patients: macro F1 {f1['mean']:.2f}"
        if f1.get("sd") is not None:
            text += f" ± {f1['sd']:.2f}"
        if accuracy.get("mean") is not None:
            text += f", accuracy {accuracy['mean']:.2f}"
        lines.append(text)
        lines.append("  (each fold's model scored on the patients left out of its training; macro F1 is the mean of the "
                     "two classes' F1: 1.0 = every patient right, about 0.5 = guessing, 0.33 = always the same answer. "
                     "Each fold keeps its best epoch on those same patients, so the figure flatters. A demo run: tiny "
                     "inputs and few epochs, not a trained clinical model.)")
    return lines


def run(args: argparse.Namespace) -> int:
    from ..cli import main as ricenet
    from ..cohort import load_cohort, write_cohort_csv
    from ..demo_stages import plan_stages, read_manifest, write_manifest
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
    bundle, work, prediction_dir = out / "bundle", out / "training", out / "prediction"
    step = lambda text: print(f"\n== {text} ==", flush=True)  # noqa: E731

    wanted = stage_options(args)
    manifest = read_manifest(out)
    recorded = dict(manifest.get("stages") or {})
    present = {"cohort": cohort_csv.exists(), "bundle": (bundle / "bundle.json").exists(),
               "prediction": (prediction_dir / "prediction.json").exists()}
    decisions = {d.stage: d for d in plan_stages(recorded, wanted, present)}
    started = manifest.get("training_started")

    def record(stage: str | None = None) -> None:
        """Forget the stages being redone before they start; add each one once it is made. ``training_started``:
        the options of the last training begun, so that only a stopped run of the same training is resumed."""
        if stage is not None:
            recorded[stage] = wanted[stage]
        kept = {s: recorded[s] for s in recorded if s in decisions and (decisions[s].reuse or s == stage or s in done)}
        write_manifest(out, kept, training_started=started)

    done: set[str] = set()
    out.mkdir(parents=True, exist_ok=True)
    if not all(d.reuse for d in decisions.values()):
        record()

    step(f"1/3 synthetic cohort: {args.cases} patients → {cohort_csv.parent}")
    if decisions["cohort"].reuse:
        print("(reusing the synthetic cohort: same --cases and --seed as the run that made it)")
    else:
        if present["cohort"]:
            print(f"(making the cohort again: {decisions['cohort'].reason})")
            shutil.rmtree(cohort_csv.parent)
        with progress_bar("synthesising") as progress:
            write_cohort(cohort_csv.parent, cases=args.cases, seed=args.seed, size=COHORT_SIZE, progress=progress)
        done.add("cohort")
        record("cohort")
    summary = summarise_cohort(cohort_csv)
    print(f"labels {summary['labels']}; lesion variants {summary['lesion_variants']}")
    cases = load_cohort(cohort_csv)
    held_out, training = cases[-1], cases[:-1]
    train_csv = cohort_csv.parent / "train.csv"
    if not decisions["cohort"].reuse or not train_csv.exists():
        write_cohort_csv(train_csv, training)

    step(f"2/3 training a {args.folds}-fold ensemble on {len(training)} patients "
         f"({args.epochs} epochs, {args.input_size}³ at {args.spacing:g} mm) → {bundle}")
    if decisions["bundle"].reuse:
        print("(reusing the trained bundle: same cohort, --folds, --epochs, --input-size, --spacing and --seed "
              "as the run that made it)")
    else:
        if present["bundle"]:
            print(f"(training again: {decisions['bundle'].reason})")
        train = ["train", "--cohort", str(train_csv), "--out", str(bundle), "--work-dir", str(work),
                 "--folds", str(args.folds), "--epochs", str(args.epochs), "--input-size", str(args.input_size),
                 "--spacing", str(args.spacing), "--conv1-stride", "2", "--batch-size", "4",
                 "--seed", str(args.seed), "--device", args.device, "--cache", str(out / "cache"),
                 # one folds file per fold count: the cohort's 5 folds must not meet a later --folds 3
                 "--folds-file", str(cohort_csv.parent / f"folds-{args.folds}.json")]
        # Resume only a stopped run of the same training on the same cohort; anything else starts afresh.
        if work.exists() and decisions["cohort"].reuse and started == wanted["bundle"]:
            print("(resuming a stopped training run with the same options)")
            train.append("--resume")
        elif work.exists() or bundle.exists():
            train.append("--overwrite")
        started = wanted["bundle"]
        record()
        code = ricenet(train)
        if code:
            return code
        done.add("bundle")
        record("bundle")
    if work.exists() and not args.keep_checkpoints:
        freed = remove_checkpoints(work)
        if freed:
            print(f"(removed the training checkpoints, {freed / 1e9:.1f} GB, from {work}; the bundle holds the "
                  "weights; --keep-checkpoints keeps them)")

    step(f"3/3 classifying held-out patient {held_out.patient_id} with an occlusion map "
         f"(box {args.occlusion_mask}, stride {args.occlusion_stride}) → {prediction_dir}")
    if decisions["prediction"].reuse:
        print("(reusing the prediction: same bundle, held-out patient, --occlusion-mask and --occlusion-stride)")
    else:
        if present["prediction"]:
            print(f"(classifying again: {decisions['prediction'].reason})")
        p = held_out.paths
        code = ricenet(["predict", "--bundle", str(bundle), "--postop", str(p["postop"]), "--event", str(p["event"]),
                        "--dose", str(p["dose"]), "--out", str(prediction_dir), "--occlusion", "standard",
                        "--occlusion-mask", str(args.occlusion_mask), "--occlusion-stride", str(args.occlusion_stride),
                        "--device", args.device, "--overwrite"])
        if code:
            return code
        done.add("prediction")
        record("prediction")
    prediction = json.loads((prediction_dir / "prediction.json").read_text(encoding="utf-8"))
    metrics = json.loads((bundle / "bundle.json").read_text(encoding="utf-8")).get("metrics", {})
    step("done")
    for line in held_out_summary(held_out.label, prediction["label"], metrics, len(training)):
        print(line)
    timings = prediction.get("timings_s") or {}
    if timings.get("occlusion") is not None:
        print(f"occlusion map: {timings['occlusion']:.0f} s of the prediction's {timings.get('total', 0):.0f} s")
    print(f"report:   {prediction_dir / 'report.html'}")
    print(f"heatmap:  {prediction_dir / 'occlusion.nii.gz'} (post-op space; load it over the MRI in Slicer)")
    print(f"overview: {prediction_dir / 'overview.png'}")
    print(f"bundle:   {bundle}")
    print(f"total time: {time.perf_counter() - start:.0f} s")
    return 0
