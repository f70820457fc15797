"""Static checks of the Slicer module files, which cannot run without the Slicer application.

* every ``self.ui.<name>`` the module code uses is a widget of its ``.ui`` file;
* every widget bound to the parameter node (``SlicerParameterName``) names a
  parameter of the module's ``@parameterNodeWrapper`` class, with a widget type
  that Slicer's GUI connectors can bind to that parameter's type;
* every MRML widget gets the scene (``mrmlSceneChanged`` → ``setMRMLScene``);
* every non-Qt widget class is declared as a custom widget;
* the names the module imports from the engine exist there;
* defects a Slicer user met, held off by reading the code as Python's compiler
  and Qt's signal order see it (each test says which).
"""

from __future__ import annotations

import ast
import importlib
import re
import symtable
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
    # ctkPathLineEdit ↔ str: RICENet.PathLineEditToStrConnector (Slicer's own binds it to pathlib.Path, which shows ".").
    "str": {"QLineEdit", "QLabel", "QTextEdit", "ctkPathLineEdit"},
    "choice": {"QComboBox", "ctkComboBox"},
    "path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox"},
}
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QCheckBox", "QComboBox", "QLineEdit", "QSpinBox", "QDoubleSpinBox", "QTableWidget",
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
                if not hasattr(imported, alias.name):  # a submodule: "from RICENetLib import dependencies"
                    importlib.import_module(f"{node.module}.{alias.name}")
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


def _functions(table: symtable.SymbolTable):
    for child in table.get_children():
        if child.get_type() == "function":
            yield child
        yield from _functions(child)


@pytest.mark.parametrize("module", MODULES)
def test_no_function_makes_a_module_name_local(module):
    """``import slicer.packaging`` inside ensureDependencies made ``slicer`` local to the whole function, so
    ``slicer.util.errorDisplay`` before it raised UnboundLocalError (torch missing, no PyTorch extension).
    Python's own symbol table says which names a function binds."""
    source = module_source(module)
    top = symtable.symtable(source, f"{module}.py", "exec")
    imported = {s.get_name() for s in top.get_symbols() if s.is_imported()}
    assert "slicer" in imported
    for function in _functions(top):
        local = {s.get_name() for s in function.get_symbols() if s.is_local() or s.is_imported()}
        assert not local & imported, f"{module}.py: {function.get_name()} binds {local & imported} locally"


def test_the_symbol_table_check_catches_the_reported_bug():
    """The old ensureDependencies in miniature, run in plain Python: the global ``slicer`` exists, yet the
    function fails before it reaches its import."""
    buggy = ("import types\nslicer = types.SimpleNamespace(util=None)\n"
             "def f():\n    slicer.util\n    import slicer.packaging\n")
    (function,) = _functions(symtable.symtable(buggy, "buggy.py", "exec"))
    assert function.lookup("slicer").is_imported()  # what the test above looks for
    scope: dict = {}
    exec(compile(buggy, "buggy.py", "exec"), scope)
    with pytest.raises(UnboundLocalError):
        scope["f"]()


def test_heatmap_sliders_restyle_from_the_parameter_node_observer():
    """A slot on a slider's valueChanged runs before the parameter node's connector (connected later, by
    connectGui) and read the previous value; the restyle now runs in the parameter node's Modified observer."""
    source = module_source("RICENet")
    assert not re.search(r"heatmap\w*SliderWidget\.connect\(", source)
    observer = re.search(r"def _onParameterNodeModified\(.*?\n(?=    def )", source, re.S).group(0)
    assert "self._restyleHeatmap()" in observer
    assert re.search(r"addObserver\(self\._parameterNode, vtk\.vtkCommand\.ModifiedEvent, self\._onParameterNodeModified\)",
                     source)


