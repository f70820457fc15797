"""The cohort table: which patient, which label, which three images.

A cohort is a CSV with the columns ``patient_id,label,postop,event,dose``
(paths relative to the CSV's folder, labels ``recurrence``/``rice``), or a
folder holding one sub-folder per patient with a ``label.txt`` and the three
images named ``postop.*``, ``event.*`` and ``dose.*`` (a file or a DICOM folder).
An optional ``lesion`` column (or ``lesion.*`` file) gives a lesion mask for
``ricenet predict``'s dose figures (:mod:`.dose_overlap`); ``paths`` then holds it too.

>>> cases = load_cohort("cohort.csv")                      # doctest: +SKIP
>>> cases[0].paths["dose"]                                 # doctest: +SKIP
PosixPath('/data/cohort/P001/dose.dcm')
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from . import CLASS_NAMES, MODALITIES
from .errors import InputError

COLUMNS = ("patient_id", "label") + MODALITIES

#: A patient id names its output folder (``OUT/<patient_id>/``), so it must be a plain, portable folder name.
PATIENT_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{n}" for p in ("com", "lpt") for n in range(1, 10)}


def check_patient_id(patient: str, where: str) -> str:
    """Refuse an id that is not a safe folder name: ``../x`` or ``/abs`` would send outputs outside ``--out``."""
    if not PATIENT_ID.fullmatch(patient) or patient.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise InputError(f"{where}: patient_id '{patient}' is not usable as a folder name; use 1 to 64 letters, "
                         f"digits, '.', '_' or '-', not starting with '.' (and not a Windows device name such as NUL).")
    return patient


@dataclass(frozen=True)
class Case:
    """One patient: id, label (``None`` when unknown, e.g. for prediction) and image paths."""

    patient_id: str
    label: str | None
    paths: dict[str, Path] = field(hash=False)

    @property
    def label_index(self) -> int:
        if self.label is None:
            raise InputError(f"Patient {self.patient_id} has no label.")
        return CLASS_NAMES.index(self.label)


def parse_label(value: str, where: str) -> str:
    label = value.strip().lower()
    if label not in CLASS_NAMES:
        raise InputError(f"{where}: unknown label '{value}'; use one of {', '.join(CLASS_NAMES)}.")
    return label


def load_cohort(path: str | os.PathLike, require_labels: bool = True) -> list[Case]:
    """Load a cohort CSV or a folder-per-patient directory, validating everything."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Cohort {path} does not exist.")
    cases = _load_folder(path, require_labels) if path.is_dir() else _load_csv(path, require_labels)
    if not cases:
        raise InputError(f"Cohort {path} lists no patients.")
    return cases


def _load_csv(path: Path, require_labels: bool) -> list[Case]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            required = [c for c in COLUMNS if c != "label" or require_labels]
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(
                    f"Cohort table {path} lacks the column(s) {', '.join(missing)}; "
                    f"the header must be {','.join(COLUMNS)}."
                )
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError:
        raise InputError(f"Cohort table {path} is not a UTF-8 text CSV file.") from None
    except csv.Error as error:
        raise InputError(f"Cohort table {path} is not a valid CSV file: {error}") from None
    base = path.parent
    cases = []
    for line, row in enumerate(rows, start=2):
        where = f"Cohort table {path}, line {line}"
        patient = row.get("patient_id", "")
        if not patient:
            raise InputError(f"{where}: empty patient_id.")
        check_patient_id(patient, where)
        label = row.get("label", "")
        label = parse_label(label, f"{where} (patient {patient})") if (label or require_labels) else None
        paths = {}
        for modality in MODALITIES:
            value = row.get(modality, "")
            if not value:
                raise InputError(f"{where} (patient {patient}): no {modality} image given.")
            paths[modality] = _existing(base / value, f"{where} (patient {patient}): {modality} image")
        if row.get("lesion"):
            paths["lesion"] = _existing(base / row["lesion"], f"{where} (patient {patient}): lesion mask")
        cases.append(Case(patient, label, paths))
    _check_unique(cases, f"Cohort table {path}")
    return cases


def _load_folder(path: Path, require_labels: bool) -> list[Case]:
    cases: list[Case] = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        where = f"Cohort folder {path}, patient {folder.name}"
        check_patient_id(folder.name, f"Cohort folder {path}, sub-folder {folder.name}")
        label_file = folder / "label.txt"
        if label_file.exists():
            label = parse_label(label_file.read_text(encoding="utf-8"), where)
        elif require_labels:
            raise InputError(f"{where}: no label.txt (containing 'recurrence' or 'rice').")
        else:
            label = None
        paths = {modality: _find_modality(folder, modality, where) for modality in MODALITIES}
        if any(p.name.split(".")[0] == "lesion" for p in folder.iterdir()):
            paths["lesion"] = _find_modality(folder, "lesion", where)
        cases.append(Case(folder.name, label, paths))
    _check_unique(cases, f"Cohort folder {path}")
    return cases


def _find_modality(folder: Path, modality: str, where: str) -> Path:
    matches = sorted(p for p in folder.iterdir() if p.name.split(".")[0] == modality)
    if not matches:
        raise InputError(f"{where}: no {modality} image ({modality}.nii.gz, {modality}.nrrd, {modality}.dcm or a {modality}/ DICOM folder).")
    if len(matches) > 1:
        raise InputError(f"{where}: several {modality} images ({', '.join(p.name for p in matches)}); keep one.")
    return matches[0]


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{what} {path} does not exist.")
    return path.resolve()


def _check_unique(cases: Sequence[Case], where: str) -> None:
    """Ids are compared ignoring case too: on macOS and Windows P1/ and p1/ are the same folder."""
    seen: dict[str, str] = {}
    for case in cases:
        if case.patient_id in seen.values():
            raise InputError(f"{where}: patient {case.patient_id} appears more than once.")
        other = seen.get(case.patient_id.lower())
        if other is not None:
            raise InputError(f"{where}: patients {other} and {case.patient_id} differ only in upper/lower case; "
                             f"their output folders would be one on macOS and Windows: rename one.")
        seen[case.patient_id.lower()] = case.patient_id


def write_cohort_csv(path: str | os.PathLike, cases: Iterable[Case]) -> Path:
    """Write a cohort CSV with paths relative to its folder (atomically)."""
    from .atomic import atomic_path

    path = Path(path)
    base = path.parent.resolve()
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for case in cases:
            rel = [os.path.relpath(Path(case.paths[m]).resolve(), base) for m in MODALITIES]
            writer.writerow([case.patient_id, case.label or ""] + rel)
    return path
