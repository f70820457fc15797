"""The RICENet module's logic without Qt, end to end on real MRML nodes and the real engine.

A synthetic case goes into a slicer-core scene, a tiny bundle classifies it
(with occlusion), and the results must appear as the module shows them: table,
heatmap over the registered event MRI in every slice view, isodose outlines,
registration transform; re-running replaces them; the worker-thread path and
Cancel work; Export writes the CLI's report.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")

from RICENetLib import mrml, quality  # noqa: E402
from RICENetLib.background import BackgroundTask  # noqa: E402
from RICENetLib.errors import Cancelled, InputError  # noqa: E402
from RICENetLib.slicer_logic import (  # noqa: E402
    ClassificationLogic,
    ClassificationSettings,
    load_synthetic_case,
    parse_levels,
    required_packages,
    untrained_bundle,
)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """The untrained bundle that the Slicer self-test uses too."""
    from RICENetLib.bundle import load_bundle

    path = untrained_bundle(tmp_path_factory.mktemp("bundle") / "tiny", n_folds=2, input_size=32, spacing_mm=6.0)
    assert len(load_bundle(path).folds) == 2
    return path


@pytest.fixture
def scene_with_case(small_case):
    scene = slicer.vtkMRMLScene()
    for _ in range(3):  # three slice views, as in Slicer's default layout
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        scene.AddNewNodeByClass("vtkMRMLSliceNode")
    nodes = {
        "postop": mrml.image_to_volume(small_case.postop, scene, name="T1c post-op"),
        "event": mrml.image_to_volume(small_case.event, scene, name="T1c follow-up"),
        "dose": mrml.image_to_volume(small_case.dose, scene, name="RTDOSE"),
    }
    nodes["dose"].SetAttribute(mrml.DOSE_ATTRIBUTE, "1")
    return scene, nodes


def settings(bundle, **changes) -> ClassificationSettings:
    values = dict(bundle=str(bundle), skull_strip="none", occlusion="quick", device="cpu",
                  isodose_levels="30, 40", heatmap_threshold=0.1, heatmap_opacity=0.5)
    values.update(changes)
    return ClassificationSettings(**values)


def role_nodes(scene, class_name, role):
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))
            if scene.GetNthNodeByClass(i, class_name).GetAttribute(mrml.ROLE_ATTRIBUTE) == role]


def test_classify_a_case_end_to_end(scene_with_case, tiny_bundle, small_case, tmp_path):
    scene, nodes = scene_with_case
    logic = ClassificationLogic(scene)
    assert logic.guess_inputs() == nodes
    seen = []
    result = logic.run(nodes["postop"], nodes["event"], nodes["dose"], settings(tiny_bundle),
                       progress=lambda f, m: seen.append(f))
    prediction = result.prediction
    assert seen and seen[-1] == pytest.approx(1.0)
    label = prediction.label
    agree, total = prediction.agreement.split("/")
    # An untrained bundle has no cross-validation AUC: the verdict says so before the label (and the quality gates).
    assert result.verdict.startswith("Model not validated (no cross-validation AUC) — ")
    assert result.verdict.split(". ")[-1].startswith(("Recurrence", "RICE")) or " — Recurrence — " in result.verdict \
        or " — RICE" in result.verdict
    assert f"{agree} of {total} folds" in result.verdict
    assert f"mean p = {prediction.probabilities[label]:.2f}" in result.verdict
    # The "quick" preset's 32-voxel boxes on this 32³ model: one box; the user is told, with a grid that resolves.
    assert len(result.messages) == 1 and "1 × 1 × 1 boxes" in result.messages[0]
    assert "--occlusion-mask 6 --occlusion-stride 3" in result.messages[0]

    # Table: one row per fold, then mean, vote, agreement, then one row per quality gate.
    rows = mrml.table_rows(scene.GetNodeByID(result.node_ids["table"]))
    gates = [f"quality: {name}" for name in quality.GATE_NAMES]
    assert [r["fold"] for r in rows] == ["0", "1", "mean", "vote", "agreement", "cross-validation", "90 % set"] + gates
    assert rows[5]["label"].startswith("not validated: AUC —") and rows[6]["label"] == "not available"
    assert rows[2]["p(recurrence)"] == pytest.approx(prediction.probabilities["recurrence"], abs=1e-6)
    assert rows[4]["label"] == prediction.agreement
    # Skull stripping "none" on a head with its skull: the "brain" is the whole field of view, and the gates say so.
    report = quality.report_of(prediction)
    assert next(r for r in rows if r["fold"] == "quality: brain_volume")["label"].startswith("fail — ")
    # An untrained bundle holds no training-cohort features: the panel says the OOD check was not made.
    assert next(r for r in rows if r["fold"] == "quality: out_of_distribution")["label"].startswith("warn — not measured")
    # The model's own warning comes first, then the failed gates, then the label.
    assert report.gate("brain_volume").state == "fail"
    assert result.verdict.startswith("Model not validated (no cross-validation AUC) — Not reliable: not a brain")

    # Heatmap in the reference (post-op) space, over the event MRI in every slice view.
    heatmap = scene.GetNodeByID(result.node_ids["heatmap"])
    image = mrml.volume_to_image(heatmap)
    assert image.GetSize() == small_case.postop.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), small_case.postop.GetOrigin(), atol=1e-6)
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        assert composite.GetBackgroundVolumeID() == nodes["event"].GetID()
        assert composite.GetForegroundVolumeID() == heatmap.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.5)

    # The event MRI sits under the registration transform, which is the engine's registration.
    transform = scene.GetNodeByID(result.node_ids["transform"])
    assert nodes["event"].GetParentTransformNode() is transform
    point = (10.0, -20.0, 30.0)
    np.testing.assert_allclose(mrml.sitk_transform_from_node(transform).TransformPoint(point),
                               prediction.event_to_reference.TransformPoint(point), atol=1e-6)

    # Isodose outlines at the chosen levels.
    segmentation = scene.GetNodeByID(result.node_ids["isodose"]).GetSegmentation()
    assert sorted(segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())) == ["30 Gy", "40 Gy"]

    # Export writes the CLI's report.
    job = logic.prepare(nodes["postop"], nodes["event"], nodes["dose"], settings(tiny_bundle))
    paths = logic.export(job, prediction, tmp_path / "report")
    data = json.loads(paths["prediction"].read_text(encoding="utf-8"))
    assert data["label"] == label and data["verdict"] == result.verdict
    assert data["occlusion"]["precision"] == "float32", "the precision the map ran in, not the unset setting"
    assert paths["occlusion"].is_file() and paths["report"].is_file() and paths["overview"].is_file()

    # Restyling the heatmap needs no recomputation.
    logic.restyle_heatmap(result.node_ids["heatmap"], settings(tiny_bundle, heatmap_opacity=0.25, heatmap_threshold=0.5))
    composite = scene.GetNthNodeByClass(0, "vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundOpacity() == pytest.approx(0.25)
    top = float(heatmap.GetAttribute("RICENet.Maximum"))  # the map's maximum (1 if it has no positive value)
    assert heatmap.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.5 * top, rel=1e-5)

    # Re-running replaces the result nodes instead of adding copies; without occlusion the old map goes.
    before = scene.GetNumberOfNodes()
    again = logic.run(nodes["postop"], nodes["event"], nodes["dose"], settings(tiny_bundle))
    assert again.node_ids == result.node_ids
    assert scene.GetNumberOfNodes() == before
    assert nodes["event"].GetParentTransformNode() is transform
    plain = logic.run(nodes["postop"], nodes["event"], nodes["dose"], settings(tiny_bundle, occlusion="none"))
    assert "heatmap" not in plain.node_ids and not role_nodes(scene, "vtkMRMLScalarVolumeNode", mrml.ROLE_HEATMAP)
    assert plain.messages == []
    for role, class_name in ((mrml.ROLE_RESULTS, "vtkMRMLTableNode"), (mrml.ROLE_ISODOSE, "vtkMRMLSegmentationNode"),
                             (mrml.ROLE_REGISTRATION, "vtkMRMLLinearTransformNode")):
        assert len(role_nodes(scene, class_name, role)) == 1


def test_worker_thread_and_cancel(scene_with_case, tiny_bundle):
    scene, nodes = scene_with_case
    logic = ClassificationLogic(scene)
    job = logic.prepare(nodes["postop"], nodes["event"], nodes["dose"], settings(tiny_bundle, occlusion="none"))
    main = threading.get_ident()
    threads = []

    def predict(*args, **kwargs):
        threads.append(threading.get_ident())
        from RICENetLib.inference import predict_case

        return predict_case(*args, **kwargs)

    logic.predict = predict
    task = logic.start(job)
    status = task.wait(120)
    assert status.state == "done", status.traceback
    assert threads and threads[0] != main
    result = logic.show(job, status.result)  # back on the main thread
    assert scene.GetNodeByID(result.node_ids["table"]) is not None

    # Cancel: the engine stops at its next progress report.
    logic.predict = ClassificationLogic(scene).predict
    task = logic.start(job)
    task.cancel()
    status = task.wait(60)
    assert status.state == "cancelled" and isinstance(status.error, Cancelled)


def test_background_task_reports_progress_errors_and_cancel():
    release = threading.Event()

    def work(progress, cancel, steps):
        for i in range(steps):
            progress(i / steps, f"step {i}")
            release.wait(5)
        return "finished"

    task = BackgroundTask(work, 3).start()
    deadline = time.monotonic() + 5
    while task.status().message != "step 0" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert task.status().state == "running" and task.status().fraction == 0.0
    release.set()
    status = task.wait(10)
    assert (status.state, status.result, status.fraction, status.finished) == ("done", "finished", 1.0, True)

    failing = BackgroundTask(lambda progress, cancel: (_ for _ in ()).throw(InputError("no dose"))).start().wait(5)
    assert failing.state == "failed" and failing.user_error and "no dose" in str(failing.error)
    crash = BackgroundTask(lambda progress, cancel: 1 / 0).start().wait(5)
    assert crash.state == "failed" and not crash.user_error and "ZeroDivisionError" in crash.traceback

    def endless(progress, cancel):
        while True:
            progress(0.5, "working")
            time.sleep(0.01)

    stopping = BackgroundTask(endless).start()
    time.sleep(0.05)
    started = time.monotonic()
    stopping.cancel()
    status = stopping.wait(5)
    assert status.state == "cancelled" and time.monotonic() - started < 1.0
    with pytest.raises(RuntimeError):
        stopping.start()


def test_settings_and_inputs_are_checked(scene_with_case, tiny_bundle, tmp_path):
    scene, nodes = scene_with_case
    logic = ClassificationLogic(scene)
    with pytest.raises(InputError, match="model bundle folder"):
        logic.prepare(nodes["postop"], nodes["event"], nodes["dose"], ClassificationSettings())
    with pytest.raises(InputError, match="does not exist"):
        logic.prepare(nodes["postop"], nodes["event"], nodes["dose"], settings(tmp_path / "missing"))
    with pytest.raises(InputError, match="Unknown occlusion preset 'huge'"):
        settings(tiny_bundle, occlusion="huge").validate()
    with pytest.raises(InputError, match="Select the dose"):
        logic.prepare(nodes["postop"], nodes["event"], None, settings(tiny_bundle))
    with pytest.raises(InputError, match="three different volumes"):
        logic.prepare(nodes["event"], nodes["event"], nodes["dose"], settings(tiny_bundle))
    assert parse_levels("60, 50;57") == (50.0, 57.0, 60.0)
    assert parse_levels("") == ()
    with pytest.raises(InputError, match="Isodose levels"):
        parse_levels("fifty")
    options = settings(tiny_bundle, skull_strip="bundle", device="auto", occlusion="none", dose_unit="cGy").predict_options()
    assert options == {"device": None, "occlusion": None, "skull_strip": None, "dose_unit": "cGy"}
    assert ClassificationSettings.from_dict({**settings(tiny_bundle).to_dict(), "unknown": 1}) == settings(tiny_bundle)
    # Packages to ensure inside Slicer: never torch, SimpleITK, numpy or vtk (Slicer and the PyTorch extension own them).
    assert not any(r.startswith("deepbet") for r in required_packages(settings(tiny_bundle, skull_strip="bundle")))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bundle.json").write_text(json.dumps({"preprocessing": {}}))  # says nothing: deepbet
    needed = required_packages(settings(tmp_path / "b", skull_strip="bundle"))
    assert any(r.startswith("monai") for r in needed) and any(r.startswith("deepbet") for r in needed)
    assert not any(r.split(">")[0].split("=")[0].lower() in ("torch", "simpleitk", "numpy", "vtk") for r in needed)
    assert not any(r.startswith("deepbet") for r in required_packages(settings(tiny_bundle, skull_strip="none")))


def test_sample_data_case_loads_with_dose_mark():
    scene = slicer.vtkMRMLScene()
    nodes = load_synthetic_case(scene, size=32, seed=1)
    assert set(nodes) == {"postop", "event", "dose"}
    assert mrml.find_dose_volume(scene) is nodes["dose"]
    assert mrml.guess_input_volumes(scene) == nodes
    assert sitk.GetArrayViewFromImage(mrml.volume_to_image(nodes["dose"])).max() > 30


def test_heatmap_sliders_restyle_with_their_new_value():
    """The widget restyles from its parameter node's Modified observer, which runs once the node holds the
    slider's new value (a slot on the slider itself ran before the parameter node's own connection and read the
    previous one). Here a real parameter node (vtkMRMLScriptedModuleNode) with the same observer."""
    import vtk

    scene = slicer.vtkMRMLScene()
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    image = sitk.Image(16, 16, 16, sitk.sitkFloat32)
    image[8, 8, 8] = 2.0
    heatmap = mrml.update_heatmap(scene, image)
    logic = ClassificationLogic(scene)
    parameters = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    parameters.SetParameter("heatmapThreshold", "0.2")
    parameters.SetParameter("heatmapOpacity", "0.6")
    restyled = []

    def on_modified(caller, event):
        values = ClassificationSettings(heatmap_threshold=float(caller.GetParameter("heatmapThreshold")),
                                        heatmap_opacity=float(caller.GetParameter("heatmapOpacity")))
        restyled.append(logic.restyle_heatmap(heatmap.GetID(), values))

    parameters.AddObserver(vtk.vtkCommand.ModifiedEvent, on_modified)
    parameters.SetParameter("heatmapThreshold", "0.5")
    assert restyled == [True]
    assert heatmap.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.5 * 2.0)
    parameters.SetParameter("heatmapOpacity", "0.3")
    assert restyled == [True, True] and composite.GetForegroundOpacity() == pytest.approx(0.3)
    # Other changes of the parameter node leave the heatmap (and a slice-view opacity the user set) alone.
    composite.SetForegroundOpacity(0.9)
    parameters.SetName("renamed")
    assert restyled == [True, True, False] and composite.GetForegroundOpacity() == pytest.approx(0.9)
    assert logic.restyle_heatmap(None, ClassificationSettings()) is False


def test_unset_paths_read_as_empty():
    from pathlib import Path

    from RICENetLib.slicer_logic import path_text

    assert [path_text(v) for v in (Path(), "", None, ".", "/models/b")] == ["", "", "", "", "/models/b"]
