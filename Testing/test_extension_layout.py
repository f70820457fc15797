"""The Slicer extension's packaging: every shipped file is listed where Slicer's build needs it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = ("RICENet", "RICENetTraining")


def _cmake_list(cmake: str, variable: str) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\b(.*?)\)", cmake, re.S)
    assert match, f"{variable} is not set"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [item.replace("${MODULE_NAME}", cmake_module_name(cmake)) for item in items if item]


def cmake_module_name(cmake: str) -> str:
    return re.search(r"set\(\s*MODULE_NAME\s+(\w+)\s*\)", cmake).group(1)


@pytest.mark.parametrize("module", MODULES)
def test_every_python_file_is_listed_in_the_module_cmake(module):
    folder = REPO / module
    cmake = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    assert cmake_module_name(cmake) == module
    listed = set(_cmake_list(cmake, "MODULE_PYTHON_SCRIPTS"))
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
    assert present - listed == set(), f"{module}/CMakeLists.txt misses these Python files"
    assert listed - present == set(), f"{module}/CMakeLists.txt lists files that do not exist"


@pytest.mark.parametrize("module", MODULES)
def test_every_resource_is_listed_and_exists(module):
    folder = REPO / module
    cmake = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(_cmake_list(cmake, "MODULE_PYTHON_RESOURCES"))
    present = {p.relative_to(folder).as_posix() for p in (folder / "Resources").rglob("*") if p.is_file()}
    assert present == listed
    assert f"Resources/Icons/{module}.png" in listed and f"Resources/UI/{module}.ui" in listed
    assert "slicerMacroBuildScriptedModule" in cmake


def test_top_level_cmake_has_extension_metadata():
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "project(RICENet)" in cmake
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', cmake), key
    assert re.search(r"set\(EXTENSION_DEPENDS PyTorch\)", cmake)
    for module in MODULES:
        assert f"add_subdirectory({module})" in cmake
    icon = re.search(r'EXTENSION_ICONURL "[^"]*/main/(.*?)"', cmake).group(1)
    screenshot = re.search(r'EXTENSION_SCREENSHOTURLS "[^"]*/main/(.*?)"', cmake).group(1)
    assert (REPO / icon).is_file() and (REPO / screenshot).is_file()


def test_catalog_entry():
    entry = json.loads((REPO / "RICENet.json").read_text(encoding="utf-8"))
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["scmurl"].endswith(".git") and entry["category"]
    homepage = re.search(r'EXTENSION_HOMEPAGE "(.*?)"', (REPO / "CMakeLists.txt").read_text(encoding="utf-8")).group(1)
    assert entry["scmurl"] == homepage + ".git"


def test_engine_never_imports_qt_and_only_the_bridge_imports_mrml():
    for lib in (REPO / "RICENet" / "RICENetLib", REPO / "RICENetTraining" / "RICENetTrainingLib"):
        for path in lib.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(import|from)\s+(qt|ctk|PythonQt|slicer\.qt)", text, re.M), f"{path} imports Qt"
            if path.name != "mrml.py":
                assert not re.search(r"^\s*(import slicer|from slicer\b)", text, re.M), f"{path} imports Slicer/MRML"
