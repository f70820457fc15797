"""Quality gates: how much a case's verdict deserves, computed during preprocessing and shown with it.

A verdict is only as good as its inputs. Each gate measures one thing a
clinician can check, compares it with a threshold that has a reason, and
says in one sentence what it found:

``registration_overlap``
    Dice overlap of the post-op brain mask with the event MRI's own brain mask
    carried into the post-op space by the registration. Both scans are the
    same brain months apart: a good rigid registration puts one brain onto the
    other (Dice 0.98 on normal synthetic cases, see the thresholds), a
    wrong one, or an event MRI that is not this head, does not.
``registration_metric``
    The registration's final Mattes mutual information (negated: lower = more
    shared information). Weaker evidence than the overlap, so it only warns.
``brain_volume``
    The post-op brain mask's volume: a mask far from an adult brain means the
    "MRI" is not a head MRI (a pelvis CT, a cropped slab) or skull stripping failed.
``dose_coverage``
    The fraction of the brain inside the dose grid. Resampling puts 0 Gy
    outside the grid, so a grid that misses part of the brain would silently
    tell the model that part was not irradiated.
``dose_maximum``
    The dose maximum relative to the prescription the bundle normalises by:
    the model sees dose / prescription, so a 40 Gy plan read against 60 Gy, or
    a single fraction, gives it an input unlike any it learnt from.
``out_of_distribution``
    Computed at prediction, not here (:mod:`.ood`): the network's pooled
    features of the case against the training cohort's, as a percentile of the
    training patients' own out-of-fold distances.

States: ``pass``, ``warn`` (shown, the verdict stands), ``fail`` (the verdict
is still computed but marked not to be trusted: its line starts with
``Not reliable: ...``). Nothing is refused here: refusing is for inputs that
cannot be processed at all (:mod:`.errors`), and a failed gate is more useful
to a reader shown next to the answer than hidden behind an error.

>>> report = QualityReport((dose_coverage_gate(0.5),))
>>> report.worst
'fail'
>>> report.verdict_prefix()
'Not reliable: dose grid misses part of the brain (brain inside the dose grid 0.50)'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import SimpleITK as sitk

from .errors import InputError, PreprocessingError

STATES = ("pass", "warn", "fail")
#: Every gate a full preprocessing run computes, in display order.
PREPROCESSING_GATES = ("registration_overlap", "registration_metric", "brain_volume", "dose_coverage", "dose_maximum")
#: Every gate of a prediction: preprocessing's, then the network's own view of the case (:mod:`.ood`).
GATE_NAMES = PREPROCESSING_GATES + ("out_of_distribution",)

# Thresholds. Measured with `python benchmarks/quality_gates.py` (seeds 1-6, 64-voxel synthetic cases, deepbet,
# 3 mm grid; 2026-12-02). Normal cases: brain overlap 0.979-0.982, Mattes metric -1.145 to -0.984, brain mask
# 1950-1980 ml (the MNI template's brain is large), dose coverage 0.999-1.000, dose max / prescription 1.02-1.06
# (0.71 for the 40.05 Gy plan read against 60 Gy). Faults: registration + 30 mm shift: overlap 0.689-0.694;
# a pelvis-like body as the event MRI: overlap 0.45-0.61, metric -0.19 to -0.15 (its registration passed the
# convergence check for 2 of 6 seeds; the other 4 are refused by it); dose grid cropped to the upper half of the
# head: coverage 0.48-0.63. A brain (radius ~70 mm) shifted by d keeps a Dice of about 1 - 3d / (4 * 70 mm):
# 0.90 is ~9 mm off, 0.80 ~19 mm (the 30 mm shift measured 0.69, as this predicts).
#: Brain overlap (Dice): below WARN questionable (a few mm off), below FAIL the brains do not coincide.
OVERLAP_WARN = 0.90
OVERLAP_FAIL = 0.80
#: Mattes metric (negated MI): above this the two scans share little information (warn only).
METRIC_WARN = -0.4
#: Adult brain volumes (ml): outside the pass range warn; outside the fail range it is not a brain.
BRAIN_ML_PASS = (700.0, 2300.0)
BRAIN_ML_FAIL = (300.0, 2600.0)
#: Fraction of brain voxels inside the dose grid.
COVERAGE_WARN = 0.95
COVERAGE_FAIL = 0.75
#: Dose maximum / prescription: ICRU 50/62 keeps the target within 95-107 %, hot spots rarely above 110 %.
DOSE_MAX_PASS = (0.8, 1.3)
DOSE_MAX_FAIL = (0.5, 2.0)

#: What a reader calls each measure.
LABELS = {"registration_overlap": "brain overlap", "registration_metric": "Mattes metric",
          "brain_volume": "brain volume", "dose_coverage": "brain inside the dose grid",
          "dose_maximum": "dose maximum / prescription",
          "out_of_distribution": "distance from the training cohort:"}


def ordinal(value: float) -> str:
    """``62nd``, ``11th``, ``1st``: a rounded number as English reads it."""
    n = int(round(value))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class Gate:
    """One check: its state, the number it rests on, the threshold and a sentence saying what was found."""

    name: str
    state: str
    value: Optional[float]
    unit: str
    threshold: str
    message: str
    #: Short words for the verdict line, e.g. "registration failed".
    headline: str = ""

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise InputError(f"Quality gate {self.name}: unknown state '{self.state}'; use one of {', '.join(STATES)}.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.value is not None and not math.isfinite(self.value):
            data["value"] = None  # JSON has no NaN
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Gate":
        try:
            value = data["value"]
            return cls(name=str(data["name"]), state=str(data["state"]), value=None if value is None else float(value),
                       unit=str(data["unit"]), threshold=str(data["threshold"]), message=str(data["message"]),
                       headline=str(data.get("headline", "")))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"Invalid quality gate record {dict(data)!r}: {error}") from None

    def short(self) -> str:
        """``0.93 Dice`` (the number as a reader sees it)."""
        if self.value is None:
            return "not measured"
        if self.unit == "percentile":
            return f"{ordinal(self.value)} percentile"
        return f"{self.value:.0f} {self.unit}" if abs(self.value) >= 100 else f"{self.value:.2f} {self.unit}"

    def label(self) -> str:
        """``brain overlap 0.41`` (what the verdict line names)."""
        text = self.short() if self.unit in ("ml", "percentile") else self.short().removesuffix(" " + self.unit)
        return f"{LABELS.get(self.name, self.name)} {text}"


@dataclass(frozen=True)
class QualityReport:
    """The gates of one case; ``worst`` is what a table column or a colour shows."""

    gates: tuple[Gate, ...]

    @property
    def worst(self) -> str:
        states = [g.state for g in self.gates] or ["pass"]
        return max(states, key=STATES.index)

    def gate(self, name: str) -> Optional[Gate]:
        return next((g for g in self.gates if g.name == name), None)

    def verdict_prefix(self) -> str:
        """``Not reliable: registration failed (brain overlap 0.41)`` for failed gates, else ``""``."""
        failed = [g for g in self.gates if g.state == "fail"]
        if not failed:
            return ""
        return "Not reliable: " + "; ".join(f"{g.headline or g.name} ({g.label()})" for g in failed)

    def summary(self) -> str:
        """One line per gate, for the CLI: ``[warn] dose_maximum: 0.69 × prescription — ...``."""
        return "\n".join(f"[{g.state}] {g.name}: {g.message}" for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {"worst": self.worst, "gates": [g.to_dict() for g in self.gates]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QualityReport":
        gates = data.get("gates") if isinstance(data, Mapping) else None
        if not isinstance(gates, list):
            raise InputError(f"Invalid quality record {data!r}: it needs a list of gates.")
        return cls(tuple(Gate.from_dict(g) for g in gates))


def _state(fail: bool, warn: bool) -> str:
    return "fail" if fail else "warn" if warn else "pass"


def _range_state(value: float, passing: tuple[float, float], failing: tuple[float, float]) -> str:
    """pass inside ``passing``, fail outside ``failing`` (the wider range), warn between."""
    return _state(not failing[0] <= value <= failing[1], not passing[0] <= value <= passing[1])


# --------------------------------------------------------------------------- measures


def brain_overlap(reference_mask: sitk.Image, event_mask: Optional[sitk.Image],
                  event_to_reference: sitk.Transform) -> float:
    """Dice of ``reference_mask`` with ``event_mask`` carried onto its grid by the registration.

    ``event_to_reference`` maps reference points to event points (ITK's
    convention, as :func:`.registration.register_rigid` returns it), so one
    nearest-neighbour resampling of the event mask through it lands on the
    reference grid. ``None`` (no brain found in the event MRI) gives 0.
    """
    from .skull_strip import dice

    if event_mask is None:
        return 0.0
    carried = sitk.Resample(sitk.Cast(event_mask, sitk.sitkUInt8), reference_mask, event_to_reference,
                            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return dice(reference_mask, carried)


def event_brain_mask(event: sitk.Image, spacing_mm: float, backend: str,
                     name: str = "event MRI") -> tuple[Optional[sitk.Image], str]:
    """The event MRI's brain mask on its own isotropic grid, or ``None`` and why (never raises for no brain).

    The same backend as the post-op mask; a volume in which it finds no brain
    is exactly what the overlap gate is there to report.
    """
    from .resampling import resample_isotropic
    from .skull_strip import skull_strip

    try:
        return skull_strip(resample_isotropic(event, spacing_mm), backend, name=name), ""
    except PreprocessingError as error:
        return None, str(error)


def dose_coverage(dose: sitk.Image, brain_mask: sitk.Image) -> float:
    """Fraction of ``brain_mask``'s voxels whose centres lie inside ``dose``'s grid (before 0 Gy fills outside)."""
    from .resampling import Geometry, fraction_inside

    return fraction_inside(brain_mask, Geometry.from_image(dose))


# --------------------------------------------------------------------------- gates


def registration_overlap_gate(overlap: float, reason: str = "") -> Gate:
    """The brain-overlap gate from a Dice value (:func:`brain_overlap`); ``reason``: why no event brain was found."""
    state = _state(overlap < OVERLAP_FAIL, overlap < OVERLAP_WARN)
    threshold = f"pass ≥ {OVERLAP_WARN:.2f}, fail < {OVERLAP_FAIL:.2f}"
    if reason:
        message = f"No brain was found in the event MRI ({reason.rstrip('.')}), so the registration cannot be checked."
    elif state == "pass":
        message = f"The registered event brain overlaps the post-op brain with Dice {overlap:.2f}."
    elif state == "warn":
        message = (f"The registered event brain overlaps the post-op brain with Dice {overlap:.2f} only; check the "
                   "registration on the images.")
    else:
        message = (f"The registered event brain overlaps the post-op brain with Dice {overlap:.2f}: the registration "
                   "failed or the event MRI is not this patient's head.")
    return Gate("registration_overlap", state, float(overlap), "Dice", threshold, message,
                "registration failed" if state == "fail" else "registration questionable")


def registration_metric_gate(metric: float) -> Gate:
    """The final Mattes metric of the registration (warn only: the overlap is the stronger evidence)."""
    finite = metric is not None and math.isfinite(metric)
    state = "warn" if not finite or metric > METRIC_WARN else "pass"
    threshold = f"pass ≤ {METRIC_WARN:g} (negated mutual information; lower = more shared)"
    if not finite:
        message = "The registration's Mattes metric could not be evaluated."
    elif state == "pass":
        message = f"The registered scans share information as expected (Mattes metric {metric:.2f})."
    else:
        message = (f"The registered scans share little information (Mattes metric {metric:.2f}); is the event MRI "
                   "a T1c of the same head?")
    return Gate("registration_metric", state, float(metric) if finite else None, "Mattes MI", threshold, message,
                "registration questionable")


def brain_volume_gate(volume_ml: float) -> Gate:
    """The post-op brain mask's volume against adult brains."""
    state = _range_state(volume_ml, BRAIN_ML_PASS, BRAIN_ML_FAIL)
    fail = state == "fail"
    threshold = (f"pass {BRAIN_ML_PASS[0]:.0f}–{BRAIN_ML_PASS[1]:.0f} ml, "
                 f"fail outside {BRAIN_ML_FAIL[0]:.0f}–{BRAIN_ML_FAIL[1]:.0f} ml")
    if state == "pass":
        message = f"The post-op brain mask holds {volume_ml:.0f} ml, an adult brain."
    else:
        message = (f"The post-op brain mask holds {volume_ml:.0f} ml, {'far ' if fail else ''}outside adult brains; "
                   "is the post-op image a head MRI, and did skull stripping work?")
    return Gate("brain_volume", state, float(volume_ml), "ml", threshold, message,
                "not a brain" if fail else "unusual brain volume")


