"""RICE-NET classification module for 3D Slicer: recurrence or RICE, with a heatmap on the slice views.

A table of contents, not an engine: the module, the parameter node, a widget
that binds the .ui to it and polls a worker thread, a thin logic that hands
everything to :class:`RICENetLib.slicer_logic.ClassificationLogic` (Qt-free,
tested outside Slicer on slicer-core), and the Slicer self-test.

This file needs the Slicer application (Qt, ``slicer.app``); it cannot run on
machines without a Slicer GUI. ``Testing/test_slicer_logic.py`` exercises the
same logic end to end there, and ``Testing/test_module_ui.py`` checks that the
widget names used here exist in ``Resources/UI/RICENet.ui``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pathlib
import re
import tempfile
from typing import Annotated

import ctk
import qt
import vtk

import slicer
from slicer import vtkMRMLLinearTransformNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import (
    Choice,
    GuiConnector,
    WithinRange,
    parameterNodeGuiConnector,
    parameterNodeWrapper,
    unannotatedType,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from RICENetLib import dependencies, task_stop
from RICENetLib.sample_data import SAMPLE_CATEGORY, SAMPLE_NAME, register_sample_data
from RICENetLib.gil_yield import MainThreadYielder
from RICENetLib.review import CALLS, ReviewList
from RICENetLib.review_scene import ReviewScene
from RICENetLib.slicer_logic import (
    DEVICES,
    DOSE_UNITS,
    DICOM_EXPORT_REQUIREMENTS,
    SAMPLE_DATA_REQUIREMENTS,
    SKULL_STRIP_CHOICES,
    ClassificationLogic,
    ClassificationSettings,
    load_synthetic_case,
    path_text,
    required_packages,
)

OCCLUSION_PRESETS = ("quick", "standard", "fine")
SETTINGS_BUNDLE_KEY = "RICENet/BundlePath"
SETTINGS_REVIEWER_KEY = "RICENet/Reviewer"
#: Review shortcuts, active while the module is shown (installed on enter, removed on exit), also with the
#: focus in a slice view. Alt+arrows and Alt+digits are not taken by Slicer's menus or slice views.
REVIEW_SHORTCUTS = {"Alt+Right": "next", "Alt+Left": "previous", "Alt+1": "agree", "Alt+2": "disagree", "Alt+3": "unsure"}
POLL_INTERVAL_MS = 200


class RICENet(ScriptedLoadableModule):
    """RICE-NET: tumour recurrence vs radiation-induced contrast enhancement (RICE)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RICE-NET")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = []
        self.parent.contributors = ["RICE-NET for 3D Slicer contributors"]
        self.parent.helpText = _(
            "Classifies a new contrast-enhancing lesion on glioblastoma follow-up MRI as <b>tumour recurrence</b> or "
            "<b>radiation-induced contrast enhancement (RICE)</b> from the post-operative T1c MRI, the event T1c MRI "
            "and the radiotherapy dose, with a 5-fold 3D ResNet-18 ensemble. The occlusion-sensitivity heatmap is shown "
            "over the event MRI (registered to the post-op MRI) with the isodose lines. "
            "Try it with <i>Sample Data → RICE-NET</i> (a synthetic case). Research use only; not a medical device."
        )
        self.parent.acknowledgementText = _(
            "Implements the RICE-NET paper. Synthetic anatomy from the MNI ICBM152 2009a templates "
            "(Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, "
            "McGill University)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


# --------------------------------------------------------------------------- dependencies and sample data


def ensureDependencies(requirements, *, needTorch: bool = True, requester: str = "RICE-NET") -> bool:
    """Make the engine's packages available, asking the user once; never called at import time.

    torch comes from the PyTorch extension (it picks the build for the GPU);
    the rest through pip with one confirmation, pinned so that pip never
    replaces torch, numpy, SimpleITK or VTK (:mod:`RICENetLib.dependencies`
    decides; this function only shows dialogs and runs pip). Returns False
    when the user declines or pip fails (the user has been told why).
    """
    if needTorch and importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(_("{requester} needs the PyTorch extension. Install it with the Extensions Manager "
                                       "and restart Slicer.").format(requester=requester))
            return False
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
            return False
    plan = dependencies.install_plan(requirements)  # InputError (torch missing) reaches the caller's error display
    if not plan.needed:
        return True
    try:  # a module, not "import slicer.packaging": that would make "slicer" a local name of this function
        packaging = importlib.import_module("slicer.packaging")  # Slicer >= 5.12
    except ModuleNotFoundError:
        packaging = None
    from subprocess import CalledProcessError

    with tempfile.TemporaryDirectory() as folder:
        constraints = pathlib.Path(folder) / "constraints.txt"
        constraints.write_text(plan.constraints_text(), encoding="utf-8")
        try:
            if packaging is not None:
                packaging.pip_ensure(plan.missing, constraints=constraints, requester=requester)
            elif not _pipInstallWithConfirmation(plan, constraints, requester):
                return False
        except RuntimeError:  # pip_ensure: the user declined
            return False
        except CalledProcessError:
            logging.exception("pip failed")
            slicer.util.errorDisplay(plan.failure_message(requester))
            return False
    return True


def _pipInstallWithConfirmation(plan, constraints, requester) -> bool:
    """Slicer 5.10 (no slicer.packaging): confirm, then pip with the pins; Slicer waits meanwhile.

    ``slicer.util.pip_install`` blocks until pip ends; it processes Qt events
    at every line pip prints, so a busy progress dialog and the status bar
    stay painted, but the user cannot work in Slicer during the install.
    """
    if not slicer.util.confirmOkCancelDisplay(
            _("{requester} needs these Python packages: {names}. Install them now? Slicer waits until pip is done "
              "(this can take minutes).").format(requester=requester, names=", ".join(plan.missing)),
            windowTitle=_("Install Python packages")):
        return False
    message = _("Installing {names}…").format(names=", ".join(plan.missing))
    slicer.util.showStatusMessage(message)
    dialog = slicer.util.createProgressDialog(labelText=message, windowTitle=requester, maximum=0)  # busy
    dialog.setCancelButton(None)  # pip cannot be stopped from here
    dialog.show()
    slicer.app.processEvents()
    try:
        with slicer.util.WaitCursor():
            slicer.util.pip_install(plan.pip_arguments(constraints))
    finally:
        dialog.close()
        slicer.util.showStatusMessage("")
    return True


def registerSampleData():
    """The synthetic case in the Sample Data module: generated locally, nothing to download (Slicer 5.10+)."""
    import SampleData

    thumbnail = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "RICENetSample.png")
    register_sample_data(SampleData.SampleDataLogic, loadSyntheticSample, thumbnail, title=_("RICE-NET"))


