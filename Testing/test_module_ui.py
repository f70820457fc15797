"""Static checks of the Slicer module files, which cannot run without the Slicer application.

* every ``self.ui.<name>`` the module code uses is a widget of its ``.ui`` file;
* every widget bound to the parameter node (``SlicerParameterName``) names a
  parameter of the module's ``@parameterNodeWrapper`` class, with a widget type
  that Slicer's GUI connectors can bind to that parameter's type;
* every MRML widget gets the scene (``mrmlSceneChanged`` → ``setMRMLScene``);
* every non-Qt widget class is declared as a custom widget;
* the names the module imports from the engine exist there.
"""

from __future__ import annotations

import ast
import importlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = ("RICENet", "RICENetTraining")

#: Widget classes Slicer's parameterNodeWrapper can bind, by parameter type (see slicer/parameterNodeWrapper/guiConnectors.py).
BINDABLE = {
    "bool": {"QCheckBox", "QPushButton", "ctkCheckablePushButton"},
    "int": {"QSpinBox", "QSlider", "QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider", "ctkDoubleSpinBox", "qMRMLSpinBox"},
    "str": {"QLineEdit", "QLabel", "QTextEdit"},
    "choice": {"QComboBox", "ctkComboBox"},
    "path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox"},
}
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QCheckBox", "QComboBox", "QLineEdit", "QSpinBox", "QDoubleSpinBox",
              "QProgressBar", "QTextEdit", "QSlider", "QTableView"}


def module_source(module: str) -> str:
    return (REPO / module / f"{module}.py").read_text(encoding="utf-8")


def ui_tree(module: str) -> ET.Element:
    return ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()


def ui_widgets(root: ET.Element) -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def ui_bindings(root: ET.Element) -> dict[str, str]:
    """widget name → parameter name, from the SlicerParameterName dynamic property."""
    bindings = {}
    for w in root.iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bindings[w.get("name")] = p.find("string").text
    return bindings


def parameter_fields(source: str) -> dict[str, str]:
    """Parameter name → kind (bool/int/float/str/choice/path/node) of the @parameterNodeWrapper class."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            kinds = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    text = ast.unparse(item.annotation)
                    if "Choice(" in text:
                        kind = "choice"
                    elif text.startswith("vtkMRML"):
                        kind = "node"
                    elif "Path" in text:
                        kind = "path"
                    else:
                        kind = re.sub(r"^Annotated\[(\w+),.*", r"\1", text)
                    kinds[item.target.id] = kind
            return kinds
    raise AssertionError("no @parameterNodeWrapper class")


@pytest.mark.parametrize("module", MODULES)
def test_widget_names_used_by_the_code_exist_in_the_ui(module):
    used = set(re.findall(r"\bself\.ui\.(\w+)", module_source(module)))
    widgets = ui_widgets(ui_tree(module))
    assert used, "the module uses no widgets?"
    assert used - set(widgets) == set(), f"{module}.py uses widgets missing from {module}.ui"


@pytest.mark.parametrize("module", MODULES)
def test_bound_widgets_match_parameter_types(module):
    root = ui_tree(module)
    widgets = ui_widgets(root)
    bindings = ui_bindings(root)
    fields = parameter_fields(module_source(module))
    assert bindings, "no widget is bound to the parameter node"
    for widget, parameter in bindings.items():
        assert parameter in fields, f"{widget} is bound to '{parameter}', which the parameter node lacks"
        kind = fields[parameter]
        assert widgets[widget] in BINDABLE[kind], f"{widget} ({widgets[widget]}) cannot be bound to a {kind} parameter"
    assert len(set(bindings.values())) == len(bindings), "two widgets bound to one parameter"


@pytest.mark.parametrize("module", MODULES)
def test_mrml_widgets_get_the_scene_and_custom_widgets_are_declared(module):
    root = ui_tree(module)
    widgets = ui_widgets(root)
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    needing_scene = {name for name, cls in widgets.items() if cls.startswith("qMRML") and cls != "qMRMLWidget"}
    assert needing_scene - receivers == set(), "MRML widgets without the scene"
    assert root.find("widget").get("class") == "qMRMLWidget" and root.find("widget").get("name") == module
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    assert {cls for cls in widgets.values() if cls not in QT_CLASSES} - declared == set()
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"


@pytest.mark.parametrize("module", MODULES)
def test_engine_names_imported_by_the_module_exist(module):
    tree = ast.parse(module_source(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("RICENetLib", "RICENetTrainingLib"):
            imported = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(imported, alias.name), f"{module}.py imports {alias.name} from {node.module}, which lacks it"


@pytest.mark.parametrize("module", MODULES)
def test_module_files_parse_and_mark_what_needs_slicer(module):
    source = module_source(module)
    tree = ast.parse(source)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {module, f"{module}Widget", f"{module}Logic", f"{module}Test"} <= classes
    test_doc = ast.get_docstring(next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Test"))
    assert "cannot" in test_doc and "Slicer" in test_doc  # says it cannot run here
    # Nothing is installed at import time: no pip call outside functions.
    top_level = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    calls = {ast.unparse(c.func) for n in top_level for c in ast.walk(n) if isinstance(c, ast.Call)}
    assert not {c for c in calls if "pip" in c}
