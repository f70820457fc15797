"""The modality-ablation table from the committed per-epoch logs, without training anything.

    python benchmarks/ablation_records.py                          # every benchmarks/records/*ablation-fold*/
    python benchmarks/ablation_records.py --last-epochs 10 DIR DIR

The ablation's run folders (``benchmarks/results/``) are not committed and
need not outlive a session, so each fold's seven training logs are committed to ``benchmarks/records/``
(one folder per fold, one ``<combination>.csv`` each, the folds beside them).
This reads them back and prints the paper-shaped table over the folds present:
validation macro F1 at each fold's kept epoch, and the steadier mean of each
fold's last epochs (F1 and AUC), mean ± sd over folds. It refuses folders whose
``folds.json`` differ: the rows would not compare the same patients.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

from RICENetLib.metrics import format_mean_sd, mean_sd
from RICENetTrainingLib.ablation import COMBINATIONS, combination_name

RECORDS = Path(__file__).resolve().parent / "records"


def read_log(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(path.open(newline="")))
    if not rows:
        raise SystemExit(f"{path}: the training log has no epochs.")
    if len({row["fold"] for row in rows}) != 1:
        raise SystemExit(f"{path}: the training log mixes folds; one file should hold one fold.")
    epochs = [int(row["epoch"]) for row in rows]
    if epochs != list(range(1, len(rows) + 1)):
        raise SystemExit(f"{path}: the training log should hold epochs 1 to {len(rows)} once each, in order "
                         "(a resumed run logged twice?).")
    if not any(_kept(row) for row in rows):
        raise SystemExit(f"{path}: the training log marks no epoch as kept.")
    return rows


def _kept(row: dict[str, str]) -> bool:
    return row["kept"] in ("True", "true", "1")


def fold_figures(rows: list[dict[str, str]], last: int) -> dict[str, float]:
    """The kept epoch's validation F1 (the weights a bundle ships) and the mean of the last epochs."""
    kept = [row for row in rows if _kept(row)]
    tail = rows[-last:]
    return {"kept_f1": float(kept[-1]["val_macro_f1"]),
            "late_f1": statistics.fmean(float(row["val_macro_f1"]) for row in tail),
            "late_auc": statistics.fmean(float(row["val_auc"]) for row in tail)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="record folders (default: every benchmarks/records/*ablation-fold*/)")
    parser.add_argument("--last-epochs", type=int, default=5, help="the steadier figure's window (default 5)")
    args = parser.parse_args(argv)
    dirs = args.dirs or sorted(RECORDS.glob("*ablation-fold*"))
    if not dirs:
        raise SystemExit(f"No ablation records under {RECORDS}.")
    missing = [str(d) for d in dirs if not (d / "folds.json").is_file()]
    if missing:
        raise SystemExit(f"No folds.json in {', '.join(missing)}: a record folder holds one fold's logs and its folds.")
    folds_texts = {d: (d / "folds.json").read_text() for d in dirs}
    if len(set(folds_texts.values())) != 1:
        raise SystemExit("The record folders used different folds.json files: " + ", ".join(map(str, dirs)))

    print(f"{len(dirs)} record folder(s): {', '.join(d.name for d in dirs)}")
    print(f"| input | folds | kept epoch: validation macro F1 | last {args.last_epochs} epochs: macro F1 | "
          f"last {args.last_epochs} epochs: AUC |")
    print("|---|---|---|---|---|")
    for combo in COMBINATIONS:
        per_fold = {}
        stem = "+".join(combo)
        for d in dirs:
            log = d / f"{stem}.csv"
            if log.exists():
                rows = read_log(log)
                fold = int(rows[0]["fold"])
                if fold in per_fold:
                    raise SystemExit(f"{log}: fold {fold} of {stem} is recorded twice.")
                per_fold[fold] = fold_figures(rows, args.last_epochs)
        if not per_fold:
            print(f"| {combination_name(combo)} | none | — | — | — |")
            continue
        figures = [per_fold[k] for k in sorted(per_fold)]
        cells = [format_mean_sd(mean_sd([f[key] for f in figures]), 3) for key in ("kept_f1", "late_f1", "late_auc")]
        print(f"| {combination_name(combo)} | {', '.join(map(str, sorted(per_fold)))} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
