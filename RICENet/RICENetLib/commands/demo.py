"""``ricenet demo``: the whole pipeline on a built-in synthetic cohort.

Synthesise a cohort of the easier demonstration kind, train a quick 5-fold
ensemble on most of it (small input, few epochs: minutes on a laptop CPU),
classify the new patients it never saw, and show one of them with an
occlusion heatmap and the report. Each stage is the same code path as the
corresponding ``ricenet`` subcommand, and a stage whose output already exists
is reused, so a second run is quick.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import shutil
from pathlib import Path
from typing import Any

NAME = "demo"
HELP = "run the whole pipeline on a synthetic cohort: synthesise, train a quick 5-fold ensemble, classify a held-out case"
DESCRIPTION = __doc__.split("\n\n")[1].replace("\n", " ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="ricenet-demo", help="output folder (default ./ricenet-demo)")
    parser.add_argument("--cases", type=int, default=TRAINING_CASES,
                        help=f"synthetic patients to train on (default {TRAINING_CASES})")
    parser.add_argument("--new-patients", type=int, default=NEW_PATIENTS,
                        help=f"more synthetic patients, never seen in training, to test the ensemble on "
                             f"(default {NEW_PATIENTS}); the first is shown with a heatmap")
    parser.add_argument("--classes", choices=("distinct", "paper"), default="distinct",
                        help="synthetic class rule: distinct (default: the easier demonstration cohort, larger "
                             "recurrences and smaller RICE foci, README) or paper (the paper-like rule, which the "
                             "demo's quick training cannot learn)")
    parser.add_argument("--skull-strip", choices=("none", "deepbet"), default="none",
                        help="none (default): the cohort is written brain-only, as research collections such as "
                             "BraTS are, and prepared without skull stripping; deepbet: written with skull and "
                             "scalp and stripped by deepbet, as real MRIs are (about 8 s more per patient here)")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help=f"training epochs per fold (default {EPOCHS}; the paper: 800)")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE,
                        help=f"Adam learning rate (default {LEARNING_RATE:g}, with a cosine decay; the paper: 1e-4, "
                             "constant, over 800 epochs)")
    parser.add_argument("--widen-factor", type=float, default=WIDEN_FACTOR,
                        help=f"channels of every layer × W (default {WIDEN_FACTOR:g}: about 3× cheaper than the "
                             "paper's ResNet-18, which is 1)")
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
TRAINING_CASES = 40
NEW_PATIENTS = 10
EPOCHS = 24
LEARNING_RATE = 1e-3
WIDEN_FACTOR = 0.5


def stage_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """What decides each stage's result (``--device`` and ``--out`` do not: they are not recorded)."""
    return {
        "cohort": {"cases": args.cases, "new_patients": args.new_patients, "classes": args.classes,
                   "skull_strip": args.skull_strip, "seed": args.seed, "size": COHORT_SIZE},
        "bundle": {"folds": args.folds, "epochs": args.epochs, "lr": float(args.lr), "lr_schedule": "cosine",
                   "input_size": args.input_size, "spacing": float(args.spacing), "seed": args.seed,
                   "widen_factor": float(args.widen_factor),
                   "conv1_stride": 2, "batch_size": 4},
        "prediction": {"occlusion_mask": args.occlusion_mask, "occlusion_stride": args.occlusion_stride},
    }


def training_processes(device: str, folds: int) -> int:
    """Fold-training processes: on a CPU one more than its cores (up to one per fold), one on a GPU.

    On 2 cores (AMD EPYC, AVX2) at the demo's size, 3 one-thread processes train 5 folds with both cores busy
    throughout; 2 leave one idle while the fifth fold trains (RICENetTrainingLib.parallel_folds).
    """
    from RICENetTrainingLib.training import resolve_device

    cores = os.cpu_count() or 1
    return min(folds, cores + 1) if cores >= 2 and resolve_device(device).type == "cpu" else 1


def remove_checkpoints(work: Path) -> int:
    """Delete the training checkpoints under ``work`` (logs and curves stay); returns the bytes freed."""
    from RICENetTrainingLib.training import CHECKPOINT_NAME

    freed = 0
    for path in sorted(work.glob(f"*/{CHECKPOINT_NAME}")):
        freed += path.stat().st_size
        path.unlink()
    return freed


