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


#: Slicer/Slicer Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json (branches 5.12 and main), summarised:
#: its "required" list, and each of its "properties" with its JSON type; "additionalProperties": false.
CATALOG_SCHEMA_URL = ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                      "slicer-extension-catalog-entry-schema-v1.0.2.json#")
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                      "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str,
                      "enabled": bool, "tier": int}


def catalog_entry_errors(entry: dict) -> list[str]:
    """What the Extensions Index's schema check (scripts/check_description_files.py there) would reject."""
    errors = [f"missing required key '{key}'" for key in sorted(CATALOG_REQUIRED - set(entry))]
    errors += [f"key '{key}' is not allowed" for key in sorted(set(entry) - set(CATALOG_PROPERTIES))]
    for key, value in entry.items():
        expected = CATALOG_PROPERTIES.get(key)
        if expected is not None and (type(value) is not expected):
            errors.append(f"'{key}' must be a {expected.__name__}")
    if not all(isinstance(item, str) for item in entry.get("build_dependencies", [])):
        errors.append("'build_dependencies' must list strings")
    if entry.get("scm_type", "git") not in ("git", "local"):
        errors.append("'scm_type' must be git or local")
    if type(entry.get("tier", 1)) is int and not 1 <= entry.get("tier", 1) <= 5:
        errors.append("'tier' must be 1 to 5")
    return errors


def test_catalog_entry_follows_the_extensions_index_schema():
    text = (REPO / "RICENet.json").read_text(encoding="utf-8")
    entry = json.loads(text)
    assert catalog_entry_errors(entry) == []
    assert entry["$schema"] == CATALOG_SCHEMA_URL
    assert entry["build_dependencies"] == ["PyTorch"] and entry["category"] == "Radiotherapy"
    homepage = re.search(r'EXTENSION_HOMEPAGE "(.*?)"', (REPO / "CMakeLists.txt").read_text(encoding="utf-8")).group(1)
    assert entry["scm_url"] == homepage + ".git"
    assert "\r" not in text  # the Index's check_json_file_format wants LF line endings
    # The summary rejects what the old entry had: an unlisted key and a missing required one.
    assert catalog_entry_errors({"$schema": CATALOG_SCHEMA_URL, "category": "Radiotherapy", "scmurl": "x"}) == [
        "missing required key 'scm_url'", "key 'scmurl' is not allowed"]
    assert catalog_entry_errors({**entry, "tier": "1"}) == ["'tier' must be a int"]


def test_engine_never_imports_qt_and_only_the_bridge_imports_mrml():
    for lib in (REPO / "RICENet" / "RICENetLib", REPO / "RICENetTraining" / "RICENetTrainingLib"):
        for path in lib.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(import|from)\s+(qt|ctk|PythonQt|slicer\.qt)", text, re.M), f"{path} imports Qt"
            if path.name != "mrml.py":
                assert not re.search(r"^\s*(import slicer|from slicer\b)", text, re.M), f"{path} imports Slicer/MRML"
