"""Review mode: a list of cases to click through, and the reviewer's call on each, kept in a CSV.

A list opens from a results folder written by ``ricenet predict --cohort``
(``predictions.csv`` and one folder per case holding ``prediction.json``,
``occlusion.nii.gz``, ``registration.tfm``) or from a cohort table (CSV or
folder, as ``ricenet predict --cohort`` reads it; its cases have no stored
results and go through the engine when shown). A case that failed in the batch
keeps its error and the list goes on.

The reviewer's calls go to a review table beside the results
(``review.csv`` in a results or cohort folder, ``<cohort>.review.csv`` beside a
cohort CSV): one row per case with the call (agree, disagree, unsure), a
note, the reviewer's name and the time (ISO 8601, UTC). It is rewritten
atomically on every change (temporary file, then rename), so a crash leaves
the previous table, and it is read again when the list is reopened. A file
that is not such a table is refused with a message and never overwritten.

No Qt and no MRML here: :mod:`RICENetLib.review_scene` shows a case in a scene.

>>> review = ReviewList.open("results/")                          # doctest: +SKIP
>>> case = review.current                                         # doctest: +SKIP
>>> review.record(case.case_id, "agree", note="heatmap on the lesion", reviewer="A. Smith")  # doctest: +SKIP
>>> review.next()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import MODALITIES
from .atomic import write_text
from .errors import InputError

CALLS = ("agree", "disagree", "unsure")
REVIEW_COLUMNS = ("case_id", "call", "note", "reviewer", "time")
REVIEW_NAME = "review.csv"
RESULTS_TABLE = "predictions.csv"


@dataclass(frozen=True)
class ReviewCall:
    """What the reviewer said about one case."""

    call: str = ""  # "" (not reviewed yet) or one of CALLS
    note: str = ""
    reviewer: str = ""
    time: str = ""  # ISO 8601, UTC


@dataclass
class ReviewCase:
    """One row of the review list: the batch's answer (if any) and where its files are."""

    case_id: str
    label: str = ""  # predicted class; "" when not computed or failed
    verdict: str = ""
    mean_probability: float | None = None  # of the predicted class
    agreement: str = ""
    calibrated_probability: float | None = None  # of the predicted class, when the bundle is calibrated
    quality: str = ""  # worst quality gate: pass / warn / fail, or "" when unknown
    heatmap_in_high_dose: float | None = None  # share of the heatmap's mass in the highest isodose (dose_overlap)
    error: str = ""
    inputs: dict[str, Path] = field(default_factory=dict)  # postop, event, dose (and lesion) files
    results: Path | None = None  # the case's results folder, when it holds prediction.json

    @property
    def stored(self) -> bool:
        """True when the case has results on disk (shown without running the engine)."""
        return self.results is not None and not self.error

    def prediction(self) -> dict[str, Any]:
        """The stored ``prediction.json`` (read again each time: the list keeps no case's data in memory)."""
        if self.results is None:
            raise InputError(f"Case {self.case_id} has no stored results.")
        return _read_prediction(self.results / "prediction.json")


@dataclass
class StoredPrediction:
    """A prediction read back from a results folder, in the shape the module's logic shows.

    It answers what :meth:`RICENetLib.slicer_logic.ClassificationLogic.show`
    asks of an ``EnsemblePrediction`` (the JSON fields, the heatmap, the
    registration, the quality record), so stored results go through the same
    display code as a fresh run.
    """

    data: dict[str, Any]
    occlusion: Any = None  # sitk.Image, reference space
    event_to_reference: Any = None  # sitk.Transform (ITK convention: reference → event)

    def __getattr__(self, name: str) -> Any:  # label, probabilities, votes, agreement, folds, ...
        if name.startswith("_") or name == "data":
            raise AttributeError(name)
        return self.data.get(name)

    @property
    def preprocessed(self) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(info={"quality": self.data.get("quality")})

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


def load_stored(case: "ReviewCase") -> StoredPrediction:
    """The case's stored prediction with its heatmap and registration (each present only if the batch wrote it)."""
    import SimpleITK as sitk

    from .image_io import read_image

    data = case.prediction()
    folder = case.results
    heatmap = folder / "occlusion.nii.gz"
    transform = folder / "registration.tfm"
    try:
        return StoredPrediction(data, read_image(heatmap) if heatmap.is_file() else None,
                                sitk.ReadTransform(str(transform)) if transform.is_file() else None)
    except RuntimeError as error:  # SimpleITK's reader
        raise InputError(f"Case {case.case_id}: the stored results in {folder} cannot be read: {error}") from None