def new_patients_summary(rows: list[dict[str, str]]) -> list[str]:
    """Plain lines on how the ensemble did on the new patients (``predictions.csv`` rows of ``ricenet predict``)."""
    scored = [r for r in rows if r.get("predicted_label")]
    if not scored:
        return [f"none of the {len(rows)} new patients could be classified (predictions.csv holds their errors)"]
    right = sum(r["true_label"] == r["predicted_label"] for r in scored)
    per_class = []
    for name in sorted({r["true_label"] for r in scored}):
        of_class = [r for r in scored if r["true_label"] == name]
        per_class.append(f"{name} {sum(r['predicted_label'] == name for r in of_class)} of {len(of_class)}")
    majority = max(sum(r["true_label"] == name for r in scored) for name in {r["true_label"] for r in scored})
    lines = [f"{len(scored)} new patients (never seen in training): {right} right ({100 * right / len(scored):.0f} %); "
             f"{', '.join(per_class)}.",
             f"  (always giving the commoner answer would be right on {majority} of {len(scored)}; these patients "
             "follow the demo cohort's easier rule, so this says the pipeline learns, not how a model does on "
             "real patients)"]
    if len(scored) < len(rows):
        lines.append(f"  {len(rows) - len(scored)} new patient(s) failed; predictions.csv holds their errors")
    return lines


def cross_validation_summary(metrics: dict[str, Any], n_training: int) -> list[str]:
    """The bundle's cross-validation figures, and what they mean."""
    f1, accuracy, auc = (metrics.get(k) or {} for k in ("macro_f1", "accuracy", "auc"))
    if f1.get("mean") is None:
        return []
    text = f"cross-validation over {f1.get('n')} folds of the {n_training} training patients: macro F1 {f1['mean']:.2f}"
    if f1.get("sd") is not None:
        text += f" ± {f1['sd']:.2f}"
    for name, figure in (("accuracy", accuracy), ("AUC", auc)):
        if figure.get("mean") is not None:
            text += f", {name} {figure['mean']:.2f}"
    return [text, "  (each fold's model scored on the training patients left out of it; macro F1 is the mean of the "
                  "two classes' F1: 1.0 = every patient right, about 0.5 = guessing, 0.33 = always the same answer. "
                  "Each fold keeps its best epoch on those same patients, so the figure flatters; the new patients "
                  "above do not.)"]


def heatmap_summary(case_id: str, heatmap_path: Path, case_folder: Path) -> list[str]:
    """Where the shown patient's heatmap peaks, against the lesion the synthetic case was made with."""
    import SimpleITK as sitk

    from ..synthetic_truth import hottest_points, lesion_distance_mm

    if not heatmap_path.exists():
        return []
    distance = lesion_distance_mm(hottest_points(sitk.ReadImage(str(heatmap_path))), case_folder)
    where = "inside the lesion" if distance == 0 else f"{distance:.0f} mm from the lesion"
    return [f"{case_id}'s heatmap peaks {where} (against the synthetic truth; the demo aims for the lesion or "
            "within 10 mm of it)"]