def loadSyntheticSample(source=None):
    """Generate the synthetic case (post-op, event, dose) into the scene and show the event MRI."""
    with slicer.util.tryWithErrorDisplay(_("The RICE-NET sample case could not be made."), waitCursor=True):
        if not ensureDependencies(SAMPLE_DATA_REQUIREMENTS, needTorch=False):
            return []
        nodes = load_synthetic_case(slicer.mrmlScene)
        slicer.util.setSliceViewerLayers(background=nodes["event"], fit=True)
        return list(nodes.values())
    return []


# --------------------------------------------------------------------------- parameter node


@parameterNodeGuiConnector
class PathLineEditToStrConnector(GuiConnector):
    """Binds a ``ctkPathLineEdit`` to a ``str`` parameter, so an unset path shows an empty field.

    Slicer's own connector binds it to ``pathlib.Path``, whose unset value
    ``Path()`` reads and shows as ".". Registered once RICENet.py is imported;
    RICENetTraining uses it too.
    """

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return type(widget) == ctk.ctkPathLineEdit and unannotatedType(datatype) == str

    @staticmethod
    def create(widget, datatype):
        return PathLineEditToStrConnector(widget) if PathLineEditToStrConnector.canRepresent(widget, datatype) else None

    def __init__(self, widget) -> None:
        super().__init__()
        self._widget = widget

    def _connect(self) -> None:
        self._widget.currentPathChanged.connect(self.changed)

    def _disconnect(self) -> None:
        self._widget.currentPathChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self) -> str:
        return path_text(self._widget.currentPath)

    def write(self, value: str) -> None:
        if path_text(value) != self._widget.currentPath:  # rewriting moves the cursor while the user types
            self._widget.currentPath = path_text(value)



