"""The modality ablation: the paper's seven input combinations, trained on the same folds.

Each combination is a separate ensemble (separate weights, as in the paper),
trained with the same settings on the same cached cases and the same
``folds.json``, so the table compares inputs and nothing else. Results go to
``OUT/<combination>/`` (a bundle each) and ``OUT/ablation.csv`` /
``OUT/ablation.md``, the table in the paper's shape: validation macro F1 per
combination, mean ± sd over the folds.

>>> rows = run_ablation(cases, "ablation", TrainingParameters(epochs=50), load=loader)  # doctest: +SKIP
>>> print(ablation_markdown(rows, TrainingParameters()))                               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from RICENetLib import MODALITIES
from RICENetLib.atomic import write_text
from RICENetLib.cohort import Case
from RICENetLib.errors import InputError
from RICENetLib.metrics import format_mean_sd, mean_sd
from RICENetLib.progress import as_progress

from .dataset import CaseLoader, CaseTensors, load_cases, pipeline_loader
from .folds import Folds, check_cohort, folds_for_cohort
from .training import LOADING_SHARE, TrainingParameters, TrainingResult, resolve_device, train_ensemble

#: The paper's rows, in its order.
COMBINATIONS: tuple[tuple[str, ...], ...] = (
    ("postop",), ("event",), ("dose",),
    ("postop", "event"), ("postop", "dose"), ("event", "dose"),
    ("postop", "event", "dose"),
)

_NAMES = {"postop": "MRI post-OP", "event": "MRI event", "dose": "RD map"}


def combination_name(modalities: Sequence[str]) -> str:
    """The paper's row label: ``MRI post-OP only``, ``MRI event + RD map``, ``All three (RICE-NET)``."""
    if tuple(modalities) == MODALITIES:
        return "All three (RICE-NET)"
    if len(modalities) == 1:
        return f"{_NAMES[modalities[0]]} only"
    return " + ".join(_NAMES[m] for m in modalities)


def parse_combinations(text: str) -> list[tuple[str, ...]]:
    """``all`` or ``postop;event+dose;postop+event+dose`` (``+`` or ``,`` inside a combination)."""
    if text.strip().lower() in ("", "all"):
        return list(COMBINATIONS)
    combinations = []
    for part in text.split(";"):
        names = [n.strip().lower() for n in part.replace("+", ",").split(",") if n.strip()]
        unknown = [n for n in names if n not in MODALITIES]
        if unknown or not names:
            raise InputError(f"Combination '{part}': use modality names {', '.join(MODALITIES)} joined by '+'.")
        combinations.append(tuple(m for m in MODALITIES if m in names))
    return combinations


@dataclass
class AblationRow:
    modalities: tuple[str, ...]
    result: TrainingResult

    @property
    def name(self) -> str:
        return combination_name(self.modalities)

    @property
    def fold_f1(self) -> list[float]:
        return [f.metrics["macro_f1"] for f in self.result.folds]

    @property
    def f1(self) -> dict[str, Any]:
        return mean_sd(self.fold_f1)