def run(args: argparse.Namespace) -> int:
    import csv

    from ..cli import main as ricenet
    from ..cohort import load_cohort, write_cohort_csv
    from ..demo_stages import plan_stages, read_manifest, write_manifest
    from ..errors import InputError
    from ..output_folder import check_writable
    from ..synthetic import summarise_cohort, write_cohort
    from .progressbar import progress_bar

    if args.cases < 2 * args.folds:
        raise InputError(f"--cases {args.cases} is too few for {args.folds} folds; use at least {2 * args.folds}.")
    if args.new_patients < 1:
        raise InputError(f"--new-patients {args.new_patients}: use at least 1 (the first is shown with a heatmap).")
    start = time.perf_counter()
    out = Path(args.out).resolve()
    check_writable(out)  # not after the synthetic cohort and the training
    cohort_csv = out / "cohort" / "cohort.csv"
    bundle, work, prediction_dir = out / "bundle", out / "training", out / "prediction"
    new_dir = out / "new-patients"
    step = lambda text: print(f"\n== {text} ==", flush=True)  # noqa: E731

    wanted = stage_options(args)
    manifest = read_manifest(out)
    recorded = dict(manifest.get("stages") or {})
    present = {"cohort": cohort_csv.exists(), "bundle": (bundle / "bundle.json").exists(),
               "prediction": (prediction_dir / "prediction.json").exists() and (new_dir / "predictions.csv").exists()}
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

    total = args.cases + args.new_patients
    step(f"1/3 synthetic cohort ({args.classes} classes{', brain-only MRIs' if args.skull_strip == 'none' else ''}): "
         f"{args.cases} patients to train on + {args.new_patients} new ones → {cohort_csv.parent}")
    if decisions["cohort"].reuse:
        print("(reusing the synthetic cohort: same --cases, --new-patients, --classes, --skull-strip and --seed as the "
              "run that made it)")
    else:
        if present["cohort"]:
            print(f"(making the cohort again: {decisions['cohort'].reason})")
            shutil.rmtree(cohort_csv.parent)
        with progress_bar("synthesising") as progress:
            write_cohort(cohort_csv.parent, cases=total, seed=args.seed, size=COHORT_SIZE, progress=progress,
                         classes=args.classes, skull_stripped=args.skull_strip == "none", workers=2)
        done.add("cohort")
        record("cohort")
    summary = summarise_cohort(cohort_csv)
    print(f"labels {summary['labels']}; lesion variants {summary['lesion_variants']}")
    cases = load_cohort(cohort_csv)
    training, new = cases[:args.cases], cases[args.cases:]
    train_csv, new_csv = cohort_csv.parent / "train.csv", cohort_csv.parent / "new-patients.csv"
    if not decisions["cohort"].reuse or not train_csv.exists() or not new_csv.exists():
        write_cohort_csv(train_csv, training)
        write_cohort_csv(new_csv, new)

    step(f"2/3 training a {args.folds}-fold ensemble on {len(training)} patients "
         f"({args.epochs} epochs, {args.input_size}³ at {args.spacing:g} mm) → {bundle}")
    if decisions["bundle"].reuse:
        print("(reusing the trained bundle: same cohort, --folds, --epochs, --lr, --input-size, --spacing, "
              "--widen-factor and --seed as the run that made it)")
    else:
        if present["bundle"]:
            print(f"(training again: {decisions['bundle'].reason})")
        train = ["train", "--cohort", str(train_csv), "--out", str(bundle), "--work-dir", str(work),
                 "--folds", str(args.folds), "--epochs", str(args.epochs), "--input-size", str(args.input_size),
                 "--lr", str(args.lr), "--lr-schedule", "cosine", "--skull-strip", args.skull_strip,
                 "--spacing", str(args.spacing), "--conv1-stride", "2", "--batch-size", "4",
                 "--widen-factor", str(args.widen_factor),
                 "--processes", str(training_processes(args.device, args.folds)),
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

    shown = new[0]
    step(f"3/3 classifying the {len(new)} new patients, and {shown.patient_id} with an occlusion map "
         f"(box {args.occlusion_mask}, stride {args.occlusion_stride}) → {new_dir}, {prediction_dir}")
    if decisions["prediction"].reuse:
        print("(reusing the predictions: same bundle, new patients, --occlusion-mask and --occlusion-stride)")
    else:
        if present["prediction"]:
            print(f"(classifying again: {decisions['prediction'].reason})")
        code = ricenet(["predict", "--bundle", str(bundle), "--cohort", str(new_csv), "--out", str(new_dir),
                        "--device", args.device, "--overwrite"])
        if code not in (0, 2):  # 2: some patients failed; their errors are in the table and the summary says so
            return code
        p = shown.paths
        lesion = Path(p["postop"]).parent / "truth" / "lesion_mask.nii.gz"  # drawn on the event MRI
        code = ricenet(["predict", "--bundle", str(bundle), "--postop", str(p["postop"]), "--event", str(p["event"]),
                        "--dose", str(p["dose"]), "--out", str(prediction_dir), "--occlusion", "standard",
                        "--case-id", shown.patient_id, "--lesion", str(lesion), "--lesion-space", "event",
                        "--occlusion-mask", str(args.occlusion_mask), "--occlusion-stride", str(args.occlusion_stride),
                        "--device", args.device, "--overwrite"])
        if code:
            return code
        done.add("prediction")
        record("prediction")
    prediction = json.loads((prediction_dir / "prediction.json").read_text(encoding="utf-8"))
    metrics = json.loads((bundle / "bundle.json").read_text(encoding="utf-8")).get("metrics", {})
    with open(new_dir / "predictions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    step("done")
    for line in (new_patients_summary(rows) + cross_validation_summary(metrics, len(training))
                 + heatmap_summary(shown.patient_id, prediction_dir / "occlusion.nii.gz",
                                   Path(shown.paths["postop"]).parent)):
        print(line)
    timings = prediction.get("timings_s") or {}
    if timings.get("occlusion") is not None:
        print(f"occlusion map: {timings['occlusion']:.0f} s of the prediction's {timings.get('total', 0):.0f} s")
    print(f"new patients: {new_dir / 'predictions.csv'} (one folder each)")
    print(f"report:   {prediction_dir / 'report.html'}")
    print(f"heatmap:  {prediction_dir / 'occlusion.nii.gz'} (post-op space; load it over the MRI in Slicer)")
    print(f"overview: {prediction_dir / 'overview.png'}")
    print(f"bundle:   {bundle}")
    print(f"total time: {time.perf_counter() - start:.0f} s")
    return 0