@parameterNodeWrapper
class RICENetParameterNode:
    """The module's choices and the nodes of its last run; saved with the scene."""

    postopVolume: vtkMRMLScalarVolumeNode
    eventVolume: vtkMRMLScalarVolumeNode
    doseVolume: vtkMRMLScalarVolumeNode
    bundlePath: str = ""  # a ctkPathLineEdit (PathLineEditToStrConnector): "" when unset, where pathlib.Path shows "."
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    skullStrip: Annotated[str, Choice(list(SKULL_STRIP_CHOICES))] = "bundle"
    occlusion: bool = True
    occlusionPreset: Annotated[str, Choice(list(OCCLUSION_PRESETS))] = "quick"
    doseUnit: Annotated[str, Choice(list(DOSE_UNITS))] = "auto"
    isodoseLevels: str = "50, 60"
    heatmapThreshold: Annotated[float, WithinRange(0.0, 0.95)] = 0.2
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    # Results of the last run.
    verdict: str = ""
    resultsTable: vtkMRMLTableNode
    doseOverlapTable: vtkMRMLTableNode
    heatmapVolume: vtkMRMLScalarVolumeNode
    isodoseSegmentation: vtkMRMLSegmentationNode
    registrationTransform: vtkMRMLLinearTransformNode


def settingsFromParameterNode(parameterNode: RICENetParameterNode) -> ClassificationSettings:
    return ClassificationSettings(
        bundle=path_text(parameterNode.bundlePath),
        device=parameterNode.device,
        skull_strip=parameterNode.skullStrip,
        occlusion=parameterNode.occlusionPreset if parameterNode.occlusion else "none",
        dose_unit=parameterNode.doseUnit,
        isodose_levels=parameterNode.isodoseLevels,
        heatmap_threshold=parameterNode.heatmapThreshold,
        heatmap_opacity=parameterNode.heatmapOpacity,
    )


# --------------------------------------------------------------------------- widget


class RICENetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, runs the logic on a worker thread and polls it with a QTimer.

    Only this (main) thread touches MRML and Qt; the worker only computes.
    Requires the Slicer application.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None
        self._job = None
        self._result = None
        self._timer = None
        self._yieldTimer = None
        self._yielder = None
        self._review = None  # the open ReviewList
        self._shortcuts = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RICENet.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RICENetLogic()

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
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicomButton)
        # The heatmap sliders restyle from the parameter-node observer (_onParameterNodeModified): a slot
        # connected here would run before the parameter node's own connection and read the previous value.
        self.ui.occlusionCheckBox.connect("toggled(bool)", self.ui.occlusionPresetComboBox.setEnabled)
        self.ui.openReviewListButton.connect("clicked(bool)", self.onOpenReviewList)
        self.ui.previousCaseButton.connect("clicked(bool)", lambda _checked: self.onMoveReview("previous"))
        self.ui.nextCaseButton.connect("clicked(bool)", lambda _checked: self.onMoveReview("next"))
        for call in CALLS:
            getattr(self.ui, f"{call}Button").connect("clicked(bool)", lambda _checked, c=call: self.onReviewCall(c))
        self.ui.reviewNoteLineEdit.connect("editingFinished()", lambda: self.onReviewCall(None))
        self.ui.reviewTableWidget.connect("cellClicked(int,int)", lambda row, _column: self.onMoveReview(row))
        self.ui.reviewerLineEdit.text = str(qt.QSettings().value(SETTINGS_REVIEWER_KEY) or "")
        self._updateReviewButtons()

        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:  # also when Slicer quits
        self._removeShortcuts()
        self._stopTask(task_stop.QUIT_WAIT_S)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._installShortcuts()

    def exit(self) -> None:
        self._removeShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopTask(task_stop.SCENE_CLOSE_WAIT_S)
        self._job = self._result = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node) -> None:
        # SlicerRT sets the dose attribute after adding the node: guess once the event loop is idle.
        if node is not None and node.IsA("vtkMRMLScalarVolumeNode"):
            qt.QTimer.singleShot(0, self._fillEmptyInputs)

    # -- parameter node ----------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not path_text(self._parameterNode.bundlePath):
            remembered = qt.QSettings().value(SETTINGS_BUNDLE_KEY)
            if remembered:
                self._parameterNode.bundlePath = str(remembered)
        self._fillEmptyInputs()

    def _fillEmptyInputs(self) -> None:
        node = self._parameterNode
        if node is None or self._task is not None:
            return
        guesses = self.logic.engine.guess_inputs()
        for name, field in (("postop", "postopVolume"), ("event", "eventVolume"), ("dose", "doseVolume")):
            if getattr(node, field) is None and guesses.get(name) is not None:
                setattr(node, field, guesses[name])

    def setParameterNode(self, inputParameterNode: RICENetParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry a "SlicerParameterName" property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            if self._parameterNode.resultsTable:
                self.ui.resultsTableView.setMRMLTableNode(self._parameterNode.resultsTable)
            self.ui.doseOverlapTableView.setMRMLTableNode(self._parameterNode.doseOverlapTable)
            self._updateButtons()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateButtons()
        self._restyleHeatmap()  # the node holds the sliders' new values by now

    def _updateButtons(self, caller=None, event=None) -> None:
        node = self._parameterNode
        ready = bool(node and node.postopVolume and node.eventVolume and node.doseVolume and path_text(node.bundlePath))
        running = self._task is not None
        self.ui.applyButton.enabled = ready and not running
        self.ui.applyButton.toolTip = _("Classify the case") if ready else _("Select the three volumes and a model bundle folder")
        self.ui.exportButton.enabled = self._result is not None and not running
        self.ui.exportDicomButton.enabled = self._result is not None and not running
        self.ui.occlusionPresetComboBox.enabled = bool(node and node.occlusion)

    # -- run ---------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._task is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("RICE-NET could not start."), waitCursor=True):
            node = self._parameterNode
            settings = settingsFromParameterNode(node)
            if not ensureDependencies(required_packages(settings)):
                return
            lesion = self.ui.lesionSegmentSelector
            self._job = self.logic.engine.prepare(node.postopVolume, node.eventVolume, node.doseVolume, settings,
                                                  lesion.currentNode(), lesion.currentSegmentID() or None)
            self._result = None
            qt.QSettings().setValue(SETTINGS_BUNDLE_KEY, settings.bundle)
            self._task = self.logic.engine.start(self._job)
            self._yielder.watch(self._task)  # yields until the worker thread has ended, also after a cancel
            self._setRunning(True)
            self._timer.start()

    def onCancelButton(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.ui.statusLabel.text = _("Cancelling… (stops at the next step)")
            self.ui.cancelButton.enabled = False

    def _poll(self) -> None:
        task = self._task
        if task is None:
            self._timer.stop()
            return
        status = task.status()
        self.ui.progressBar.value = int(round(100 * status.fraction))
        if status.message:
            self.ui.statusLabel.text = status.message
        if not status.finished:
            return
        self._timer.stop()
        self._task = None
        self._setRunning(False)
        state = task_stop.outcome(task, status)
        if state == "done":
            with slicer.util.tryWithErrorDisplay(_("RICE-NET could not show its results.")):
                self._showResult(self.logic.engine.show(self._job, status.result), status.elapsed_s)
        elif state == "cancelled":
            self.ui.statusLabel.text = _("Cancelled.")
        else:
            message = str(status.error) if status.user_error else _("RICE-NET failed: {error}").format(error=status.error)
            self.ui.statusLabel.text = message
            slicer.util.errorDisplay(message, detailedText=status.traceback or None)
        self._updateButtons()

    def _showResult(self, result, elapsed_s: float) -> None:
        self._result = result
        node = self._parameterNode
        ids = result.node_ids
        scene = slicer.mrmlScene
        with slicer.util.NodeModify(node.parameterNode):
            node.verdict = result.verdict
            node.resultsTable = scene.GetNodeByID(ids["table"]) if "table" in ids else None
            node.doseOverlapTable = scene.GetNodeByID(ids["dose_overlap"]) if "dose_overlap" in ids else None
            node.heatmapVolume = scene.GetNodeByID(ids["heatmap"]) if "heatmap" in ids else None
            node.isodoseSegmentation = scene.GetNodeByID(ids["isodose"]) if "isodose" in ids else None
            node.registrationTransform = scene.GetNodeByID(ids["transform"]) if "transform" in ids else None
        self.ui.resultsTableView.setMRMLTableNode(node.resultsTable)
        self.ui.doseOverlapTableView.setMRMLTableNode(node.doseOverlapTable)
        self.ui.statusLabel.text = " ".join([_("Done in {seconds:.0f} s.").format(seconds=elapsed_s)] + result.messages)
        for message in result.messages:
            logging.warning("RICE-NET: %s", message)

    def _stopTask(self, waitSeconds: float) -> None:
        """Cancel the run; forget it only once its thread has ended (else _poll goes on, Apply stays disabled)."""
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
            self.ui.cancelButton.enabled = False
            self.ui.statusLabel.text = _("Cancelling… (stops at the next step)")
            logging.warning("RICE-NET: the worker thread is still finishing its current step.")

    def _setRunning(self, running: bool) -> None:
        self.ui.applyButton.enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.visible = running
        if running:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Starting…")

    def _restyleHeatmap(self) -> None:
        node = self._parameterNode
        if node is None or node.heatmapVolume is None:
            return
        self.logic.engine.restyle_heatmap(node.heatmapVolume.GetID(), settingsFromParameterNode(node))

    # -- review mode (RICENetLib.review: the list and its CSV; review_scene: one case at a time) -------------
    def _installShortcuts(self) -> None:
        if self._shortcuts:
            return
        actions = {"next": lambda: self.onMoveReview("next"), "previous": lambda: self.onMoveReview("previous")}
        actions.update({call: (lambda c=call: self.onReviewCall(c)) for call in CALLS})
        for key, action in REVIEW_SHORTCUTS.items():
            shortcut = qt.QShortcut(slicer.util.mainWindow())
            shortcut.setKey(qt.QKeySequence(key))
            shortcut.connect("activated()", actions[action])
            self._shortcuts.append(shortcut)

    def _removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.disconnect("activated()")
            shortcut.setParent(None)
        self._shortcuts = []

    def onOpenReviewList(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Open a results table (predictions.csv) or a cohort table"), "",
            _("Case lists (*.csv)"))
        if not path:
            return
        source = pathlib.Path(path)
        with slicer.util.tryWithErrorDisplay(_("The case list could not be opened."), waitCursor=True):
            self._review = ReviewList.open(source.parent if source.name == "predictions.csv" else source)
            self.ui.reviewListLabel.text = _("{count} cases; calls saved to {path}").format(
                count=len(self._review.cases), path=self._review.review_file)
            self._fillReviewTable()
            self.onMoveReview(0)

    def _fillReviewTable(self) -> None:
        table, rows = self.ui.reviewTableWidget, self._review.rows()
        columns = [c for c in rows[0] if c != "error"]
        table.clear()
        table.setColumnCount(len(columns))
        table.setRowCount(len(rows))
        table.setHorizontalHeaderLabels(columns)
        for r, row in enumerate(rows):
            for c, column in enumerate(columns):
                item = qt.QTableWidgetItem(row[column])
                if row["error"]:
                    item.setToolTip(row["error"])
                table.setItem(r, c, item)
        table.resizeColumnsToContents()

    def onMoveReview(self, where) -> None:
        """Show the case at row ``where`` (or the "next"/"previous" one): stored results at once, else the engine."""
        review, node = self._review, self._parameterNode
        if review is None or node is None:
            return
        if self._task is not None and not task_stop.stop(self._task, task_stop.SCENE_CLOSE_WAIT_S):
            self.ui.statusLabel.text = _("Cancelling… (stops at the next step); then move on.")
            return
        self._task = None
        self._setRunning(False)
        if review.call_of(review.current.case_id).note != self.ui.reviewNoteLineEdit.text:
            self.onReviewCall(None)  # a note typed but not yet confirmed belongs to the case it was typed on
        case = {"next": review.next, "previous": review.previous}[where]() if isinstance(where, str) else review.go(where)
        if case is None:
            return
        shown = self.logic.review.show(case, settingsFromParameterNode(node))
        self._job, self._result = shown.job, None
        self.ui.reviewTableWidget.selectRow(review.position)
        self.ui.reviewCaseLabel.text = f"{case.case_id}: " + (shown.error or case.verdict or _("not computed yet"))
        if shown.volumes:
            with slicer.util.NodeModify(node.parameterNode):
                node.postopVolume, node.eventVolume, node.doseVolume = (shown.volumes[m] for m in ("postop", "event", "dose"))
        if shown.result is not None:
            self._showResult(shown.result, 0.0)
            self.ui.statusLabel.text = " ".join([_("Stored results of {case} (not recomputed).").format(case=case.case_id)]
                                                + shown.result.messages)
        elif shown.needs_engine:
            self.onApplyButton()  # the module's own path: worker thread, progress, Cancel
        self._updateButtons()
        self._updateReviewButtons()

    def onReviewCall(self, call) -> None:
        review = self._review
        if review is None:
            return
        reviewer = self.ui.reviewerLineEdit.text.strip()
        qt.QSettings().setValue(SETTINGS_REVIEWER_KEY, reviewer)
        with slicer.util.tryWithErrorDisplay(_("The review table could not be saved; your last call is not recorded.")):
            review.record(review.current.case_id, call, note=self.ui.reviewNoteLineEdit.text, reviewer=reviewer)
        self._fillReviewTable()
        self.ui.reviewTableWidget.selectRow(review.position)
        self._updateReviewButtons()

    def _updateReviewButtons(self) -> None:
        review = self._review
        for name in ("previousCaseButton", "nextCaseButton", "agreeButton", "disagreeButton", "unsureButton",
                     "reviewNoteLineEdit"):
            getattr(self.ui, name).enabled = review is not None
        if review is None:
            return
        self.ui.previousCaseButton.enabled = review.position > 0
        self.ui.nextCaseButton.enabled = review.position + 1 < len(review.cases)
        current = review.call_of(review.current.case_id)
        for call in CALLS:
            getattr(self.ui, f"{call}Button").checked = current.call == call
        self.ui.reviewNoteLineEdit.text = current.note

    # -- export ------------------------------------------------------------
    def _exportTarget(self, title: str, suffix: str):
        """(folder, overwrite) chosen by the user for an export, or None when cancelled."""
        if self._result is None or self._job is None:
            return None
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), title)
        if not folder:
            return None
        event = slicer.mrmlScene.GetNodeByID(self._job.event_id)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", event.GetName() if event else "case").strip("_") or "case"
        target = pathlib.Path(folder) / f"{name}-{suffix}"
        if target.exists() and any(target.iterdir()):
            if not slicer.util.confirmYesNoDisplay(_("{path} exists. Replace it?").format(path=target)):
                return None
            return target, True
        return target, False

    def onExportButton(self) -> None:
        chosen = self._exportTarget(_("Export the RICE-NET report into"), "RICENet")
        if chosen is None:
            return
        target, overwrite = chosen
        with slicer.util.tryWithErrorDisplay(_("The report could not be written."), waitCursor=True):
            paths = self.logic.engine.export(self._job, self._result.prediction, target, overwrite=overwrite)
            self.ui.statusLabel.text = _("Report written to {path}").format(path=paths["report"])
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(paths["report"])))

    def onExportDicomButton(self) -> None:
        """Parametric Map, Segmentation and SR into a folder; the inputs must come from the DICOM database."""
        if self._result is None or not ensureDependencies(DICOM_EXPORT_REQUIREMENTS, needTorch=False):
            return
        chosen = self._exportTarget(_("Write the RICE-NET DICOM results into"), "RICENet-DICOM")
        if chosen is None:
            return
        target, overwrite = chosen
        with slicer.util.tryWithErrorDisplay(_("The DICOM results could not be written."), waitCursor=True):
            self.logic.engine.export_dicom(self._job, self._result.prediction, target,
                                           slicer.dicomDatabase.fileForInstance, overwrite=overwrite)
            self.ui.statusLabel.text = _("DICOM results written to {path} (import them with the DICOM module)").format(
                path=target)


