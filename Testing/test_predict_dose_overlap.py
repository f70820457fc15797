"""``ricenet predict --occlusion --lesion``: the dose figures reach prediction.json, the report, the console and the CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.cli import main
from RICENetLib.cohort import load_cohort
from RICENetLib.dose_overlap import csv_columns
from RICENetLib.slicer_logic import untrained_bundle

# 8 boxes per fold, float32 (never float16 on a CPU).
QUICK = ["--occlusion", "quick", "--occlusion-mask", "16", "--occlusion-stride", "16", "--occlusion-precision", "float32"]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """test_predict.py's preprocessing (32³ at 6 mm, no skull stripping) on a narrow untrained resnet18: seconds."""
    return untrained_bundle(tmp_path_factory.mktemp("bundle") / "tiny", n_folds=2, input_size=32, spacing_mm=6.0)


@pytest.fixture(scope="module")
def case_paths(small_cohort):
    """The first case of the session's synthetic cohort (its truth/ holds the lesion drawn on the event MRI)."""
    return load_cohort(small_cohort)[0].paths


def _args(bundle, paths, out) -> list[str]:
    return ["predict", "--bundle", str(bundle), "--postop", str(paths["postop"]), "--event", str(paths["event"]),
            "--dose", str(paths["dose"]), "--out", str(out), "--device", "cpu"]


def test_predict_with_a_lesion_writes_dose_overlap(tiny_bundle, case_paths, tmp_path, capsys):
    lesion = case_paths["postop"].parent / "truth" / "lesion_mask.nii.gz"  # drawn on the event MRI's grid
    out = tmp_path / "result"
    assert main(_args(tiny_bundle, case_paths, out) + QUICK + ["--lesion", str(lesion), "--lesion-space", "event"]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
    overlap = data["dose_overlap"]
    assert overlap["prescription_gy"] == 60.0 and [lv["level"] for lv in overlap["levels"]] == [0.5, 0.95]

    # The same shares computed independently from the written heatmap and the dose file.
    heatmap = sitk.ReadImage(str(out / "occlusion.nii.gz"))
    dose = sitk.Resample(sitk.ReadImage(str(case_paths["dose"]), sitk.sitkFloat32), heatmap, sitk.Transform(),
                         sitk.sitkLinear, 0.0)
    h = np.maximum(sitk.GetArrayFromImage(heatmap).astype(np.float64), 0)
    gy = sitk.GetArrayFromImage(dose).astype(np.float64)
    assert h.sum() > 0
    for level in overlap["levels"]:
        expected = h[gy >= level["level"] * 60.0 - 1e-4].sum() / h.sum()
        assert level["share"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert overlap["peak_dose_gy"] == pytest.approx(gy.ravel()[np.argmax(h)], rel=1e-5)

    lesion_dose = overlap["lesion"]
    assert lesion_dose["space"] == "event" and lesion_dose["fraction_in_reference"] > 0.9
    assert 0 < lesion_dose["d95_gy"] <= lesion_dose["mean_gy"] <= lesion_dose["max_gy"] <= gy.max() + 1e-3
    assert 0.0 <= lesion_dose["v95"] <= 1.0 and 0.0 <= lesion_dose["heatmap_share"] <= 1.0
    assert lesion_dose["volume_ml"] > 0 and lesion_dose["name"].endswith("lesion_mask.nii.gz")

    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="dose_overlap"' in page and "lesion D95" in page and f"{lesion_dose['d95_gy']:.1f} Gy" in page
    assert "heatmap mass in the 95 % isodose (57.0 Gy):" in printed and "lesion V95 %" in printed
    # The report's second row of slices goes through the lesion (its voxel on the post-op grid, within half a voxel).
    rows = {row["reason"]: row for row in data["overview"]["slices"]}
    through = rows.get("lesion centre", rows["heatmap peak"])  # one row when the peak is the lesion's voxel
    assert np.linalg.norm(np.subtract(through["point_lps_mm"], lesion_dose["centre_lps"])) <= \
        0.5 * np.linalg.norm(heatmap.GetSpacing()) + 1e-3
    assert f"data-plane=axial>{through['positions']['axial']}</span>" in page
    assert "Dashed outline: the lesion mask." in page  # moved through the registration onto the post-op grid


def test_bad_lesion_masks_fail_before_predicting(tiny_bundle, case_paths, tmp_path, capsys):
    empty = tmp_path / "empty.nii.gz"
    postop = sitk.ReadImage(str(case_paths["postop"]))
    blank = sitk.Image(postop.GetSize(), sitk.sitkUInt8)
    blank.CopyInformation(postop)
    sitk.WriteImage(blank, str(empty))
    out = tmp_path / "o"
    assert main(_args(tiny_bundle, case_paths, out) + ["--lesion", str(empty)]) == 2
    assert f"Lesion mask {empty} is empty: no voxel is nonzero" in capsys.readouterr().err
    far = sitk.Image([8, 8, 8], sitk.sitkUInt8) + 1
    far.SetOrigin((900.0, 900.0, 900.0))
    sitk.WriteImage(far, str(tmp_path / "far.nrrd"))
    assert main(_args(tiny_bundle, case_paths, out) + ["--lesion", str(tmp_path / "far.nrrd")]) == 2
    assert "far.nrrd lies outside the post-op MRI" in capsys.readouterr().err
    assert not out.exists(), "nothing is written for a refused mask"


def test_cohort_table_gets_the_dose_columns(tiny_bundle, case_paths, tmp_path, capsys):
    table = tmp_path / "cohort.csv"
    folder = case_paths["postop"].parent
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "label", "postop", "event", "dose", "lesion"])
        writer.writerow(["P1", "rice"] + [str(folder / f"{m}.nii.gz") for m in ("postop", "event", "dose")]
                        + [str(folder / "truth" / "lesion_mask.nii.gz")])
        writer.writerow(["P2", ""] + [str(folder / f"{m}.nii.gz") for m in ("postop", "event", "dose")] + [""])
    out = tmp_path / "out"
    assert main(["predict", "--bundle", str(tiny_bundle), "--cohort", str(table), "--out", str(out), "--device", "cpu"]
                + QUICK + ["--lesion-space", "event"]) == 0
    rows = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    assert set(csv_columns()) <= set(rows[0])
    assert 0.0 <= float(rows[0]["heatmap_in_95pct_isodose"]) <= 1.0 and float(rows[0]["lesion_d95_gy"]) > 0
    assert rows[1]["lesion_d95_gy"] == "" and rows[1]["heatmap_in_50pct_isodose"] != ""  # no mask for P2
    p1 = json.loads((out / "P1" / "prediction.json").read_text(encoding="utf-8"))["dose_overlap"]
    assert float(rows[0]["lesion_d95_gy"]) == pytest.approx(p1["lesion"]["d95_gy"], abs=0.006)
