"""The report a clinician reads: slices through the heatmap's peak and the lesion, the right way round, with units.

Heatmaps with a known peak on a grid with a known origin and spacing; the HTML is
parsed (html.parser), not searched as a string, so the tests check where a
figure sits (beside the verdict, the warning at the top), not only that it exists.
"""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.report import html_report
from RICENetLib.report_figure import (SliceRow, choose_slices, figure_size_px, overview, peak_index, planes,
                                      png_size)

SHAPE = (24, 28, 32)  # (z, y, x)
SPACING = (2.0, 2.5, 3.0)  # (x, y, z) mm
ORIGIN = (-40.0, -30.0, -20.0)  # LPS mm


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    return image


def _gaussian(centre_zyx, peak: float = 0.004) -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    cz, cy, cx = centre_zyx
    return peak * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / 8.0) - 0.0005


@pytest.fixture(scope="module")
def case():
    """An MRI-like ball, a heatmap peaking at voxel (z 16, y 20, x 6), a dose rising towards the patient's left."""
    z, y, x = np.indices(SHAPE)
    mri = 100.0 * (((z - 12) / 11) ** 2 + ((y - 14) / 13) ** 2 + ((x - 16) / 15) ** 2 < 1)
    dose = 65.0 * x / (SHAPE[2] - 1)
    return {"mri": _image(mri), "heat": _image(_gaussian((16, 20, 6))), "dose": _image(dose)}


@pytest.fixture(scope="module")
def figure(case):
    lesion = np.zeros(SHAPE)
    lesion[4:7, 3:6, 24:27] = 1  # centred on voxel (x 25, y 4, z 5) = LPS (-40 + 50, -30 + 10, -20 + 15) = (10, -20, -5)
    return overview(case["mri"], case["mri"], case["heat"], case["dose"], (30.0, 57.0), title="t",
                    lesion=_image(lesion), heat_label="recurrence")


def test_slices_go_through_the_heatmaps_peak_and_the_lesion_with_positions_in_mm(case, figure):
    # Peak voxel (x 6, y 20, z 16) → LPS (-40 + 6·2, -30 + 20·2.5, -20 + 16·3) = (-28, 20, 28): right, posterior, superior.
    peak, lesion = figure.rows
    assert (peak.reason, peak.index_zyx, peak.point_lps) == ("heatmap peak", (16, 20, 6), (-28.0, 20.0, 28.0))
    assert peak.positions() == {"axial": "S 28.0 mm", "coronal": "P 20.0 mm", "sagittal": "R 28.0 mm"}
    assert (lesion.reason, lesion.index_zyx) == ("lesion centre", (5, 4, 25))
    assert lesion.positions() == {"axial": "I 5.0 mm", "coronal": "A 20.0 mm", "sagittal": "L 10.0 mm"}
    assert figure.heat_range == pytest.approx((-0.0005, 0.0035), abs=1e-6)  # real values, not normalised
    assert figure.isodose_gy == [30.0, 57.0] and figure.lesion_outlined
    assert png_size(figure.png) == figure.size_px == figure_size_px(2) == (1320, 1012)
    alone = overview(case["mri"], case["mri"], case["heat"], case["dose"], lesion_centre_lps=peak.point_lps)
    assert [r.reason for r in alone.rows] == ["heatmap peak"], "a lesion centred on the peak adds no second row"
    assert png_size(alone.png) == figure_size_px(1) == (1320, 605)


def test_without_a_heatmap_the_dose_maximum_else_the_centre():
    grid = _image(np.zeros(SHAPE))
    gy = np.zeros(SHAPE)
    gy[3, 4, 5] = 60.0
    assert choose_slices(grid, None, gy)[0].index_zyx == (3, 4, 5)
    assert choose_slices(grid, np.zeros(SHAPE), None) == [SliceRow("volume centre", (12, 14, 16),
                                                                   (-40.0 + 32.0, -30.0 + 35.0, -20.0 + 36.0))]


def test_a_plateau_peak_is_its_centre_not_its_first_corner():
    heat = np.zeros(SHAPE)
    heat[4:12, 8:16, 2:10] = 0.01  # one occlusion box's value
    assert peak_index(heat) in {(z, y, x) for z in (7, 8) for y in (11, 12) for x in (5, 6)}


def test_planes_are_in_the_radiological_convention():
    """A voxel at the patient's left (high x), posterior (high y) and superior (high z) lands where the markers say."""
    volume = np.zeros(SHAPE)
    volume[20, 24, 28] = 1.0  # superior, posterior, left
    axial, coronal, sagittal = planes(volume, (20, 24, 28))
    for plane, (row, col) in ((axial, (24, 28)), (coronal, (SHAPE[0] - 1 - 20, 28)), (sagittal, (SHAPE[0] - 1 - 20, 24))):
        assert np.argwhere(plane == 1.0).tolist() == [[row, col]]
    # axial: posterior at the bottom, left on the right; coronal: superior at the top (row 3 of 24), left on the right;
    # sagittal: superior at the top, posterior on the right.
    assert axial.shape == (28, 32) and coronal.shape == (24, 32) and sagittal.shape == (24, 28)


