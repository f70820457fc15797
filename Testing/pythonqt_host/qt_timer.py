"""``QTimer`` as PythonQt shows it to Slicer's Python (``setInterval``, ``connect("timeout()", f)``, ``start``,
``stop``, ``isActive``), on the timers of the C host's event loop (``pqhost``, see ``host.c``).

Only importable inside the host.
"""

from __future__ import annotations

from typing import Callable

import pqhost  # the host's builtin module


class QTimer:
    def __init__(self) -> None:
        self._slots: list[Callable[[], object]] = []
        self._id = pqhost.add_timer(self._timeout)

    def _timeout(self) -> None:
        for slot in list(self._slots):
            slot()

    def setInterval(self, msec: int) -> None:
        pqhost.set_interval(self._id, int(msec))

    def connect(self, signal: str, slot: Callable[[], object]) -> None:
        if signal != "timeout()":
            raise ValueError(f"QTimer has no signal {signal!r} here")
        self._slots.append(slot)

    def start(self) -> None:
        pqhost.start(self._id)

    def stop(self) -> None:
        pqhost.stop(self._id)

    def isActive(self) -> bool:
        return pqhost.is_active(self._id)
