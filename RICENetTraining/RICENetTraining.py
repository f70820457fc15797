"""RICE-NET Training module for 3D Slicer: cross-validate an ensemble on your own cohort.

A table of contents, not an engine: the module, the parameter node, a widget
that binds the .ui and polls a worker thread, a thin logic around
:class:`RICENetTrainingLib.slicer_logic.TrainingLogic` (Qt-free, tested outside
Slicer on slicer-core), and the Slicer self-test.

This file needs the Slicer application (Qt, ``slicer.app``); it cannot run on
machines without a Slicer GUI. ``Testing/test_training_logic.py`` exercises the
same logic there, and ``Testing/test_module_ui.py`` checks the widget names
against ``Resources/UI/RICENetTraining.ui``.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Annotated

import qt

import slicer
from slicer import vtkMRMLPlotChartNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from RICENetLib import dependencies, task_stop
from RICENetLib.slicer_logic import path_text
from RICENetLib.gil_yield import MainThreadYielder
from RICENetTrainingLib import LR_SCHEDULES
from RICENetTrainingLib.slicer_logic import (CROP_CENTRES, DEVICES, SKULL_STRIP_CHOICES, TrainingLogic, TrainingSettings,
                                             required_packages, result_message)

POLL_INTERVAL_MS = 500


class RICENetTraining(ScriptedLoadableModule):
    """Train a RICE-NET ensemble (5-fold cross-validation) and run the modality ablation."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RICE-NET Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = ["RICENet"]  # its folder holds RICENetLib, the engine both modules use
        self.parent.contributors = ["RICE-NET for 3D Slicer contributors"]
        self.parent.helpText = _(
            "Trains the RICE-NET ensemble on a cohort table (patient_id,label,postop,event,dose) by k-fold "
            "cross-validation at patient level and writes a model bundle for the RICE-NET module. Runs can be stopped "
            "and resumed; the loss and validation macro F1 are plotted live. <i>Ablation</i> trains the seven modality "
            "combinations on the same folds. A GPU is strongly recommended."
        )
        self.parent.acknowledgementText = _("Implements the training protocol of the RICE-NET paper.")


@parameterNodeWrapper
class RICENetTrainingParameterNode:
    """The training choices and the nodes of the last run; saved with the scene."""

    # ctkPathLineEdits bound through RICENet's PathLineEditToStrConnector: "" when unset (pathlib.Path shows ".").
    cohortPath: str = ""
    outputPath: str = ""
    usePostop: bool = True
    useEvent: bool = True
    useDose: bool = True
    nFolds: Annotated[int, WithinRange(2, 10)] = 5
    epochs: Annotated[int, WithinRange(1, 100000)] = 800
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    batchSize: Annotated[int, WithinRange(1, 256)] = 4
    learningRate: Annotated[float, WithinRange(1e-7, 1.0)] = 1e-4
    lrSchedule: Annotated[str, Choice(list(LR_SCHEDULES))] = "constant"
    inputSize: Annotated[int, WithinRange(16, 512)] = 224
    spacingMm: Annotated[float, WithinRange(0.2, 10.0)] = 1.0
    skullStrip: Annotated[str, Choice(list(SKULL_STRIP_CHOICES))] = "deepbet"
    cropCentre: Annotated[str, Choice(list(CROP_CENTRES))] = "brain"
    flipProbability: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    bf16: bool = False
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    metricsTable: vtkMRMLTableNode
    trainingChart: vtkMRMLPlotChartNode


def settingsFromParameterNode(node: RICENetTrainingParameterNode) -> TrainingSettings:
    return TrainingSettings(
        cohort=path_text(node.cohortPath), output=path_text(node.outputPath),
        use_postop=node.usePostop, use_event=node.useEvent, use_dose=node.useDose,
        n_folds=node.nFolds, epochs=node.epochs, seed=node.seed, device=node.device, batch_size=node.batchSize,
        learning_rate=node.learningRate, lr_schedule=node.lrSchedule, input_size=node.inputSize, spacing_mm=node.spacingMm, skull_strip=node.skullStrip,
        crop_centre=node.cropCentre, flip_probability=node.flipProbability, bf16=node.bf16,
    )


class RICENetTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Start / Stop / Resume / Ablation on a worker thread; a QTimer polls progress and refreshes the plot.

    Requires the Slicer application.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None
        self._timer = None
        self._yieldTimer = None
        self._yielder = None
        self._chartShown = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        # RICENet (this module's dependency) registers the str <-> ctkPathLineEdit connector of the path fields.
        import RICENet  # noqa: F401

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RICENetTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RICENetTrainingLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)
        # PythonQt's main thread holds the GIL while Qt waits: a 0 ms timer hands it to the worker (gil_yield.py).
        self._yieldTimer = qt.QTimer()
        self._yieldTimer.setInterval(0)
        self._yielder = MainThreadYielder(self._yieldTimer)
        self._yieldTimer.connect("timeout()", self._yielder.tick)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.startButton.connect("clicked(bool)", lambda: self._start(resume=False, ablation=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self._start(resume=True, ablation=False))
        self.ui.ablationButton.connect("clicked(bool)", lambda: self._start(resume=False, ablation=True))
        self.ui.stopButton.connect("clicked(bool)", self.onStopButton)
        self.ui.cohortFolderButton.connect("clicked(bool)", self.onCohortFolderButton)

        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:  # also when Slicer quits
        self._stopTask(task_stop.QUIT_WAIT_S)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self._stopTask(task_stop.SCENE_CLOSE_WAIT_S)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def onCohortFolderButton(self) -> None:
        """The cohort field's own browse button opens a file dialog (it accepts a CSV); this one picks a folder."""
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Cohort folder (one sub-folder per patient)"),
                                                     self.ui.cohortPathLineEdit.currentPath)
        if folder:
            self.ui.cohortPathLineEdit.currentPath = folder

    def setParameterNode(self, inputParameterNode: RICENetTrainingParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry a "SlicerParameterName" property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            if self._parameterNode.metricsTable:
                self.ui.metricsTableView.setMRMLTableNode(self._parameterNode.metricsTable)

    # -- runs ----------------------------------------------------------------
    def _start(self, resume: bool, ablation: bool) -> None:
        if self._task is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            settings = settingsFromParameterNode(self._parameterNode)
            # The RICENet module's helper: torch from the PyTorch extension, the rest with one confirmation.
            from RICENet import ensureDependencies

            if not ensureDependencies(required_packages(settings), requester="RICE-NET Training"):
                return
            start = self.logic.engine.start_ablation if ablation else self.logic.engine.start
            self._task = start(settings, resume=resume)
            self._yielder.watch(self._task)  # yields until the worker thread has ended, also after a stop
            self._chartShown = False
            self._setRunning(True)
            self._timer.start()

    def onStopButton(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.ui.statusLabel.text = _("Stopping at the end of the current step; Resume continues from the last checkpoint.")
            self.ui.stopButton.enabled = False

    def _poll(self) -> None:
        task = self._task
        if task is None:
            self._timer.stop()
            return
        status = task.status()
        self.ui.progressBar.value = int(round(1000 * status.fraction))
        if status.message:
            self.ui.statusLabel.text = status.message
        chart = self.logic.engine.update_plot() if self._parameterNode is not None else None  # none after a scene close
        if chart is not None:
            self._parameterNode.trainingChart = chart
            if not self._chartShown:
                slicer.modules.plots.logic().ShowChartInLayout(chart)
                self._chartShown = True
        if not status.finished:
            return
        self._timer.stop()
        self._task = None
        self._setRunning(False)
        state = task_stop.outcome(task, status)
        if state == "done":
            with slicer.util.tryWithErrorDisplay(_("The training results could not be shown.")):
                table = self.logic.engine.show_metrics(status.result)
                self._parameterNode.metricsTable = table
                self.ui.metricsTableView.setMRMLTableNode(table)
                self.ui.statusLabel.text = result_message(status.result)
                reliability = self.logic.engine.show_reliability(status.result)  # None: no calibration to show
                if reliability is not None:
                    slicer.modules.plots.logic().ShowChartInLayout(reliability)
        elif state == "cancelled":
            self.ui.statusLabel.text = _("Stopped. Resume continues from the last finished epoch.")
        else:
            message = str(status.error) if status.user_error else _("Training failed: {error}").format(error=status.error)
            self.ui.statusLabel.text = message
            slicer.util.errorDisplay(message, detailedText=status.traceback or None)

    def _stopTask(self, waitSeconds: float) -> None:
        """Stop the run; forget it only once its thread has ended (else _poll goes on and Start stays disabled)."""
        if self._task is None:
            if self._timer is not None:
                self._timer.stop()
            return
        if task_stop.stop(self._task, waitSeconds):
            if self._timer is not None:
                self._timer.stop()
            self._task = None
            self._setRunning(False)
        else:
            self.ui.stopButton.enabled = False
            self.ui.statusLabel.text = _("Stopping at the end of the current step…")
            logging.warning("RICE-NET Training: the worker thread is still finishing its current step.")

    def _setRunning(self, running: bool) -> None:
        for button in (self.ui.startButton, self.ui.resumeButton, self.ui.ablationButton):
            button.enabled = not running
        self.ui.stopButton.enabled = running
        self.ui.progressBar.visible = running
        if running:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Loading and preparing the cohort…")


class RICENetTrainingLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic object: the parameter node and the Qt-free training logic on ``slicer.mrmlScene``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.engine = TrainingLogic(slicer.mrmlScene)

    def getParameterNode(self) -> RICENetTrainingParameterNode:
        return RICENetTrainingParameterNode(super().getParameterNode())

    def train(self, settings: TrainingSettings, resume: bool = False):
        """Train on the calling thread (scripts, the self-test); the widget uses a worker thread instead."""
        return self.engine.start(settings, resume=resume).wait()


class RICENetTrainingTest(ScriptedLoadableModuleTest):
    """Slicer self-test: module and widget set-up and the parameter node, then (when the engine's packages are
    installed) a two-fold, one-epoch run on a small synthetic cohort.

    Runs inside the Slicer application only (ctest via ``slicer_add_python_unittest``
    in the extension build, or *Reload and Test*). It cannot run on the
    development machines, which have no Slicer GUI; there
    ``Testing/test_training_logic.py`` tests the same logic on slicer-core. On a
    fresh install (and in the extension factory) torch, MONAI and nilearn are
    absent: the training part is then skipped, and says so with ``delayDisplay``
    and a log warning.
    """

    ENGINE_MODULES = ("torch", "monai", "safetensors", "nilearn")

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_RICENetTraining_widget()
        self.setUp()
        self.test_RICENetTraining_small_run()

    def test_RICENetTraining_widget(self):
        self.delayDisplay("Setting up the module widget")
        widget = slicer.modules.ricenettraining.widgetRepresentation().self()
        widget.enter()
        node = widget._parameterNode
        self.assertIsNotNone(node)
        node.cohortPath = ""
        self.assertEqual(widget.ui.cohortPathLineEdit.currentPath, "")  # not "."
        widget.ui.outputPathLineEdit.currentPath = "/tmp/ricenet-bundle"
        self.assertEqual(settingsFromParameterNode(node).output, "/tmp/ricenet-bundle")
        self.assertTrue(widget.ui.startButton.enabled)
        self.assertFalse(widget.ui.stopButton.enabled)

    def test_RICENetTraining_small_run(self):
        import tempfile

        missing = dependencies.unavailable_modules(self.ENGINE_MODULES)
        if missing:
            message = (f"RICE-NET Training engine test skipped: {', '.join(missing)} not installed "
                       "(install the PyTorch extension and run the module once).")
            logging.warning(message)
            self.delayDisplay(message)
            return

        from RICENetLib.synthetic import write_cohort

        with tempfile.TemporaryDirectory() as folder:
            self.delayDisplay("Synthesising a small cohort")
            cohort = write_cohort(pathlib.Path(folder) / "cohort", cases=6, seed=3, size=32)
            settings = TrainingSettings(cohort=str(cohort), output=str(pathlib.Path(folder) / "bundle"), n_folds=2,
                                        epochs=1, batch_size=2, input_size=32, spacing_mm=6.0, skull_strip="none",
                                        device="cpu")
            logic = TrainingLogic(slicer.mrmlScene)
            self.delayDisplay("Training two folds for one epoch")
            status = logic.start(settings).wait()
            self.assertEqual(status.state, "done", status.traceback)
            self.assertTrue((pathlib.Path(folder) / "bundle" / "bundle.json").is_file())
            self.assertIsNotNone(logic.update_plot(force=True))
            table = logic.show_metrics(status.result)
            self.assertEqual(table.GetNumberOfRows(), 2 + 2)
            self.assertTrue((pathlib.Path(folder) / "bundle" / "reliability.png").is_file())
            reliability = logic.show_reliability(status.result)
            self.assertGreaterEqual(reliability.GetNumberOfPlotSeriesNodes(), 2)  # diagonal, raw (6 patients: no T)
        self.delayDisplay("Test passed")