def dose_coverage_gate(fraction: float) -> Gate:
    """The fraction of the brain inside the dose grid (see :func:`dose_coverage`)."""
    state = _state(fraction < COVERAGE_FAIL, fraction < COVERAGE_WARN)
    threshold = f"pass ≥ {COVERAGE_WARN:.2f}, fail < {COVERAGE_FAIL:.2f}"
    if state == "pass":
        message = f"The dose grid covers {100 * fraction:.0f} % of the brain."
    else:
        message = (f"The dose grid covers only {100 * fraction:.0f} % of the brain; the rest is read as 0 Gy. Export "
                   "the dose on a grid that covers the whole head.")
    return Gate("dose_coverage", state, float(fraction), "fraction", threshold, message,
                "dose grid misses part of the brain")


def dose_maximum_gate(max_gy: float, prescription_gy: float) -> Gate:
    """The dose maximum over the prescription the model normalises by."""
    ratio = float(max_gy) / float(prescription_gy)
    state = _range_state(ratio, DOSE_MAX_PASS, DOSE_MAX_FAIL)
    fail = state == "fail"
    threshold = (f"pass {DOSE_MAX_PASS[0]:g}–{DOSE_MAX_PASS[1]:g} × prescription, "
                 f"fail outside {DOSE_MAX_FAIL[0]:g}–{DOSE_MAX_FAIL[1]:g}")
    if state == "pass":
        message = f"The dose maximum {max_gy:.1f} Gy is {ratio:.2f} × the {prescription_gy:g} Gy prescription."
    else:
        message = (f"The dose maximum {max_gy:.1f} Gy is {ratio:.2f} × the {prescription_gy:g} Gy prescription the "
                   "model expects; is this the cumulative plan dose, in Gy, of a plan like the training cohort's?")
    return Gate("dose_maximum", state, ratio, "× prescription", threshold, message,
                "dose implausible for the prescription" if fail else "dose unlike the prescription")