def test_path_fields_bind_as_text_through_the_registered_connector():
    """Unset pathlib.Path parameters show "." in the field; the path parameters are str, bound by a connector
    that RICENet.py registers and RICENetTraining imports before binding its .ui."""
    tree = ast.parse(module_source("RICENet"))
    connectors = [n for n in tree.body if isinstance(n, ast.ClassDef)
                  and any(ast.unparse(d) == "parameterNodeGuiConnector" for d in n.decorator_list)]
    assert connectors and "ctkPathLineEdit" in ast.unparse(connectors[0]) and "== str" in ast.unparse(connectors[0])
    for module in MODULES:
        root = ui_tree(module)
        fields = parameter_fields(module_source(module))
        paths = {ui_bindings(root)[w] for w, cls in ui_widgets(root).items() if cls == "ctkPathLineEdit"}
        assert paths and all(fields[p] == "str" for p in paths), f"{module}: path parameters must be str"
    training = module_source("RICENetTraining")
    setup = re.search(r"    def setup\(self\).*?\n(?=    def )", training, re.S).group(0)
    assert setup.index("import RICENet") < setup.index("loadUI")


@pytest.mark.parametrize("module", MODULES)
def test_a_field_for_a_file_or_a_folder_has_a_folder_button(module):
    """ctkPathLineEdit's browse button opens a file dialog whenever its filters include Files (CTK's
    ctkPathLineEdit::browse), so a field that also accepts a folder needs a button that picks one."""
    root = ui_tree(module)
    source = module_source(module)
    for widget in root.iter("widget"):
        if widget.get("class") != "ctkPathLineEdit":
            continue
        filters = next((p.findtext("set") for p in widget.findall("property") if p.get("name") == "filters"), "")
        if "Files" in filters and "Dirs" in filters:
            name = widget.get("name")
            assert "getExistingDirectory" in source and f"self.ui.{name}.currentPath = folder" in source, name


@pytest.mark.parametrize("module", MODULES)
def test_self_tests_skip_the_engine_part_when_its_packages_are_missing(module):
    """In the extension factory and on a fresh install torch, MONAI and nilearn are absent."""
    tree = ast.parse(module_source(module))
    test_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Test")
    text = ast.unparse(test_class)
    assert {"torch", "monai", "nilearn"} <= set(ast.literal_eval(re.search(r"ENGINE_MODULES = (\(.*?\))", text).group(1)))
    methods = [n for n in test_class.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    assert len(methods) >= 2, "a test that needs no engine, and one that does"
    for method in methods:
        body = ast.unparse(method)
        heavy = re.search(r"untrained_bundle|write_cohort|load_synthetic_case\(|\.process\(|\.start\(", body)
        if heavy:
            assert body.index("unavailable_modules(self.ENGINE_MODULES)") < heavy.start(), method.name
            assert "delayDisplay(message)" in body and "logging.warning(message)" in body


def test_review_section_holds_its_controls_and_shortcuts_follow_the_module():
    """The collapsible Review section has the list, the table, Previous/Next, the three calls, the note and
    the reviewer; its keyboard shortcuts exist only while the module is shown (Slicer's own modules put them
    on the main window on enter and take them off on exit), and every one names an action the widget has."""
    root = ui_tree("RICENet")
    section = next(w for w in root.iter("widget") if w.get("name") == "reviewCollapsibleButton")
    assert section.get("class") == "ctkCollapsibleButton"
    inside = ui_widgets(section)
    wanted = {"openReviewListButton": "QPushButton", "reviewTableWidget": "QTableWidget",
              "previousCaseButton": "QPushButton", "nextCaseButton": "QPushButton", "agreeButton": "QPushButton",
              "disagreeButton": "QPushButton", "unsureButton": "QPushButton", "reviewNoteLineEdit": "QLineEdit",
              "reviewerLineEdit": "QLineEdit"}
    assert {name: inside.get(name) for name in wanted} == wanted
    source = module_source("RICENet")
    tree = ast.parse(source)
    shortcuts = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], "id", "") == "REVIEW_SHORTCUTS")
    from RICENetLib.review import CALLS

    assert set(shortcuts.values()) == {"next", "previous", *CALLS} and len(shortcuts) == 2 + len(CALLS)
    methods = {n.name: ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "self._installShortcuts()" in methods["enter"]
    assert "self._removeShortcuts()" in methods["exit"] and "self._removeShortcuts()" in methods["cleanup"]
    assert "setParent(None)" in methods["_removeShortcuts"]
    for tooltip_key in shortcuts:  # the buttons' tool tips tell the keys
        assert tooltip_key in ET.tostring(section, encoding="unicode"), tooltip_key
    # A case without stored results goes through the module's own Apply path (worker thread, progress, Cancel).
    assert "self.onApplyButton()" in methods["onMoveReview"]
