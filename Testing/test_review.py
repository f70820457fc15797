"""Review mode on real MRML (slicer-core): walk a `ricenet predict --cohort` folder, record calls, restart.

The results folder is made once by the real CLI (the untrained tiny bundle,
occlusion ``quick``) from the first three cases of the session's 48³ cohort,
plus a fourth case whose dose looks like cGy, which the batch records as
failed. Engine calls are counted by wrapping the real ``predict_case``: the
display code is the module's own (``ClassificationLogic.show``).
"""

from __future__ import annotations

import csv
import errno
import pathlib

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")

from RICENetLib import mrml  # noqa: E402
from RICENetLib.errors import InputError, OutputError  # noqa: E402
from RICENetLib.review import REVIEW_COLUMNS, ReviewList, read_review_table  # noqa: E402
from RICENetLib.review_scene import ReviewScene  # noqa: E402
from RICENetLib.slicer_logic import ClassificationLogic, ClassificationSettings, untrained_bundle  # noqa: E402


@pytest.fixture(scope="module")
def batch(small_cohort, tmp_path_factory):
    """(bundle, cohort CSV of 4 cases, results folder) — the last case fails in the batch."""
    from RICENetLib.cli import main
    from RICENetLib.cohort import load_cohort, write_cohort_csv

    root = tmp_path_factory.mktemp("review")
    bundle = untrained_bundle(root / "bundle", n_folds=2, input_size=32, spacing_mm=6.0)
    cases = load_cohort(small_cohort)[:4]
    bad = root / "bad_dose.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(cases[3].paths["dose"])) * 100.0, str(bad))  # looks like cGy: refused
    cases[3] = type(cases[3])(cases[3].patient_id, None, dict(cases[3].paths, dose=bad))
    cohort = write_cohort_csv(root / "cohort.csv", cases)
    results = root / "results"
    assert main(["predict", "--bundle", str(bundle), "--cohort", str(cohort), "--out", str(results),
                 "--occlusion", "quick"]) == 2  # one case failed, the others were written
    return bundle, cohort, results


