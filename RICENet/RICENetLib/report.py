"""The HTML report of a prediction: what a tumour board looks at, in one file that opens anywhere.

At the top, a warning when the bundle's own validation shows that it cannot
separate the classes; then the verdict with what qualifies it right beside it
(the case, the bundle and its validation figures, the folds' agreement and
spread, the calibrated probability, the prediction set, the quality gates);
then the overview figure (:mod:`.report_figure`) with the heatmap's units and
range and where each slice lies, and the detailed tables.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Sequence

import SimpleITK as sitk

from .atomic import atomic_path, write_text
from .dose_overlap import overlap_html
from .report_figure import DEFAULT_ISODOSE_GY, Overview, overview


def overview_figure(event: sitk.Image, reference: sitk.Image, heatmap: sitk.Image | None = None,
                    dose: sitk.Image | None = None, isodose_gy: Sequence[float] = DEFAULT_ISODOSE_GY,
                    title: str = "") -> bytes:
    """PNG bytes of :func:`.report_figure.overview` (for callers that need only the picture)."""
    return overview(event, reference, heatmap, dose, isodose_gy, title).png


def write_png(path: str | os.PathLike, png: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return Path(path)


def _case_rows(prediction: dict[str, Any]) -> list[tuple[str, str]]:
    """What qualifies the verdict, shown beside it: (name, value as text)."""
    from .trust import validation_figures

    label = prediction["label"]
    agree, total = prediction["agreement"].split("/")
    rows = [("Case", str(prediction.get("case_id") or "not given (no --case-id, and no DICOM PatientID in the inputs)")),
            ("Model bundle", str(prediction.get("bundle_id", "")))]
    validation = prediction.get("model_validation")
    if validation:
        rows.append(("Model's cross-validation", f"{validation_figures(validation)} (mean ± sd over "
                     f"{validation['n_folds']} folds, {validation['n_validation_patients']} validation patients)"))
    per_fold = [float(f["probabilities"][label]) for f in prediction.get("folds", [])]
    spread = (prediction.get("spread") or {}).get(label)
    agreement = f"{agree} of {total} folds vote {label}"
    if per_fold:
        agreement += f"; p({label}) per fold {min(per_fold):.2f} to {max(per_fold):.2f}"
    if spread is not None:
        agreement += f" (sd {float(spread):.3f})"
    rows.append(("Fold agreement and spread", agreement))
    calibrated = prediction.get("calibrated_probability")
    calibration = prediction.get("calibration") or {}
    if calibrated:
        rows.append(("Calibrated probability", f"p({label}) = {float(calibrated[label]):.2f} (temperature "
                     f"{float(calibration.get('temperature', float('nan'))):.2f})"))
    elif "calibrated_probability" in prediction:
        rows.append(("Calibrated probability", f"not applied: {calibration['reason']}" if calibration.get("reason")
                     else "not available (the bundle has no calibration)"))
    prediction_set = prediction.get("prediction_set")
    if prediction_set:
        share = f"{100 * float(prediction_set['coverage']):g} %"
        value = (", ".join(prediction_set.get("classes") or []) or "empty") if prediction_set.get("available") \
            else "not available"
        rows.append((f"{share} prediction set", value))
    quality = prediction.get("quality")
    if quality:
        from .quality import QualityReport

        report = QualityReport.from_dict(quality)
        flagged = [f"{g.name} {g.state}" for g in report.gates if g.state != "pass"]
        rows.append(("Quality checks", report.worst + (f" ({', '.join(flagged)})" if flagged else "")))
    else:
        rows.append(("Quality checks", "not computed"))
    return rows


def _figure_html(figure: Overview | bytes | None, prediction: dict[str, Any]) -> str:
    """The overview figure with, in words, where its slices lie and what its colours mean."""
    if not figure:
        return ""
    png = figure.png if isinstance(figure, Overview) else figure
    data = base64.b64encode(png).decode("ascii")
    esc = html.escape
    text = ("Event MRI in the post-op (reference) space, in the radiological convention (the patient's left on the "
            "image's right). Isodose lines as in the legend.")
    details = ""
    if isinstance(figure, Overview):
        items = "".join(
            f"<li data-reason=\"{esc(row.reason)}\">{esc(row.reason)}: "
            + ", ".join(f"{plane} <span class=pos data-plane={plane}>{esc(where)}</span>"
                        for plane, where in row.positions().items())
            + f" (LPS point {', '.join(f'{v:.1f}' for v in row.point_lps)} mm)</li>"
            for row in figure.rows)
        details = f"<ul id=slices>{items}</ul>"
        if figure.lesion_outlined:
            text += " Dashed outline: the lesion mask."
        if figure.heat_range is not None:
            low, high = figure.heat_range
            text += (f" Heatmap: drop in p({esc(figure.heat_label)}) when a box is occluded, from "
                     f"<span id=heat_min>{low:.3g}</span> to <span id=heat_max>{high:.3g}</span> "
                     f"({100 * high:.2g} percentage points at most); values under {figure.heat_shown_from or 0:.2g} "
                     "(a fifth of the peak), and negative ones (where occlusion raised the probability), are not "
                     "drawn. Green cross: the point each row's slices go through.")
    return (f'<h2>Heatmap and isodose lines</h2><img id=overview alt="overview" src="data:image/png;base64,{data}">'
            f"<p class=note id=figure_note>{text}</p>{details}")


def html_report(prediction: dict[str, Any], overview_png: Overview | bytes | None = None,
                inputs: dict[str, str] | None = None) -> str:
    """A self-contained HTML page: warning, verdict and what qualifies it, the figure, the detailed tables.

    ``overview_png`` is the :class:`~.report_figure.Overview` (its slice positions and heatmap range are
    written out too) or only its PNG bytes.
    """
    esc = html.escape
    classes = list(prediction["probabilities"])
    rows = "".join(
        "<tr><td>{}</td>{}<td>{}</td></tr>".format(
            f"{int(fold['fold']) + 1}/{len(prediction['folds'])}", "".join(f"<td>{fold['probabilities'][c]:.3f}</td>" for c in classes), esc(fold["label"])
        )
        for fold in prediction["folds"]
    )
    mean = "".join(f"<td><b>{prediction['probabilities'][c]:.3f}</b></td>" for c in classes)
    input_rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in (inputs or {}).items())
    timings = ", ".join(f"{esc(k)} {v:.1f} s" for k, v in prediction.get("timings_s", {}).items())
    header = "".join(f"<th>p({esc(c)})</th>" for c in classes)
    facts = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _case_rows(prediction))
    from .trust import separation_warning_html, trust_html

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>RICE-NET report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1320px; }}
.verdict {{ font-size: 1.45em; padding: .6em 1em; border-radius: 8px; background: #f3f0ff; border-left: 6px solid #6a4cff;
  margin-bottom: .3em; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: .3em .8em; text-align: right; }}
#facts {{ margin-top: .2em; }} #facts th {{ text-align: left; background: #f7f7f7; }} #facts td {{ text-align: left; }}
img {{ max-width: 100%; border-radius: 6px; }} .note {{ color: #666; font-size: .9em; }}
.warning {{ background: #fff3e0; border-left: 6px solid #e65100; padding: .5em 1em; font-size: 1.1em; }}
</style></head><body>
<h1>RICE-NET: recurrence or radiation-induced contrast enhancement</h1>
{separation_warning_html(prediction)}
<p class="verdict" id="verdict">{esc(prediction_verdict(prediction))}</p>
<table id="facts">{facts}</table>
{_figure_html(overview_png, prediction)}
<h2>Per-fold probabilities</h2><p class=note>Folds numbered from 1 as in the training progress bar (bundle file fold0 is fold 1).</p>
<table id="folds"><tr><th>fold</th>{header}<th>label</th></tr>{rows}
<tr><td><b>mean</b></td>{mean}<td><b>{esc(prediction['label'])}</b></td></tr></table>
<p>Votes: {esc(', '.join(f'{k} {v}' for k, v in prediction['votes'].items()))}; agreement {esc(prediction['agreement'])}.
{('Timings: ' + timings + '.') if timings else ''}</p>
{quality_html(prediction)}
{trust_html(prediction)}
{overlap_html(prediction.get("dose_overlap"))}
<h2>Inputs</h2><table>{input_rows}</table>
<p class="note">Research software, not a medical device. The result must be read together with the full clinical picture.</p>
</body></html>
"""