def assess_case(*, reference_mask: sitk.Image, event_mask: Optional[sitk.Image], event_mask_reason: str,
                event_to_reference: sitk.Transform, registration_metric: float, brain_volume_ml: float,
                dose_gy: sitk.Image, prescription_gy: float) -> QualityReport:
    """Every gate of one case from what preprocessing has at hand (masks on isotropic grids, the dose in Gy)."""
    overlap = brain_overlap(reference_mask, event_mask, event_to_reference)
    peak = float(sitk.GetArrayViewFromImage(dose_gy).max())
    return QualityReport((
        registration_overlap_gate(overlap, event_mask_reason if event_mask is None else ""),
        registration_metric_gate(registration_metric),
        brain_volume_gate(brain_volume_ml),
        dose_coverage_gate(dose_coverage(dose_gy, reference_mask)),
        dose_maximum_gate(peak, prescription_gy),
    ))


def with_gate(report: Optional[QualityReport], gate: Gate) -> QualityReport:
    """``report`` with ``gate`` replacing its namesake, or added at the end (``None``: a report of that gate alone)."""
    gates = tuple(g for g in (report.gates if report else ()) if g.name != gate.name)
    return QualityReport(gates + (gate,))


def report_of(prediction: Any) -> Optional[QualityReport]:
    """The quality report a prediction carries (its preprocessing result's, or a ``quality`` key), else ``None``."""
    if isinstance(prediction, Mapping):
        record = prediction.get("quality")
    else:
        record = getattr(getattr(prediction, "preprocessed", None), "info", {}).get("quality")
    if isinstance(record, QualityReport):
        return record
    return QualityReport.from_dict(record) if record else None


