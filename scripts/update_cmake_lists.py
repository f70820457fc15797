"""Rewrite each Slicer module's CMakeLists.txt so it lists every shipped file.

Slicer's extension build installs only the files a module's CMakeLists.txt
names; a forgotten file works from a source checkout and breaks in the
Extension Manager build. Run this after adding or removing a file:

    python scripts/update_cmake_lists.py

Testing/test_extension_layout.py fails when the lists are out of date.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = ("RICENet", "RICENetTraining")

TEMPLATE = """#-----------------------------------------------------------------------------
set(MODULE_NAME {name})

#-----------------------------------------------------------------------------
# Every Python file and resource the module ships (kept complete by
# scripts/update_cmake_lists.py; checked by Testing/test_extension_layout.py).
set(MODULE_PYTHON_SCRIPTS
{scripts}
  )

set(MODULE_PYTHON_RESOURCES
{resources}
  )

#-----------------------------------------------------------------------------
slicerMacroBuildScriptedModule(
  NAME ${{MODULE_NAME}}
  SCRIPTS ${{MODULE_PYTHON_SCRIPTS}}
  RESOURCES ${{MODULE_PYTHON_RESOURCES}}
  WITH_GENERIC_TESTS
  )

#-----------------------------------------------------------------------------
if(BUILD_TESTING)
  # The module's ScriptedLoadableModuleTest, run inside Slicer by the extension factory.
  slicer_add_python_unittest(SCRIPT ${{MODULE_NAME}}.py)
endif()
"""


def module_files(folder: Path) -> tuple[list[str], list[str]]:
    scripts = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    resources = sorted(p.relative_to(folder).as_posix() for p in (folder / "Resources").rglob("*") if p.is_file())
    return scripts, resources


def render(name: str) -> str:
    scripts, resources = module_files(REPO / name)
    main = f"{name}.py"
    scripts = [main] + [s for s in scripts if s != main]
    fmt = lambda items: "\n".join(f"  {item}" for item in items)  # noqa: E731
    return TEMPLATE.format(name=name, scripts=fmt(scripts), resources=fmt(resources))


def main() -> None:
    for name in MODULES:
        path = REPO / name / "CMakeLists.txt"
        text = render(name)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"updated {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