def run_ablation(
    cases: Sequence[Case],
    out_dir: str | os.PathLike,
    params: TrainingParameters,
    *,
    combinations: Sequence[Sequence[str]] = COMBINATIONS,
    load: CaseLoader | None = None,
    data: CaseTensors | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    folds_file: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress=None,
    cancel=None,
    on_epoch: Optional[Callable[[tuple[str, ...], int, int, dict[str, Any]], None]] = None,
) -> list[AblationRow]:
    """Train every combination (the cohort is loaded once) and write the tables to ``out_dir``.

    ``params.modalities`` and the architecture's channel count are replaced
    per combination; everything else is shared. Resumable like
    :func:`train_ensemble`: finished combinations are only re-read.
    """
    from .ddp import init_from_environment, shutdown

    params.validate()
    report = as_progress(progress, cancel)
    check_cohort(cases, params.n_folds)
    out_dir = Path(out_dir)
    combos = [tuple(m for m in MODALITIES if m in c) for c in combinations]
    variants = [_variant(params, combo) for combo in combos]
    for variant in variants:
        variant.validate()
    for combo in combos:
        bundle = out_dir / "+".join(combo)
        if bundle.exists() and any(bundle.iterdir()) and not (resume or overwrite):
            raise InputError(f"Output {bundle} already exists; choose another folder, resume, or overwrite.")
    context = init_from_environment(resolve_device(params.device))
    try:
        folds: Folds = folds_for_cohort(cases, Path(folds_file) if folds_file else out_dir / "folds.json",
                                        params.n_folds, params.seed)
        if data is None:
            if load is None:
                load, preprocessing = pipeline_loader(preprocessing)
            data = load_cases(cases, load, progress=report.sub(0.0, LOADING_SHARE))
        rows = []
        for number, (combo, variant) in enumerate(zip(combos, variants)):
            name = "+".join(combo)
            share = report.sub(0.05 + 0.95 * number / len(combos), 0.05 + 0.95 * (number + 1) / len(combos))
            callback = None if on_epoch is None else (lambda k, e, row, c=combo: on_epoch(c, k, e, row))
            result = train_ensemble(cases, out_dir / name, variant, data=data, folds=folds, preprocessing=preprocessing,
                                    resume=resume, overwrite=overwrite, context=context, on_epoch=callback,
                                    progress=lambda f, m, s=share, n=name: s(f, f"{n}: {m}"), cancel=report.cancel)
            rows.append(AblationRow(combo, result))
            if context.is_main:
                write_tables(rows, params, out_dir)
        return rows
    finally:
        shutdown(context)


def _variant(params: TrainingParameters, combo: tuple[str, ...]) -> TrainingParameters:
    architecture = None
    if params.architecture is not None:
        architecture = dict(params.architecture, n_input_channels=len(combo))
    return replace(params, modalities=combo, architecture=architecture)


def write_tables(rows: Sequence[AblationRow], params: TrainingParameters, out_dir: Path) -> tuple[Path, Path]:
    write_text(out_dir / "ablation.csv", ablation_csv(rows))
    write_text(out_dir / "ablation.md", ablation_markdown(rows, params))
    return out_dir / "ablation.csv", out_dir / "ablation.md"


def ablation_csv(rows: Sequence[AblationRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["input", "modalities", "val_macro_f1_mean", "val_macro_f1_sd", "folds", "fold_macro_f1",
                     "missing_folds", "bundle"])
    for row in rows:
        f1 = row.f1
        writer.writerow([row.name, "+".join(row.modalities), _number(f1["mean"]), _number(f1["sd"]), f1["n"],
                         ";".join(f"{v:.4f}" for v in row.fold_f1),
                         ";".join(map(str, row.result.missing_folds)), row.result.bundle or ""])
    return buffer.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def ablation_markdown(rows: Sequence[AblationRow], params: TrainingParameters) -> str:
    """The paper's ablation table (validation F1 only: a cross-validation has no test column)."""
    lines = ["| Input modality | Validation macro F1 (mean ± sd over folds) |", "|---|---|"]
    for row in rows:
        cell = format_mean_sd(row.f1)
        if row.result.missing_folds:
            cell += f" (folds {', '.join(map(str, row.result.missing_folds))} not trained yet)"
        lines.append(f"| {row.name} | {cell} |")
    lines.append("")
    lines.append(f"{params.n_folds}-fold cross-validation on the same folds for every row; {params.epochs} epoch(s), "
                 f"learning rate {params.learning_rate:g}, batch size {params.batch_size}, seed {params.seed}; "
                 f"weights kept: {'best validation macro F1' if params.selection == 'best_f1' else 'last epoch'}.")
    return "\n".join(lines) + "\n"