def attach(data: dict[str, Any], prediction: Any) -> dict[str, Any]:
    """``data`` (a prediction's ``to_dict()``) with the ``quality`` record of ``prediction`` added when it has one."""
    report = report_of(prediction)
    if report is not None:
        data["quality"] = report.to_dict()
    return data


def csv_columns(report: Optional[QualityReport]) -> dict[str, str]:
    """``quality`` (the worst state) and ``quality_<gate>`` (each gate's state) for a cohort table; ``""``: unknown."""
    columns = {"quality": report.worst if report else "not computed"}
    for name in GATE_NAMES:
        gate = report.gate(name) if report else None
        columns[f"quality_{name}"] = gate.state if gate else ""
    return columns


def table_rows(report: Optional[QualityReport]) -> list[tuple[str, str]]:
    """(name, text) rows for a results table, e.g. ``("quality: dose_coverage", "pass — 1.00 fraction (...)")``."""
    if report is None:
        return [("quality", "not computed (preprocessed by an earlier RICE-NET)")]
    return [(f"quality: {g.name}", f"{g.state} — {g.short()} ({g.threshold})") for g in report.gates]


__all__ = ["Gate", "QualityReport", "STATES", "GATE_NAMES", "assess_case", "brain_overlap", "dose_coverage",
           "event_brain_mask", "registration_overlap_gate", "registration_metric_gate", "brain_volume_gate",
           "dose_coverage_gate", "dose_maximum_gate", "report_of", "with_gate", "PREPROCESSING_GATES", "attach", "csv_columns", "table_rows"]
