"""A C program that embeds CPython as 3D Slicer does (PythonQt without thread support), to test worker threads.

``host.c`` is the host; :mod:`.build` compiles it against the running
interpreter; :mod:`.driver` runs inside it (and, for reference, in a plain
interpreter) and puts the engine's work on a :class:`~RICENetLib.background.BackgroundTask`;
:mod:`.runner` runs both and compares. Used by ``Testing/test_slicer_threading.py``
and ``benchmarks/slicer_threading.py``.
"""

from .build import build_host, host_environment, missing_toolchain
from .runner import measure

__all__ = ["build_host", "host_environment", "measure", "missing_toolchain"]
