"""Let a worker thread run inside Slicer: the main thread hands over the GIL on every pass of the event loop.

Slicer embeds Python through PythonQt without PythonQt's thread support:
``qSlicerCorePythonManager`` initialises Python on the main thread (which then
holds the GIL) and neither Slicer nor CTK's ``ctkAbstractPythonManager`` ever
calls ``PythonQt::setEnableThreadSupport`` or ``PyEval_SaveThread``. So the
main thread keeps the GIL while Qt's event loop waits for events, and a Python
worker thread advances only in the moments the main thread runs Python. A
worker doing small torch operations got 1.8 % of its free-running speed in a
C host that embeds CPython the same way (``Testing/pythonqt_host``); polling
its progress every 200 ms changes nothing.

The cure: while a worker thread is alive, a ``QTimer`` with interval 0 (it
fires on every pass of the event loop, after pending events) calls
:meth:`MainThreadYielder.tick`, which sleeps ``sleep_s`` (2 ms). ``time.sleep``
releases the GIL, so the worker runs while the main thread sleeps; the main
thread gets the GIL back within the interpreter's switch interval (5 ms)
and handles input between ticks, so the GUI still answers within a few
milliseconds. Once every watched worker thread has ended, the yielder stops
the timer itself, so nothing ticks while nothing runs.

Qt-free (the Slicer modules own the timer); call it on the main thread only.

>>> timer = qt.QTimer(); timer.setInterval(0)                     # doctest: +SKIP
>>> yielder = MainThreadYielder(timer)                            # doctest: +SKIP
>>> timer.connect("timeout()", yielder.tick)                      # doctest: +SKIP
>>> yielder.watch(task)   # starts the timer; it stops once the task's thread has ended  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

DEFAULT_SLEEP_S = 0.002
MAX_SLEEP_S = 0.02  # a tick blocks the GUI for its sleep: keep it far below the 50 ms a user notices


class Switch(Protocol):
    """What the yielder needs of its timer (a ``qt.QTimer`` in Slicer)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class WorkerThread(Protocol):
    """What the yielder needs of a task (:class:`RICENetLib.background.BackgroundTask`)."""

    @property
    def thread_alive(self) -> bool: ...


@dataclass
class YieldStats:
    """Bookkeeping: ticks that slept, the sleep asked for in all, the longest tick (sleep plus getting the GIL back)."""

    ticks: int = 0
    slept_s: float = 0.0
    longest_tick_s: float = 0.0


class MainThreadYielder:
    """Release the GIL for ``sleep_s`` on each :meth:`tick` while a watched worker thread is alive.

    ``timer`` is started by the first :meth:`watch` and stopped by the first
    tick that finds no watched thread alive (or by :meth:`stop`). A cancelled
    task's thread keeps getting the GIL until it really ends, so it reaches
    its next cancel check promptly.
    """

    def __init__(self, timer: Switch | None = None, *, sleep_s: float = DEFAULT_SLEEP_S) -> None:
        if not 0.0 < float(sleep_s) <= MAX_SLEEP_S:
            raise ValueError(f"sleep_s must be in (0, {MAX_SLEEP_S}] seconds (got {sleep_s!r}): a tick blocks the GUI "
                             "for that long.")
        self.timer = timer
        self.sleep_s = float(sleep_s)
        self.stats = YieldStats()
        self._tasks: list[WorkerThread] = []
        self._active = False

    @property
    def active(self) -> bool:
        """True from :meth:`watch` until the timer was stopped."""
        return self._active

    def watch(self, task: WorkerThread) -> None:
        """Yield to ``task``'s thread until it ends; starts the timer if it is not running."""
        self._tasks.append(task)
        if not self._active:
            self._active = True
            if self.timer is not None:
                self.timer.start()

    def tick(self) -> None:
        """The 0 ms timer's slot: sleep (GIL released) while a watched thread lives, else stop the timer."""
        self._tasks = [task for task in self._tasks if task.thread_alive]
        if not self._tasks:
            self.stop()
            return
        began = time.perf_counter()
        time.sleep(self.sleep_s)
        took = time.perf_counter() - began
        self.stats.ticks += 1
        self.stats.slept_s += self.sleep_s
        self.stats.longest_tick_s = max(self.stats.longest_tick_s, took)

    def stop(self) -> None:
        """Stop yielding now and forget the watched tasks (they keep running, starved)."""
        self._tasks = []
        if self._active:
            self._active = False
            if self.timer is not None:
                self.timer.stop()
