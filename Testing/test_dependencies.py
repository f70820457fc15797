"""Installing the engine's packages inside Slicer never touches torch, numpy, SimpleITK or VTK.

The decisions of :mod:`RICENetLib.dependencies` run here for real; the last
test hands its constraints file to the real pip resolver (``--dry-run``, local
wheels only, no network) and sees it choose an older "MONAI" that fits the
pinned "torch" instead of upgrading it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from RICENetLib.dependencies import PROTECTED_PACKAGES, import_name, install_plan, unavailable_modules, unmet
from RICENetLib.errors import InputError

CUDA_TORCH = {"torch": "2.5.1+cu121", "numpy": "2.2.6", "SimpleITK": "2.5.2"}


def test_an_old_package_already_installed_counts_as_missing():
    installed = {"monai": "1.3.2", "nibabel": "5.3.2", "safetensors": "0.6.2"}.get
    assert unmet(["monai>=1.4", "nibabel>=5", "safetensors>=0.4", "matplotlib>=3.7"], installed) == ["monai>=1.4",
                                                                                                  "matplotlib>=3.7"]
    assert unmet(["monai>=1.4"], {"monai": "1.6.1"}.get) == []
    assert unmet(["monai>=1.4"], {"monai": "not-a-version"}.get) == ["monai>=1.4"]
    with pytest.raises(InputError, match="'monai>>1' is not valid"):
        unmet(["monai>>1"], {}.get)


def test_the_plan_pins_the_installed_torch_build_and_slicers_own_packages():
    plan = install_plan(["monai>=1.4", "nibabel>=5"], installed=CUDA_TORCH, version={"nibabel": "5.3.2"}.get)
    assert plan.missing == ["monai>=1.4"]
    assert plan.constraints == ["SimpleITK==2.5.2", "numpy==2.2.6", "torch==2.5.1+cu121"]
    assert plan.constraints_text().splitlines() == plan.constraints
    assert plan.pip_arguments("/tmp/c.txt") == ["monai>=1.4", "-c", "/tmp/c.txt"]
    message = plan.failure_message("RICE-NET")
    assert "torch 2.5.1+cu121" in message and "monai>=1.4" in message and "PyTorch extension" in message
    assert not install_plan(["nibabel>=5"], installed=CUDA_TORCH, version={"nibabel": "5.3.2"}.get).needed
    # A version pip could not parse would make the constraints file itself invalid: it is left out.
    assert install_plan([], installed={"torch": "2.5.1", "vtk": "9.4-slicer"}).constraints == ["torch==2.5.1"]


def test_the_plan_refuses_what_would_bring_pypis_torch_or_replace_a_kept_package():
    with pytest.raises(InputError, match="monai>=1.4 need torch.*PyTorch extension"):
        install_plan(["monai>=1.4", "nibabel>=5"], installed={"numpy": "2.2.6"}, version={}.get)
    # Without torch, packages that do not need it still install (the sample case needs only nilearn).
    assert install_plan(["nilearn>=0.10"], installed={"numpy": "2.2.6"}, version={}.get).missing == ["nilearn>=0.10"]
    for name in PROTECTED_PACKAGES:
        with pytest.raises(InputError, match="must not be installed by pip"):
            install_plan([f"{name}>=1"], installed=CUDA_TORCH, version={}.get)


def test_the_engines_requirements_are_valid_and_map_to_modules():
    from RICENetLib.slicer_logic import (CORE_REQUIREMENTS, DICOM_EXPORT_REQUIREMENTS, SAMPLE_DATA_REQUIREMENTS,
                                         SKULL_STRIP_REQUIREMENTS)
    from RICENetTrainingLib.slicer_logic import TRAINING_REQUIREMENTS

    requirements = [*CORE_REQUIREMENTS, *DICOM_EXPORT_REQUIREMENTS, *SAMPLE_DATA_REQUIREMENTS, *TRAINING_REQUIREMENTS,
                    *(r for rs in SKULL_STRIP_REQUIREMENTS.values() for r in rs)]
    unmet(requirements, {}.get)  # all parse
    assert [import_name(r) for r in ("hd-bet>=2.0", "nibabel>=5", "monai>=1.4")] == ["HD_BET", "nibabel", "monai"]
    assert unmet(DICOM_EXPORT_REQUIREMENTS) == []  # highdicom, which the DICOM tests use, satisfies it
    assert unavailable_modules(["json", "no_such_module_ricenet"]) == ["no_such_module_ricenet"]


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal wheel: enough metadata for pip's resolver (nothing is installed)."""
    dist = f"{name}-{version}"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "")
        metadata = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
            name, version, "".join(f"Requires-Dist: {r}\n" for r in requires))
        wheel.writestr(f"{dist}.dist-info/METADATA", metadata)
        wheel.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}.dist-info/RECORD", "")


def test_pip_honours_the_plans_constraints_and_picks_a_monai_that_fits_the_installed_torch(tmp_path):
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    assert pip.returncode == 0, "the test environment has pip"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # Stand-ins named rn_torch / rn_monai so nothing real is touched; the newest "monai" wants a newer "torch".
    _wheel(wheels, "rn_torch", "2.5.1+cu121")
    _wheel(wheels, "rn_torch", "2.9.0")
    _wheel(wheels, "rn_monai", "1.5.0", ("rn_torch>=2.4",))
    _wheel(wheels, "rn_monai", "1.6.1", ("rn_torch>=2.8",))
    plan = install_plan(["rn_monai>=1.4"], installed={"rn_torch": "2.5.1+cu121"}, version={}.get)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(plan.constraints_text(), encoding="utf-8")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index", "--find-links",
               str(wheels), "--report", str(report), "--quiet", *plan.pip_arguments(constraints)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    chosen = {item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert chosen == {"rn_monai": "1.5.0", "rn_torch": "2.5.1+cu121"}

    # No release fits: pip fails (the module then shows plan.failure_message) rather than replacing "torch".
    plan = install_plan(["rn_monai>=1.6"], installed={"rn_torch": "2.5.1+cu121"}, version={}.get)
    constraints.write_text(plan.constraints_text(), encoding="utf-8")
    failed = subprocess.run(command[:-4] + plan.pip_arguments(constraints), capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "ResolutionImpossible" in failed.stderr and "rn-monai==1.6.1" in failed.stderr
