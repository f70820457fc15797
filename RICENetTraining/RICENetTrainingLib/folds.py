"""Cross-validation folds: patient level, stratified by label, fixed by a seed, saved once.

The paper keeps the five folds identical across every modality experiment, so
that the ablation compares models, not splits. The folds are therefore made
once per cohort, written to ``folds.json`` (beside the cohort table by
default) and reused by every later ``train`` and ``ablate`` run; a copy goes
into each bundle.

>>> folds = make_folds(cases, n_folds=5, seed=0)               # doctest: +SKIP
>>> folds.validation_ids(0), folds.train_ids(0)                # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from RICENetLib import CLASS_NAMES
from RICENetLib.atomic import write_json
from RICENetLib.cohort import Case
from RICENetLib.errors import InputError

FOLDS_FORMAT = "ricenet-folds"
FOLDS_FORMAT_VERSION = 1
FOLDS_FILE_NAME = "folds.json"


@dataclass(frozen=True)
class Folds:
    """Validation patients of each fold; a patient's training folds are all the others."""

    validation: tuple[tuple[str, ...], ...]
    labels: dict[str, str]
    seed: int

    @property
    def n_folds(self) -> int:
        return len(self.validation)

    @property
    def patients(self) -> list[str]:
        return sorted(self.labels)

    def validation_ids(self, fold: int) -> list[str]:
        self._check_index(fold)
        return list(self.validation[fold])

    def train_ids(self, fold: int) -> list[str]:
        self._check_index(fold)
        held_out = set(self.validation[fold])
        return [p for p in self.patients if p not in held_out]

    def _check_index(self, fold: int) -> None:
        if not 0 <= fold < self.n_folds:
            raise InputError(f"Fold {fold} does not exist; the folds are numbered 0 to {self.n_folds - 1}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FOLDS_FORMAT,
            "format_version": FOLDS_FORMAT_VERSION,
            "n_folds": self.n_folds,
            "seed": self.seed,
            "stratified_by": "label",
            "folds": [{"index": k, "validation_patients": list(ids)} for k, ids in enumerate(self.validation)],
            "labels": dict(sorted(self.labels.items())),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Folds":
        """Rebuild from :meth:`to_dict` output, checking it as untrusted input."""
        if not isinstance(data, dict) or data.get("format") != FOLDS_FORMAT:
            raise InputError(f"{where} is not a RICE-NET folds file.")
        if data.get("format_version") != FOLDS_FORMAT_VERSION:
            raise InputError(f"{where} has folds format version {data.get('format_version')!r}; "
                             f"this version reads {FOLDS_FORMAT_VERSION}.")
        try:
            labels = {str(k): str(v) for k, v in data["labels"].items()}
            validation = tuple(tuple(str(p) for p in fold["validation_patients"]) for fold in data["folds"])
            seed = int(data.get("seed", 0))
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise InputError(f"{where} is malformed ({error!r}).") from None
        folds = cls(validation, labels, seed)
        _check_partition(folds, where)
        return folds


def _check_partition(folds: Folds, where: str) -> None:
    seen: dict[str, int] = {}
    for k, ids in enumerate(folds.validation):
        for patient in ids:
            if patient in seen:
                raise InputError(f"{where}: patient {patient} is in folds {seen[patient]} and {k}.")
            seen[patient] = k
    if set(seen) != set(folds.labels):
        raise InputError(f"{where}: the folds and the label list name different patients.")


def check_cohort(cases: Sequence[Case], n_folds: int, where: str = "The cohort") -> None:
    """Refuse a cohort that cannot be cross-validated, before anything expensive starts."""
    if n_folds < 2:
        raise InputError(f"Cross-validation needs at least 2 folds (asked for {n_folds}).")
    unlabelled = [c.patient_id for c in cases if c.label is None]
    if unlabelled:
        raise InputError(f"{where}: patient(s) {', '.join(unlabelled[:5])} have no label; training needs every label.")
    if len(cases) < n_folds:
        raise InputError(f"{where} has {len(cases)} patient(s), fewer than the {n_folds} folds asked for; "
                         "add patients or use fewer folds.")
    counts = Counter(c.label for c in cases)
    if len(counts) < 2:
        (only, number), = counts.items()
        raise InputError(f"{where} has only '{only}' patients ({number}); training needs both "
                         f"{' and '.join(CLASS_NAMES)} cases.")
    for label in CLASS_NAMES:
        if counts[label] < n_folds:
            raise InputError(
                f"{where} has {counts[label]} '{label}' patient(s) for {n_folds} folds: some validation folds "
                f"would hold no '{label}' case and their macro F1 would be meaningless. "
                f"Use at most {min(counts.values())} folds or add patients.")


def make_folds(cases: Sequence[Case], n_folds: int = 5, seed: int = 0) -> Folds:
    """Stratified patient-level folds.

    Each class's patients (sorted, then shuffled with ``seed``) are dealt round
    robin, the second class continuing where the first stopped, so that fold
    sizes differ by at most one and class ratios match the cohort's. The
    result depends only on the patient ids, labels and seed, not on row order.
    """
    check_cohort(cases, n_folds)
    rng = random.Random(seed)
    validation: list[list[str]] = [[] for _ in range(n_folds)]
    slot = 0
    for label in CLASS_NAMES:
        ids = sorted(c.patient_id for c in cases if c.label == label)
        rng.shuffle(ids)
        for patient in ids:
            validation[slot % n_folds].append(patient)
            slot += 1
    return Folds(tuple(tuple(sorted(ids)) for ids in validation),
                 {c.patient_id: str(c.label) for c in cases}, int(seed))


def load_folds(path: str | os.PathLike) -> Folds:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Folds file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"Folds file {path} cannot be read: {error}") from None
    return Folds.from_dict(data, f"Folds file {path}")


