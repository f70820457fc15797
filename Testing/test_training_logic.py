"""The RICENetTraining module's logic without Qt: worker-thread training, Stop/Resume, live plot, tables.

Real engine (``train_ensemble``, ``run_ablation``) and real MRML nodes; the
cases come from an in-memory loader so that the test is about the module's
mechanics, not preprocessing.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from RICENetLib import mrml  # noqa: E402
from RICENetLib.cohort import load_cohort  # noqa: E402
from RICENetLib.errors import InputError  # noqa: E402
from RICENetTrainingLib.slicer_logic import CROP_CENTRES as CROP_CENTRES_GUI, TrainingLogic, TrainingSettings, result_message  # noqa: E402


def array_loader(size: int = 24):
    """A learnable stand-in per case: a bright cube in the event (recurrence) or dose (RICE) channel."""
    def load(case):
        rng = np.random.default_rng(abs(hash(case.patient_id)) % 2**32)
        image = rng.normal(0.0, 0.5, size=(3, size, size, size)).astype(np.float32)
        lo, hi = size // 4, size // 4 + size // 3
        image[2 if case.label == "rice" else 1, lo:hi, lo:hi, lo:hi] += 2.0
        return image
    return load


def tiny_logic(scene, **kwargs) -> TrainingLogic:
    from training_data import tiny_architecture

    return TrainingLogic(scene, engine_options={"load": array_loader()},
                         parameter_overrides={"architecture": tiny_architecture(), "batch_size": 2, "augment": False},
                         **kwargs)


def settings(cohort, output, **changes) -> TrainingSettings:
    values = dict(cohort=str(cohort), output=str(output), n_folds=2, epochs=2, seed=3, device="cpu",
                  input_size=24, spacing_mm=8.0, skull_strip="none")
    values.update(changes)
    return TrainingSettings(**values)


def run_polling(logic: TrainingLogic, task, timeout: float = 120.0):
    """What the widget's QTimer does: poll the task and refresh the plot until the end."""
    deadline = time.monotonic() + timeout
    charts = []
    while not task.status().finished and time.monotonic() < deadline:
        chart = logic.update_plot()
        if chart is not None:
            charts.append(chart)
        time.sleep(0.05)
    chart = logic.update_plot()
    return task.status(), charts + ([chart] if chart is not None else [])


def test_train_stop_resume_and_show_results(small_cohort, tmp_path):
    scene = slicer.vtkMRMLScene()
    logic = tiny_logic(scene)
    out = tmp_path / "bundle"

    # Stop after the first epoch: the run ends as cancelled and its checkpoint stays.
    task = logic.start(settings(small_cohort, out, epochs=1))
    deadline = time.monotonic() + 60
    while not logic.history() and time.monotonic() < deadline:
        time.sleep(0.02)
    task.cancel()
    stopped = task.wait(60)
    assert stopped.state == "cancelled"
    assert not (out / "bundle.json").exists()

    # Resume finishes both folds and writes the bundle.
    task = logic.start(settings(small_cohort, out, epochs=1), resume=True)
    status, charts = run_polling(logic, task)
    assert status.state == "done", status.traceback
    result = status.result
    assert result.bundle is not None and (out / "bundle.json").is_file()
    assert "Bundle written to" in result_message(result)

    history = logic.history()
    assert 1 in {row["fold"] for row in history}  # the resumed run reports the epochs it trained
    chart = charts[-1]
    assert chart.GetNumberOfPlotSeriesNodes() >= 2  # loss and F1 per fold trained
    names = [scene.GetNodeByID(chart.GetNthPlotSeriesNodeID(i)).GetYColumnName() for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert any(n.startswith("train_loss") for n in names) and any(n.startswith("val_macro_f1") for n in names)

    table = logic.show_metrics(result)
    rows = mrml.table_rows(table)
    assert [r["fold"] for r in rows] == ["0", "1", "mean", "sd"]
    assert 0.0 <= rows[2]["macro_f1"] <= 1.0
    assert logic.show_metrics(result) is table  # updated, not duplicated

    # The out-of-fold reliability diagram: a PNG in the bundle and a chart (6 patients: the temperature is not applied).
    assert (out / "reliability.png").is_file()
    reliability = logic.show_reliability(result)
    legends = [scene.GetNodeByID(reliability.GetNthPlotSeriesNodeID(i)).GetName()
               for i in range(reliability.GetNumberOfPlotSeriesNodes())]
    assert legends[0] == "perfect calibration" and legends[1].startswith("raw: ECE ") and len(legends) == 2
    assert logic.show_reliability(result) is reliability


def test_ablation_button_path(small_cohort, tmp_path):
    from RICENetTrainingLib.ablation import run_ablation

    scene = slicer.vtkMRMLScene()

    def two_combinations(*args, **kwargs):
        return run_ablation(*args, combinations=[("event",), ("event", "dose")], **kwargs)

    logic = tiny_logic(scene, ablate=two_combinations)
    task = logic.start_ablation(settings(small_cohort, tmp_path / "ablation", epochs=1))
    status, charts = run_polling(logic, task)
    assert status.state == "done", status.traceback
    assert (tmp_path / "ablation" / "ablation.csv").is_file()
    assert {row.get("series") for row in logic.history()} == {"event", "event+dose"}
    rows = mrml.table_rows(logic.show_metrics(status.result))
    assert [r["modalities"] for r in rows] == ["event", "event+dose"]
    assert "2 modality combinations" in result_message(status.result)


def test_settings_are_checked(small_cohort, tmp_path):
    with pytest.raises(InputError, match="Choose the cohort"):
        TrainingSettings().validate()
    with pytest.raises(InputError, match="does not exist"):
        settings(tmp_path / "nowhere.csv", tmp_path / "b").validate()
    with pytest.raises(InputError, match="output folder"):
        settings(small_cohort, "").validate()
    with pytest.raises(InputError, match="at least one modality"):
        settings(small_cohort, tmp_path, use_postop=False, use_event=False, use_dose=False).validate()
    with pytest.raises(InputError, match="learning-rate schedule 'step'"):
        settings(small_cohort, tmp_path, lr_schedule="step").validate()
    with pytest.raises(InputError, match="input-box centre 'lesion'"):
        settings(small_cohort, tmp_path, crop_centre="lesion").validate()
    with pytest.raises(InputError, match="mirroring probability .* 1.5"):
        settings(small_cohort, tmp_path, flip_probability=1.5).validate()
    default = settings(small_cohort, tmp_path).training_parameters()
    assert default.augmentation.flip_probability == 0.0 and not default.bf16  # paper: off; float32 by default
    chosen = settings(small_cohort, tmp_path, use_postop=False, lr_schedule="cosine", crop_centre="dose",
                      flip_probability=0.5, bf16=True)
    params = chosen.training_parameters()
    assert params.modalities == ("event", "dose") and params.n_folds == 2 and params.epochs == 2
    assert params.lr_schedule == "cosine" and params.augmentation.flip_probability == 0.5 and params.bf16
    assert chosen.preprocessing() == {"spacing_mm": 8.0, "input_size": 24, "skull_strip": "none", "crop_centre": "dose"}
    from RICENetLib.preprocessing import CROP_CENTRES, PreprocessParameters

    assert CROP_CENTRES_GUI == CROP_CENTRES  # the GUI's list, kept free of SimpleITK, is the engine's
    assert PreprocessParameters.from_dict(chosen.preprocessing()).crop_centre == "dose"
    assert TrainingSettings.from_dict({**chosen.to_dict(), "extra": 1}) == chosen
    assert len(load_cohort(small_cohort)) >= 4