class _Page(HTMLParser):
    """Element ids in document order, the text of each id'd element, and the facts table's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.text: dict[str, str] = {}
        self.facts: dict[str, str] = {}
        self.slices: list[dict[str, str]] = []
        self._stack: list[tuple[str, str | None]] = []
        self._cell: list[str] = []
        self._row: list[str] = []
        self._plane = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.order.append(attrs["id"])
            self.text.setdefault(attrs["id"], "")
        if tag not in ("img", "meta", "br"):  # void elements have no end tag
            self._stack.append((tag, attrs.get("id")))
        if tag == "li" and "slices" in self._open:
            self.slices.append({"reason": attrs.get("data-reason", "")})
        if tag == "span" and attrs.get("data-plane"):
            self._plane = attrs["data-plane"]
        if tag in ("th", "td"):
            self._cell = []
        if tag == "tr":
            self._row = []

    @property
    def _open(self) -> list[str]:
        return [name for _, name in self._stack if name]

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._row.append("".join(self._cell).strip())
        if tag == "tr" and "facts" in self._open and len(self._row) == 2:
            self.facts[self._row[0]] = self._row[1]
        if tag == "span":
            self._plane = ""
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        for name in self._open:
            self.text[name] += data
        self._cell.append(data)
        if self._plane and self.slices:
            self.slices[-1][self._plane] = data


def _prediction() -> dict:
    folds = [{"fold": k, "probabilities": {"recurrence": p, "rice": 1 - p}, "label": "recurrence"}
             for k, p in enumerate((0.78, 0.80, 0.81, 0.79, 0.82))]
    return {"label": "recurrence", "agreement": "5/5", "probabilities": {"recurrence": 0.80, "rice": 0.20},
            "votes": {"recurrence": 5, "rice": 0}, "spread": {"recurrence": 0.0141, "rice": 0.0141}, "folds": folds,
            "bundle_id": "ricenet-postop+event+dose-abc123", "case_id": "P042",
            "model_validation": {"macro_f1": {"mean": 0.52, "sd": 0.08, "n": 5}, "auc": {"mean": 0.38, "sd": 0.12, "n": 5},
                                 "n_folds": 5, "n_validation_patients": 40, "min_separating_auc": 0.7,
                                 "separates_classes": False},
            "calibrated_probability": {"recurrence": 0.66, "rice": 0.34},
            "calibration": {"applied": True, "temperature": 1.7, "n_patients": 40, "ece_before": 0.2, "ece_after": 0.1,
                            "brier_before": 0.3, "brier_after": 0.25, "method": "temperature"},
            "prediction_set": {"coverage": 0.9, "available": True, "classes": ["recurrence", "rice"]},
            "quality": {"worst": "warn", "gates": [
                {"name": "registration_overlap", "state": "pass", "value": 0.93, "unit": "", "threshold": "≥ 0.7", "message": "ok"},
                {"name": "dose_maximum", "state": "warn", "value": 0.69, "unit": "", "threshold": "0.8–1.3", "message": "low"}]}}


def test_the_verdict_has_its_qualifiers_beside_it_and_the_warning_above_it(figure):
    page = _Page()
    page.feed(html_report(_prediction(), figure, {"postop": "p.nii.gz"}))
    order = page.order
    assert order.index("separation") < order.index("verdict") < order.index("facts") < order.index("overview") \
        < order.index("folds"), order
    assert "cannot separate the classes" in page.text["separation"] and "AUC 0.38" in page.text["separation"]
    facts = page.facts
    assert facts["Case"] == "P042" and facts["Model bundle"] == "ricenet-postop+event+dose-abc123"
    assert facts["Model's cross-validation"].startswith("macro F1 0.52 ± 0.08, AUC 0.38 ± 0.12 (mean ± sd over 5 folds")
    assert facts["Fold agreement and spread"] == "5 of 5 folds vote recurrence; p(recurrence) per fold 0.78 to 0.82 (sd 0.014)"
    assert facts["Calibrated probability"] == "p(recurrence) = 0.66 (temperature 1.70)"
    assert facts["90 % prediction set"] == "recurrence, rice"
    assert facts["Quality checks"] == "warn (dose_maximum warn)"
    assert float(page.text["heat_max"]) == pytest.approx(0.0035, rel=1e-2)
    assert float(page.text["heat_min"]) == pytest.approx(-0.0005, rel=1e-2)
    assert page.slices == [{"reason": "heatmap peak", "axial": "S 28.0 mm", "coronal": "P 20.0 mm", "sagittal": "R 28.0 mm"},
                           {"reason": "lesion centre", "axial": "I 5.0 mm", "coronal": "A 20.0 mm", "sagittal": "L 10.0 mm"}]
    assert "in the radiological convention (the patient's left on the image's right)" in page.text["figure_note"]
    plain = _Page()
    plain.feed(html_report({**_prediction(), "case_id": None, "model_validation": None}))
    assert "separation" not in plain.order and plain.facts["Case"].startswith("not given")