def save_folds(folds: Folds, path: str | os.PathLike) -> Path:
    write_json(path, folds.to_dict())
    return Path(path)


def default_folds_path(cohort: str | os.PathLike) -> Path:
    """``folds.json`` in the cohort's folder (the CSV's folder, or the folder-per-patient root)."""
    cohort = Path(cohort)
    return (cohort if cohort.is_dir() else cohort.parent) / FOLDS_FILE_NAME


def folds_for_cohort(cases: Sequence[Case], path: str | os.PathLike, n_folds: int = 5, seed: int = 0) -> Folds:
    """The cohort's saved folds, made and saved on first use.

    An existing file is reused whatever ``seed`` says (the point is that all
    experiments share one split), but it must describe exactly this cohort.
    """
    path = Path(path)
    check_cohort(cases, n_folds)
    if not path.exists():
        # Parallel ``--fold k`` jobs may all get here: they write identical content atomically.
        folds = make_folds(cases, n_folds, seed)
        save_folds(folds, path)
        return folds
    folds = load_folds(path)
    where = f"Folds file {path}"
    if folds.n_folds != n_folds:
        raise InputError(f"{where} has {folds.n_folds} folds but {n_folds} were asked for; "
                         f"ask for {folds.n_folds}, or pass another folds file.")
    cohort = {c.patient_id: c.label for c in cases}
    missing = sorted(set(cohort) - set(folds.labels))
    extra = sorted(set(folds.labels) - set(cohort))
    changed = sorted(p for p in set(cohort) & set(folds.labels) if cohort[p] != folds.labels[p])
    if missing or extra or changed:
        details = [f"{what}: {_some(ids)}" for what, ids in
                   (("not in it", missing), ("not in the cohort", extra), ("label changed", changed)) if ids]
        raise InputError(f"{where} was made for another cohort ({'; '.join(details)}). "
                         "Delete it to make new folds, or pass another folds file.")
    return folds



def _some(ids: list[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (" ..." if len(ids) > limit else "")