# --------------------------------------------------------------------------- logic


class RICENetLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic object: the parameter node, and the Qt-free engine logic on ``slicer.mrmlScene``.

    >>> logic = RICENetLogic()                                                   # doctest: +SKIP
    >>> result = logic.process(postop, event, dose, ClassificationSettings(bundle="/models/ricenet"))  # doctest: +SKIP
    >>> result.verdict                                                           # doctest: +SKIP
    'Recurrence — 4 of 5 folds, mean p = 0.81'
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.engine = ClassificationLogic(slicer.mrmlScene)
        self.review = ReviewScene(self.engine)  # review mode: one case of a list at a time in the scene

    def getParameterNode(self) -> RICENetParameterNode:
        return RICENetParameterNode(super().getParameterNode())

    def process(self, postopVolume, eventVolume, doseVolume, settings: ClassificationSettings, progress=None, cancel=None):
        """Classify on the calling thread (scripts, the self-test); the widget uses a worker thread instead."""
        return self.engine.run(postopVolume, eventVolume, doseVolume, settings, progress=progress, cancel=cancel)


# --------------------------------------------------------------------------- self-test


class RICENetTest(ScriptedLoadableModuleTest):
    """Slicer self-test: module and widget set-up, the sample-data entry, the heatmap sliders, then (when the
    engine's packages are installed) the sample case through the logic with an untrained tiny bundle.

    Runs inside the Slicer application only (ctest via ``slicer_add_python_unittest``
    in the extension build, or *Reload and Test* in the module panel). It cannot
    run on the development machines, which have no Slicer GUI; there the same
    logic is tested on slicer-core by ``Testing/test_slicer_logic.py``. On a fresh
    install (and in the extension factory) torch, MONAI and nilearn are absent and
    ``pip_ensure`` does not install in testing mode: the engine part is then
    skipped, and says so with ``delayDisplay`` and a log warning.
    """

    ENGINE_MODULES = ("torch", "monai", "safetensors", "nilearn")

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_RICENet_widget_and_sample_data()
        self.setUp()
        self.test_RICENet_sample_case()

    def test_RICENet_widget_and_sample_data(self):
        import SampleData
        import SimpleITK as sitk

        from RICENetLib import mrml

        self.delayDisplay("Setting up the module widget")
        widget = slicer.modules.ricenet.widgetRepresentation().self()
        widget.enter()
        node = widget._parameterNode
        self.assertIsNotNone(node)
        if not path_text(node.bundlePath):
            self.assertEqual(widget.ui.bundlePathLineEdit.currentPath, "")  # not "."
        self.assertFalse(widget.ui.applyButton.enabled)  # no inputs yet

        self.delayDisplay("Heatmap sliders restyle with their new value")
        image = sitk.Image(16, 16, 16, sitk.sitkFloat32)
        image[8, 8, 8] = 1.0
        heatmap = mrml.update_heatmap(slicer.mrmlScene, image, name="RICENet self-test heatmap")
        node.heatmapVolume = heatmap
        widget.ui.heatmapThresholdSliderWidget.value = 0.5
        self.assertAlmostEqual(node.heatmapThreshold, 0.5)
        top = float(heatmap.GetAttribute("RICENet.Maximum"))
        self.assertAlmostEqual(heatmap.GetDisplayNode().GetLowerThreshold(), 0.5 * top, places=5)

        self.delayDisplay("Sample Data entry")
        registerSampleData()  # registering twice keeps one entry
        sources = SampleData.SampleDataLogic.sampleDataSourcesByCategory(SAMPLE_CATEGORY)
        ours = [source for source in sources if source.sampleName == SAMPLE_NAME]
        self.assertEqual(len(ours), 1)
        self.assertIs(ours[0].customDownloader, loadSyntheticSample)

    def test_RICENet_sample_case(self):
        missing = dependencies.unavailable_modules(self.ENGINE_MODULES)
        if missing:
            message = f"RICE-NET engine test skipped: {', '.join(missing)} not installed (install the PyTorch extension and run the module once)."
            logging.warning(message)
            self.delayDisplay(message)
            return

        from RICENetLib import mrml, quality
        from RICENetLib.slicer_logic import untrained_bundle

        self.delayDisplay("Making the synthetic sample case")
        nodes = load_synthetic_case(slicer.mrmlScene, size=48)
        self.assertIs(mrml.find_dose_volume(slicer.mrmlScene), nodes["dose"])

        with tempfile.TemporaryDirectory() as folder:
            bundle = untrained_bundle(pathlib.Path(folder) / "bundle", n_folds=2)
            settings = ClassificationSettings(bundle=str(bundle), skull_strip="none", occlusion="quick",
                                              device="cpu", isodose_levels="30, 40")
            logic = RICENetLogic()
            self.delayDisplay("Classifying with an untrained bundle")
            result = logic.process(nodes["postop"], nodes["event"], nodes["dose"], settings)

        # Skull stripping "none" on the sample head (skull included) fails the brain-volume gate ("Not reliable: ...");
        # the untrained bundle has no cross-validation AUC ("Model not validated ... — " first).
        self.assertRegex(result.verdict, r"(Recurrence|RICE).* — \d of 2 folds, mean p = \d\.\d\d")
        table = slicer.mrmlScene.GetNodeByID(result.node_ids["table"])
        self.assertEqual(table.GetNumberOfRows(), 2 + 3 + len(quality.GATE_NAMES))  # folds, ensemble rows, gates
        heatmap = slicer.mrmlScene.GetNodeByID(result.node_ids["heatmap"])
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            self.assertEqual(composite.GetForegroundVolumeID(), heatmap.GetID())
            self.assertEqual(composite.GetBackgroundVolumeID(), nodes["event"].GetID())
        self.assertIs(nodes["event"].GetParentTransformNode(), slicer.mrmlScene.GetNodeByID(result.node_ids["transform"]))

        # Re-running replaces the result nodes.
        count = slicer.mrmlScene.GetNumberOfNodes()
        with tempfile.TemporaryDirectory() as folder:
            settings.bundle = str(untrained_bundle(pathlib.Path(folder) / "bundle", n_folds=2))
            logic.process(nodes["postop"], nodes["event"], nodes["dose"], settings)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        self.delayDisplay("Test passed")