def prediction_verdict(prediction: dict[str, Any]) -> str:
    """One line such as ``Recurrence — 4 of 5 folds, mean p = 0.81``.

    A failed quality gate (``prediction["quality"]``, :mod:`.quality`) comes
    first: ``Not reliable: registration failed (brain overlap 0.41). Recurrence — ...``.
    """
    label = prediction["label"]
    agree, total = prediction["agreement"].split("/")
    name = {"recurrence": "Recurrence", "rice": "RICE (radiation-induced contrast enhancement)"}.get(label, label)
    line = f"{name} — {agree} of {total} folds, mean p = {prediction['probabilities'][label]:.2f}"
    if prediction.get("quality"):
        from .quality import QualityReport

        prefix = QualityReport.from_dict(prediction["quality"]).verdict_prefix()
        line = f"{prefix}. {line}" if prefix else line
    from .trust import qualify_verdict

    return qualify_verdict(line, prediction)  # the model's own warning first, then the quality gates


def quality_html(prediction: dict[str, Any]) -> str:
    """The quality gates as an HTML section: one row per gate with its state, number, threshold and finding."""
    esc = html.escape
    record = prediction.get("quality")
    if not record:
        return ("<h2>Quality checks</h2><p id=quality>Not computed: this case was preprocessed by an earlier "
                "RICE-NET, so nothing tells how far this verdict can be trusted.</p>")
    from .quality import QualityReport

    report = QualityReport.from_dict(record)
    colours = {"pass": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828"}
    rows = "".join(
        f'<tr class="gate-{esc(g.state)}"><td style="text-align:left">{esc(g.name)}</td>'
        f'<td style="color:{colours[g.state]}"><b>{esc(g.state)}</b></td><td>{esc(g.short())}</td>'
        f'<td style="text-align:left">{esc(g.threshold)}</td><td style="text-align:left">{esc(g.message)}</td></tr>'
        for g in report.gates)
    return (f'<h2>Quality checks: {esc(report.worst)}</h2><table id="quality"><tr><th>check</th><th>state</th>'
            f"<th>value</th><th>threshold</th><th>finding</th></tr>{rows}</table>"
            "<p class=note>warn: read the verdict with care; fail: the verdict is not to be trusted.</p>")


def write_html(path: str | os.PathLike, text: str) -> Path:
    write_text(path, text)
    return Path(path)
