"""Compile ``host.c`` against the running interpreter (its headers and libpython), as an embedding app would.

>>> reason = missing_toolchain()        # None when the host can be built here
>>> host = build_host(tmp_folder)       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SOURCE = Path(__file__).with_name("host.c")


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def _library() -> tuple[list[str], str | None]:
    """Link arguments for libpython: the shared one with an rpath, else the static one (exporting its symbols)."""
    version = sysconfig.get_config_var("LDVERSION") or sysconfig.get_config_var("VERSION")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    system = (sysconfig.get_config_var("LIBS") or "").split() + (sysconfig.get_config_var("SYSLIBS") or "").split()
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        shared = Path(libdir) / (sysconfig.get_config_var("LDLIBRARY") or f"libpython{version}.so")
        if shared.exists():
            return [f"-L{libdir}", f"-lpython{version}", f"-Wl,-rpath,{libdir}", *system], None
        return [], f"the shared libpython {shared} is missing"
    static_name = sysconfig.get_config_var("LIBRARY") or f"libpython{version}.a"
    for folder in (sysconfig.get_config_var("LIBPL"), libdir):
        static = Path(folder or "") / static_name
        if folder and static.exists():
            # Extension modules (torch, numpy) resolve the C API from the executable.
            return [str(static), "-Xlinker", "-export-dynamic", *system], None
    return [], f"neither a shared nor a static libpython ({static_name}) was found"


def missing_toolchain() -> str | None:
    """Why the host cannot be built here, or None when it can."""
    if _compiler() is None:
        return "no C compiler (gcc/cc) on PATH"
    include = Path(sysconfig.get_config_var("INCLUDEPY") or "")
    if not (include / "Python.h").exists():
        return f"no Python headers for {sys.executable} (Python.h not in {include})"
    return _library()[1]


def build_host(folder: str | os.PathLike) -> Path:
    """The host executable in ``folder`` (rebuilt only when host.c or the interpreter changed)."""
    reason = missing_toolchain()
    if reason:
        raise RuntimeError(f"cannot build the PythonQt-like host: {reason}")
    link, _ = _library()
    flags = ["-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", f"-I{sysconfig.get_config_var('INCLUDEPY')}"]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + repr((sys.version, flags, link)).encode()).hexdigest()[:12]
    target = Path(folder) / f"pqhost-{key}"
    if not target.exists():
        Path(folder).mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        command = [_compiler(), *flags, str(SOURCE), "-o", str(partial), *link, "-lpthread", "-lm"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{' '.join(command)}\n{done.stderr}")
        partial.replace(target)
    return target


def host_environment() -> dict[str, str]:
    """Environment for the host: this interpreter's home and import path, so it imports what we import."""
    env = dict(os.environ)
    env["PYTHONHOME"] = sys.base_prefix if sys.base_prefix == sys.base_exec_prefix else \
        f"{sys.base_prefix}{os.pathsep}{sys.base_exec_prefix}"
    # sys.path as it is here, with the folders of our own packages first: an editable install reaches them
    # through a .pth file, which Python reads only in site directories, not in PYTHONPATH entries.
    own = []
    for name in ("RICENetLib", "RICENetTrainingLib"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            own.append(str(Path(spec.origin).resolve().parents[1]))
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(own + [p for p in sys.path if p]))
    env["PYTHONNOUSERSITE"] = "1"
    return env
