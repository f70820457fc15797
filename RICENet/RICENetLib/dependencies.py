"""Which Python packages a run still needs, and how to install them without touching torch.

Inside Slicer, torch comes from the PyTorch extension (it chooses the build for
the user's GPU); numpy, SimpleITK and VTK are Slicer's own. pip must never
replace any of them, yet ``pip install monai`` would upgrade torch whenever the
newest MONAI asks for a newer one (MONAI 1.6.1 asks for torch >= 2.8), and a
CUDA build would be swapped for PyPI's. So every install gets a constraints
file that pins what is installed of these packages: pip then picks a MONAI that
works with the installed torch, or fails without changing anything.

The Slicer module (``RICENet.py``) shows the dialogs and runs pip; the decisions
are here, free of Qt and Slicer, and tested in a plain interpreter:

>>> plan = install_plan(["monai>=1.4"], installed={"torch": "2.5.1+cu121", "numpy": "2.2.6"}, version={}.get)
>>> plan.missing, plan.constraints
(['monai>=1.4'], ['numpy==2.2.6', 'torch==2.5.1+cu121'])
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import InputError

#: Installed packages pip must keep as they are: torch from the PyTorch extension, the rest Slicer's own.
PROTECTED_PACKAGES = ("torch", "numpy", "SimpleITK", "vtk")

#: Packages that depend on torch: with torch absent, pip would install PyPI's torch for them.
NEEDS_TORCH = frozenset({"monai", "deepbet", "hd-bet"})

#: Distribution name → import name where they differ.
IMPORT_NAMES = {"hd-bet": "HD_BET", "simpleitk": "SimpleITK", "pydicom": "pydicom"}


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_name(requirement: str) -> str:
    """The module a requirement provides: ``"hd-bet>=2"`` → ``"HD_BET"``, ``"nibabel>=5"`` → ``"nibabel"``."""
    name = canonicalize_name(Requirement(requirement).name)
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


def unmet(requirements: Iterable[str], version: Callable[[str], str | None] = _installed_version) -> list[str]:
    """The requirements that are not installed at an acceptable version (an old MONAI counts as missing).

    ``version(name)`` gives the installed version or None (defaults to
    :func:`importlib.metadata.version`).

    >>> unmet(["monai>=1.4", "nibabel>=5"], version={"monai": "1.3.2", "nibabel": "5.3.2"}.get)
    ['monai>=1.4']
    """
    missing = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise InputError(f"Package requirement '{text}' is not valid: {error}.") from None
        installed = version(requirement.name)
        if installed is None:
            missing.append(text)
            continue
        try:
            ok = requirement.specifier.contains(Version(installed), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            missing.append(text)
    return missing


@dataclass(frozen=True)
class InstallPlan:
    """What to install, and the pins (``torch==2.5.1+cu121``) pip must keep while it does."""

    missing: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    installed: Mapping[str, str] = field(default_factory=dict)

    @property
    def needed(self) -> bool:
        return bool(self.missing)

    def constraints_text(self) -> str:
        """The constraints file's content (pip's ``-c`` format)."""
        return "".join(f"{line}\n" for line in self.constraints)

    def pip_arguments(self, constraints_path: str | os.PathLike) -> list[str]:
        """Arguments for ``slicer.util.pip_install`` (Slicer 5.10 takes a list of command-line arguments)."""
        return [*self.missing, "-c", os.fspath(constraints_path)]

    def failure_message(self, requester: str = "RICE-NET") -> str:
        """What to tell the user when pip could not install within the pins."""
        kept = ", ".join(f"{name} {version}" for name, version in sorted(self.installed.items()))
        return (f"{requester} could not install {', '.join(self.missing)} without changing the packages it keeps as "
                f"they are ({kept}). Newer releases may need a newer torch: update torch with the PyTorch extension "
                "(PyTorch Utils module), restart Slicer and try again. The details are in the Python console.")


def install_plan(requirements: Iterable[str], installed: Mapping[str, str] | None = None,
                 version: Callable[[str], str | None] | None = None) -> InstallPlan:
    """Decide what to install: the unmet requirements, with the installed protected packages pinned.

    ``installed`` gives the versions of :data:`PROTECTED_PACKAGES` and
    ``version(name)`` those of the other requirements (both default to what
    is installed in this environment). Refuses
    (:class:`InputError`) to install a torch-dependent package while torch is
    absent: pip would fetch PyPI's torch instead of the PyTorch extension's.
    """
    if installed is None:
        installed = {name: v for name in PROTECTED_PACKAGES if (v := _installed_version(name)) is not None}
    version = version or _installed_version
    requirements = list(requirements)
    protected = {canonicalize_name(p) for p in PROTECTED_PACKAGES}
    for text in requirements:
        if canonicalize_name(Requirement(text).name) in protected:
            raise InputError(f"'{text}' must not be installed by pip here: it is kept as Slicer or the PyTorch extension "
                             "installed it.")
    missing = unmet(requirements, version)
    has_torch = any(canonicalize_name(name) == "torch" for name in installed)
    if not has_torch:
        torch_users = [r for r in missing if canonicalize_name(Requirement(r).name) in NEEDS_TORCH]
        if torch_users:
            raise InputError(f"{', '.join(torch_users)} need torch, which is not installed: install it with the PyTorch "
                             "extension (PyTorch Utils module) first, so that pip does not fetch a build unsuited to "
                             "your GPU.")
    constraints = sorted(f"{name}=={v}" for name, v in installed.items() if _is_version(v))  # pip refuses a bad pin
    return InstallPlan(missing, constraints, dict(installed))


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def unavailable_modules(names: Iterable[str]) -> list[str]:
    """The modules in ``names`` that cannot be imported here (for self-tests that skip the engine part)."""
    return [name for name in names if importlib.util.find_spec(name) is None]