class CountingPredict:
    """The real engine entry point, counted."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):
        from RICENetLib.slicer_logic import _default_predict

        self.calls += 1
        return _default_predict(*args, **kwargs)


def new_scene():
    scene = slicer.vtkMRMLScene()
    for _ in range(3):
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        scene.AddNewNodeByClass("vtkMRMLSliceNode")
    return scene


def test_walk_a_results_folder_without_the_engine(batch):
    bundle, _, results = batch
    review = ReviewList.open(results)
    assert [c.case_id for c in review.cases] == ["SYN001", "SYN002", "SYN003", "SYN004"]
    failed = review.cases[3]
    assert not failed.stored and "cGy" in failed.error and review.rows()[3]["verdict"] == "failed"
    assert all(c.stored and c.label and c.agreement and c.quality for c in review.cases[:3])
    predict = CountingPredict()
    logic = ClassificationLogic(new_scene(), predict=predict)
    view = ReviewScene(logic)
    settings = ClassificationSettings(bundle=str(bundle))
    counts, volume_counts = [], []
    order = [review.current] + [review.next() for _ in range(3)] + [review.previous() for _ in range(3)]
    assert review.next() is not None and review.position == 1
    for case in order:
        shown = view.show(case, settings)
        if case.error:
            assert shown.error == case.error and not shown.volumes and shown.result is None
            assert logic.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0  # the last case went
            continue
        assert not shown.needs_engine and not shown.error
        ids = shown.result.node_ids
        assert {"table", "heatmap", "isodose", "transform", "dose_overlap"} <= set(ids)
        scene = logic.scene
        stored_heatmap = sitk.ReadImage(str(case.results / "occlusion.nii.gz"))
        np.testing.assert_allclose(slicer.util.arrayFromVolume(scene.GetNodeByID(ids["heatmap"])),
                                   sitk.GetArrayFromImage(stored_heatmap), rtol=1e-6)
        transform = sitk.ReadTransform(str(case.results / "registration.tfm"))
        event = shown.volumes["event"]
        assert event.GetTransformNodeID() == ids["transform"]
        back = mrml.sitk_transform_from_node(scene.GetNodeByID(ids["transform"]))
        probe = (10.0, -20.0, 5.0)
        np.testing.assert_allclose(back.TransformPoint(probe), transform.TransformPoint(probe), atol=1e-4)
        assert shown.result.verdict == case.verdict
        rows = mrml.table_rows(scene.GetNodeByID(ids["table"]))
        assert [r["fold"] for r in rows[:2]] == ["0", "1"] and rows[2]["label"] == case.label
        counts.append(scene.GetNumberOfNodes())
        volume_counts.append(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
    assert predict.calls == 0  # stored results: no engine
    assert len(counts) == 6 and len(set(counts)) == 1, counts  # each case's nodes replace the last
    assert volume_counts[0] == 4  # three inputs and the heatmap


def test_a_case_without_results_runs_through_the_engine(batch):
    bundle, cohort, _ = batch
    review = ReviewList.open(cohort)
    assert review.review_file == cohort.with_name("cohort.review.csv")
    assert not review.current.stored and review.rows()[0]["verdict"] == "not computed"
    predict = CountingPredict()
    logic = ClassificationLogic(new_scene(), predict=predict)
    view = ReviewScene(logic)
    settings = ClassificationSettings(bundle=str(bundle), occlusion="none")
    shown = view.show(review.current, settings)
    assert shown.needs_engine and predict.calls == 0
    result = logic.show(shown.job, logic.compute(shown.job))  # what the widget does through its worker thread
    assert predict.calls == 1 and result.verdict
    scene = logic.scene
    assert mrml.find_role_node(scene, "vtkMRMLTableNode", mrml.ROLE_RESULTS) is not None
    shown = view.show(review.next(), settings)  # the engine's result nodes go with their case
    assert shown.needs_engine and predict.calls == 1
    for class_name, role in (("vtkMRMLTableNode", mrml.ROLE_RESULTS), ("vtkMRMLSegmentationNode", mrml.ROLE_ISODOSE),
                             ("vtkMRMLLinearTransformNode", mrml.ROLE_REGISTRATION)):
        assert mrml.find_role_node(scene, class_name, role) is None, role
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3


def test_review_table_survives_a_restart_and_is_never_half_written(batch, monkeypatch):
    _, _, results = batch
    times = iter(f"2026-12-02T06:0{i}:00+00:00" for i in range(10))
    review = ReviewList.open(results, clock=lambda: next(times))
    review.record("SYN002", "disagree", note="heatmap off the lesion, on the ventricle", reviewer="A. Reviewer")
    review.record("SYN001", "agree", reviewer="A. Reviewer")
    path = results / "review.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == REVIEW_COLUMNS
    assert rows[1] == ["SYN001", "agree", "", "A. Reviewer", "2026-12-02T06:01:00+00:00"]  # the list's order
    assert rows[2][:3] == ["SYN002", "disagree", "heatmap off the lesion, on the ventricle"]

    reopened = ReviewList.open(results)  # a restart: a new list object from the file alone
    assert reopened.call_of("SYN002").call == "disagree" and reopened.call_of("SYN002").reviewer == "A. Reviewer"
    assert reopened.rows()[1]["call"] == "disagree" and reopened.rows()[2]["call"] == ""

    before = path.read_bytes()
    original = pathlib.Path.write_text

    def disk_full_halfway(self, text, *args, **kwargs):
        original(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", disk_full_halfway)
    with pytest.raises(OutputError):
        reopened.record("SYN003", "unsure", note="a long note " * 50, reviewer="B")
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old table, whole
    assert sorted(p.name for p in results.iterdir() if p.name.startswith(".review")) == []  # no temporary left
    assert reopened.call_of("SYN003").call == ""  # memory follows the file
    with pytest.raises(InputError, match="call 'maybe'"):
        reopened.record("SYN001", "maybe")


def test_a_foreign_or_damaged_review_file_is_refused_and_left_alone(tmp_path, batch):
    _, cohort, _ = batch
    target = cohort.with_name("cohort.review.csv")
    for text, message in (("patient,score\nSYN001,3\n", "header"),
                          (",".join(REVIEW_COLUMNS) + "\nSYN001,agree,cut off\n", "line 2 has 3 fields"),
                          (",".join(REVIEW_COLUMNS) + "\nSYN001,maybe,,,\n", "call 'maybe'")):
        target.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=message) as error:
            ReviewList.open(cohort)
        assert str(target) in str(error.value) and "left as it is" in str(error.value)
        assert target.read_text(encoding="utf-8") == text
    target.unlink()
    assert read_review_table(target) == {}
