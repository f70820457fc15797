"""Figures and the HTML report of a prediction: what a tumour board looks at.

The overview shows three planes through the heatmap's peak (or the dose
maximum when there is no heatmap): the event MRI in the reference space, the
heatmap over it, and the isodose lines, so a reader can check by eye that the
model looked where the lesion and the dose are. The HTML report embeds the
figure, so it is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path, write_text
from .dose_overlap import overlap_html

DEFAULT_ISODOSE_GY = (50.0, 60.0)


def _axis_aligned(image: sitk.Image, reference: sitk.Image, interpolator: int) -> np.ndarray:
    """``image`` resampled onto ``reference``'s grid with an identity direction, as (z, y, x)."""
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    if np.allclose(direction, np.eye(3), atol=1e-6):
        grid = reference
    else:  # oblique: display on the axis-aligned box around the reference
        corners = [reference.TransformContinuousIndexToPhysicalPoint([c * (n - 1) for c, n in zip(corner, reference.GetSize())])
                   for corner in np.ndindex(2, 2, 2)]
        low, high = np.min(corners, axis=0), np.max(corners, axis=0)
        spacing = min(reference.GetSpacing())
        grid = sitk.Image([int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(low, high)], sitk.sitkFloat32)
        grid.SetSpacing([spacing] * 3)
        grid.SetOrigin(tuple(low))
    return sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32))


def _planes(volume: np.ndarray, point: Sequence[int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices in radiological display orientation (LPS arrays)."""
    z, y, x = point
    return [volume[z], np.flipud(volume[:, y, :]), np.flipud(volume[:, :, x])]


def overview_figure(
    event: sitk.Image,
    reference: sitk.Image,
    heatmap: sitk.Image | None = None,
    dose: sitk.Image | None = None,
    isodose_gy: Sequence[float] = DEFAULT_ISODOSE_GY,
    title: str = "",
) -> bytes:
    """PNG bytes: three planes of the event MRI with heatmap and isodose lines.

    All images are resampled onto ``reference`` (the post-op grid); ``event``
    must already be registered to it (or carry the transform in its resampling).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    mri = _axis_aligned(event, reference, sitk.sitkLinear)
    heat = _axis_aligned(heatmap, reference, sitk.sitkLinear) if heatmap is not None else None
    gy = _axis_aligned(dose, reference, sitk.sitkLinear) if dose is not None else None
    source = heat if heat is not None and np.any(heat > 0) else gy if gy is not None else mri
    point = np.unravel_index(int(np.argmax(source)), source.shape)

    low, high = np.percentile(mri[mri > 0], [1, 99.5]) if np.any(mri > 0) else (0.0, 1.0)
    heat_max = float(heat.max()) if heat is not None and heat.max() > 0 else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), facecolor="black")
    colours = ["#00e5ff", "#ffffff", "#ff4081"]
    for index, (ax, name) in enumerate(zip(axes, ("axial", "coronal", "sagittal"))):
        ax.imshow(_planes(mri, point)[index], cmap="gray", vmin=low, vmax=high, interpolation="bilinear")
        if heat is not None:
            plane = _planes(heat, point)[index]
            ax.imshow(np.ma.masked_less_equal(plane, 0.2 * heat_max), cmap="inferno", vmin=0, vmax=heat_max, alpha=0.65,
                      interpolation="bilinear")
        if gy is not None:
            plane = _planes(gy, point)[index]
            levels = [level for level in sorted(isodose_gy) if plane.min() < level < plane.max()]
            if levels:
                contour = ax.contour(plane, levels=levels, colors=colours[: len(levels)], linewidths=1.0)
                ax.clabel(contour, fmt="%g Gy", fontsize=7)
        ax.set_title(name, color="white", fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, color="white", fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, facecolor="black")
    plt.close(fig)
    return buffer.getvalue()


def write_png(path: str | os.PathLike, png: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return Path(path)


def html_report(prediction: dict[str, Any], overview_png: bytes | None = None, inputs: dict[str, str] | None = None) -> str:
    """A self-contained HTML page with the verdict, the per-fold table and the overview figure."""
    esc = html.escape
    classes = list(prediction["probabilities"])
    rows = "".join(
        "<tr><td>{}</td>{}<td>{}</td></tr>".format(
            esc(str(fold["fold"])), "".join(f"<td>{fold['probabilities'][c]:.3f}</td>" for c in classes), esc(fold["label"])
        )
        for fold in prediction["folds"]
    )
    mean = "".join(f"<td><b>{prediction['probabilities'][c]:.3f}</b></td>" for c in classes)
    figure = ""
    if overview_png:
        data = base64.b64encode(overview_png).decode("ascii")
        figure = (f'<h2>Heatmap and isodose lines</h2><img alt="overview" src="data:image/png;base64,{data}">'
                  "<p class=note>Event MRI in the post-op (reference) space; heatmap = drop in the predicted class's "
                  "probability when the region is occluded (brighter = more important); lines = isodoses.</p>")
    input_rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in (inputs or {}).items())
    timings = ", ".join(f"{esc(k)} {v:.1f} s" for k, v in prediction.get("timings_s", {}).items())
    header = "".join(f"<th>p({esc(c)})</th>" for c in classes)
    from .trust import trust_html

    trust = trust_html(prediction)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>RICE-NET report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
.verdict {{ font-size: 1.6em; padding: .6em 1em; border-radius: 8px; background: #f3f0ff; border-left: 6px solid #6a4cff; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: .3em .8em; text-align: right; }}
img {{ max-width: 100%; border-radius: 6px; }} .note {{ color: #666; font-size: .9em; }}
.warning {{ background: #fff3e0; border-left: 6px solid #e65100; padding: .5em 1em; }}
</style></head><body>
<h1>RICE-NET: recurrence or radiation-induced contrast enhancement</h1>
<p class="verdict" id="verdict">{esc(prediction_verdict(prediction))}</p>
<h2>Per-fold probabilities</h2>
<table id="folds"><tr><th>fold</th>{header}<th>label</th></tr>{rows}
<tr><td><b>mean</b></td>{mean}<td><b>{esc(prediction['label'])}</b></td></tr></table>
{quality_html(prediction)}
<p>Votes: {esc(', '.join(f'{k} {v}' for k, v in prediction['votes'].items()))}; agreement {esc(prediction['agreement'])}.
Model bundle <code>{esc(str(prediction.get('bundle_id', '')))}</code>. {('Timings: ' + timings + '.') if timings else ''}</p>
{trust}
{figure}
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