def _read_prediction(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path} cannot be read as a prediction: {error}") from None
    if not isinstance(data, dict) or not {"label", "probabilities", "agreement"} <= set(data):
        raise InputError(f"{path} is not a RICE-NET prediction.json (label, probabilities, agreement are missing).")
    return data


def case_from_results(case_id: str, folder: Path) -> ReviewCase:
    """A case from its results folder; an unreadable ``prediction.json`` becomes the case's error."""
    try:
        data = _read_prediction(folder / "prediction.json")
    except InputError as error:
        return ReviewCase(case_id, error=str(error))
    from .quality import report_of
    from .report import prediction_verdict

    label = str(data["label"])
    calibrated = data.get("calibrated_probability") or {}
    report = report_of(data)
    levels = (data.get("dose_overlap") or {}).get("levels") or [{}]
    inputs = {name: Path(value) for name, value in (data.get("inputs") or {}).items()
              if name in MODALITIES and value and not str(value).startswith("(")}
    return ReviewCase(case_id, label=label, verdict=prediction_verdict(data),
                      mean_probability=_number(data["probabilities"].get(label)), agreement=str(data["agreement"]),
                      calibrated_probability=_number(calibrated.get(label)), quality=report.worst if report else "",
                      heatmap_in_high_dose=_number(levels[-1].get("share")), inputs=inputs, results=folder)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _results_cases(folder: Path) -> list[ReviewCase]:
    """The cases of a ``ricenet predict --cohort`` folder, in its table's order (a failed row keeps its error)."""
    table = folder / RESULTS_TABLE
    if not table.is_file():  # a batch still running: the case folders written so far
        ids = sorted(p.name for p in folder.iterdir() if (p / "prediction.json").is_file())
        return [case_from_results(i, folder / i) for i in ids]
    try:
        with open(table, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"Results table {table} cannot be read: {error}") from None
    if rows and "patient_id" not in rows[0]:
        raise InputError(f"Results table {table} has no patient_id column; is it a `ricenet predict --cohort` table?")
    cases = []
    for row in rows:
        case_id = (row.get("patient_id") or "").strip()
        if row.get("error"):
            cases.append(ReviewCase(case_id, error=row["error"]))
        else:
            cases.append(case_from_results(case_id, folder / case_id))
    return cases


def _cohort_cases(path: Path) -> list[ReviewCase]:
    from .cohort import load_cohort

    return [ReviewCase(c.patient_id, inputs=dict(c.paths)) for c in load_cohort(path, require_labels=False)]


def review_path(source: str | os.PathLike) -> Path:
    """Where the review table of a list lives: ``review.csv`` in a folder, ``<name>.review.csv`` beside a CSV."""
    source = Path(source)
    return source / REVIEW_NAME if source.is_dir() else source.with_name(f"{source.stem}.review.csv")


