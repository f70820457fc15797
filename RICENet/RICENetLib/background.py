"""Long work on a worker thread that a GUI polls: progress, cancel, result or error.

Slicer's main thread alone may touch MRML and Qt, so the Slicer modules run
inference and training on a :class:`BackgroundTask` and read its state from a
``QTimer`` on the main thread. Nothing here knows about Qt; the same class runs
in tests and scripts.

Inside Slicer a worker thread does not run by itself: PythonQt's main thread
holds the GIL even while Qt waits for events, so the worker advances only when
the main thread runs Python (torch releasing the GIL during an operation does
not help: the worker needs the GIL back after each one). The modules therefore
hand the task to a :class:`RICENetLib.gil_yield.MainThreadYielder`, which
releases the GIL on every pass of the event loop until :attr:`thread_alive` is
False. In a plain interpreter (scripts, tests, the CLI) none of that is needed.

>>> task = BackgroundTask(lambda progress, cancel: 42).start()
>>> task.wait(5).state, task.status().result
('done', 42)
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from .errors import Cancelled, RICENetError

RUNNING, DONE, FAILED, CANCELLED, PENDING = "running", "done", "failed", "cancelled", "pending"


@dataclass(frozen=True)
class TaskStatus:
    """A snapshot of a task for the GUI: state, progress, and at the end its result or error."""

    state: str
    fraction: float = 0.0
    message: str = ""
    result: Any = None
    error: BaseException | None = None
    traceback: str = ""
    elapsed_s: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)

    @property
    def user_error(self) -> bool:
        """True when the error's message is meant for the user (an engine error), not a crash."""
        return isinstance(self.error, RICENetError)


class BackgroundTask:
    """Run ``work(progress, cancel, *args, **kwargs)`` on a daemon thread.

    ``progress(fraction, message)`` and ``cancel()`` follow the engine's
    convention (:mod:`RICENetLib.progress`): pass them on to the engine call.
    :meth:`status` is safe to call from any thread at any time.
    """

    def __init__(self, work: Callable[..., Any], *args: Any, name: str = "RICE-NET task", **kwargs: Any) -> None:
        self._work = work
        self._args = args
        self._kwargs = kwargs
        self._name = name
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = PENDING
        self._fraction = 0.0
        self._message = ""
        self._result: Any = None
        self._error: BaseException | None = None
        self._traceback = ""
        self._start = 0.0
        self._end: float | None = None

    def start(self) -> "BackgroundTask":
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("a BackgroundTask runs once")
            self._state = RUNNING
            self._start = time.monotonic()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def _progress(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self._fraction = min(max(float(fraction), 0.0), 1.0)
            if message:
                self._message = message
        if self._cancel.is_set():
            raise Cancelled()

    def _run(self) -> None:
        try:
            result = self._work(self._progress, self._cancel.is_set, *self._args, **self._kwargs)
        except Cancelled as error:
            self._finish(CANCELLED, error=error, message=str(error))
        except BaseException as error:  # reported to the GUI, never lost in a thread
            self._finish(FAILED, error=error, trace=traceback.format_exc())
        else:
            if self._cancel.is_set():
                self._finish(CANCELLED, error=Cancelled(), message="Cancelled by the user.")
            else:
                self._finish(DONE, result=result, fraction=1.0)

    def _finish(self, state: str, *, result: Any = None, error: BaseException | None = None, trace: str = "",
                message: str | None = None, fraction: float | None = None) -> None:
        with self._lock:
            self._state = state
            self._result = result
            self._error = error
            self._traceback = trace
            self._end = time.monotonic()
            if message is not None:
                self._message = message
            if fraction is not None:
                self._fraction = fraction

    def cancel(self) -> None:
        """Ask the work to stop; it raises :class:`Cancelled` at its next progress report."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def thread_alive(self) -> bool:
        """True while the worker thread runs: it outlives the final state by a moment, and a cancelled task's
        thread runs on until its next progress report."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def status(self) -> TaskStatus:
        with self._lock:
            end = self._end if self._end is not None else time.monotonic()
            return TaskStatus(self._state, self._fraction, self._message, self._result, self._error,
                              self._traceback, (end - self._start) if self._start else 0.0)

    def wait(self, timeout: float | None = None) -> TaskStatus:
        """Block until the task ends (or ``timeout`` seconds pass); returns its status. For scripts and tests."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status()