def read_review_table(path: Path) -> dict[str, ReviewCall]:
    """The calls in a review table; a file that is not one is an :class:`InputError` (and is left alone)."""
    if not path.exists():
        return {}
    refuse = (f"Review table {path}: {{}}. It was left as it is; move it away (or choose another list) "
              "and open the list again.")
    try:
        text = path.read_text(encoding="utf-8-sig")
        rows = list(csv.reader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(refuse.format(f"cannot be read ({error})")) from None
    if not rows or tuple(c.strip() for c in rows[0]) != REVIEW_COLUMNS:
        raise InputError(refuse.format(f"its header is not {','.join(REVIEW_COLUMNS)}, so it is not a RICE-NET "
                                       "review table"))
    calls: dict[str, ReviewCall] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(REVIEW_COLUMNS):
            raise InputError(refuse.format(f"line {number} has {len(row)} fields instead of {len(REVIEW_COLUMNS)} "
                                           "(a damaged file?)"))
        case_id, call, note, reviewer, time = row
        if call not in CALLS + ("",):
            raise InputError(refuse.format(f"line {number}: call '{call}' is not one of {', '.join(CALLS)}"))
        calls[case_id] = ReviewCall(call, note, reviewer, time)
    return calls


def review_table_text(calls: Mapping[str, ReviewCall], order: Sequence[str]) -> str:
    """The CSV text: the list's cases in order, then rows for ids the list no longer holds (kept, not dropped)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REVIEW_COLUMNS)
    ids = [i for i in order if i in calls] + sorted(set(calls) - set(order))
    for case_id in ids:
        c = calls[case_id]
        writer.writerow([case_id, c.call, c.note, c.reviewer, c.time])
    return buffer.getvalue()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ReviewList:
    """The cases of one list, the position in it, and the reviewer's calls (saved on every change)."""

    def __init__(self, source: Path, cases: list[ReviewCase], review_file: Path,
                 calls: dict[str, ReviewCall] | None = None, clock: Callable[[], str] = _now) -> None:
        if not cases:
            raise InputError(f"{source} lists no cases to review.")
        self.source, self.cases, self.review_file = source, cases, review_file
        self.calls: dict[str, ReviewCall] = dict(calls or {})
        self.position = 0
        self._clock = clock

    @classmethod
    def open(cls, source: str | os.PathLike, clock: Callable[[], str] = _now) -> "ReviewList":
        """Open a results folder (it holds ``predictions.csv`` or case folders with ``prediction.json``) or a cohort."""
        source = Path(source)
        if not source.exists():
            raise InputError(f"Case list {source} does not exist.")
        results = source.is_dir() and ((source / RESULTS_TABLE).is_file()
                                       or any((p / "prediction.json").is_file() for p in source.iterdir()))
        cases = _results_cases(source) if results else _cohort_cases(source)
        review_file = review_path(source)
        return cls(source, cases, review_file, read_review_table(review_file), clock)

    # -- moving -----------------------------------------------------------
    @property
    def current(self) -> ReviewCase:
        return self.cases[self.position]

    def go(self, position: int) -> ReviewCase:
        if not 0 <= position < len(self.cases):
            raise InputError(f"Case number {position + 1} is outside the list (1 to {len(self.cases)}).")
        self.position = position
        return self.current

    def next(self) -> ReviewCase | None:
        """The next case, or None at the end (the position stays)."""
        return self.go(self.position + 1) if self.position + 1 < len(self.cases) else None

    def previous(self) -> ReviewCase | None:
        return self.go(self.position - 1) if self.position > 0 else None

    # -- calls ------------------------------------------------------------
    def call_of(self, case_id: str) -> ReviewCall:
        return self.calls.get(case_id, ReviewCall())

    def record(self, case_id: str, call: str | None = None, *, note: str | None = None,
               reviewer: str | None = None) -> ReviewCall:
        """Set a case's call and/or note and save the table at once; unchanged parts stay as they were."""
        if case_id not in {c.case_id for c in self.cases}:
            raise InputError(f"Case {case_id} is not in the list {self.source}.")
        if call is not None and call not in CALLS + ("",):
            raise InputError(f"Review call '{call}': use one of {', '.join(CALLS)}.")
        before = self.call_of(case_id)
        changes = {k: v for k, v in (("call", call), ("note", note), ("reviewer", reviewer)) if v is not None}
        after = replace(before, **changes)
        if after == before:
            return before
        after = replace(after, time=self._clock())
        calls = dict(self.calls)
        calls[case_id] = after
        write_text(self.review_file, review_table_text(calls, [c.case_id for c in self.cases]))
        self.calls = calls  # only once the file holds it
        return after

    # -- the table the widget shows ----------------------------------------
    def rows(self) -> list[dict[str, str]]:
        """One dict per case, the columns of the review table in the module (text, ready to show)."""
        def two_places(value: float | None) -> str:
            return "" if value is None else f"{value:.2f}"

        out = []
        for case in self.cases:
            call = self.call_of(case.case_id)
            out.append({"case": case.case_id, "verdict": case.label or ("failed" if case.error else "not computed"),
                        "mean p": two_places(case.mean_probability), "agreement": case.agreement,
                        "calibrated p": two_places(case.calibrated_probability), "quality": case.quality,
                        "heatmap in high dose": "" if case.heatmap_in_high_dose is None
                        else f"{100 * case.heatmap_in_high_dose:.0f} %",
                        "call": call.call, "note": call.note, "error": case.error})
        return out


__all__ = ["CALLS", "REVIEW_COLUMNS", "ReviewCall", "ReviewCase", "ReviewList", "StoredPrediction", "case_from_results", "load_stored",
           "read_review_table", "review_path", "review_table_text"]
