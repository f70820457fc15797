"""Progress reporting and cancellation for long work.

Long operations take ``progress`` and ``cancel`` keyword arguments:

* ``progress(fraction, message)`` with ``fraction`` in [0, 1], called from the
  worker thread; the CLI turns it into a tqdm bar, the Slicer widget into a
  progress bar update polled by a QTimer on the main thread.
* ``cancel()`` returns True when the user asked to stop; the operation then
  raises :class:`~RICENetLib.errors.Cancelled` at its next check point.

>>> report = Progress(lambda f, m: None, lambda: False)
>>> report.sub(0.5, 1.0)(0.5, "half of the second half")  # reports 0.75
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from .errors import Cancelled


class ProgressCallback(Protocol):
    def __call__(self, fraction: float, message: str) -> None: ...


CancelCheck = Callable[[], bool]


def _ignore(fraction: float, message: str) -> None:
    return None


def _never() -> bool:
    return False


@dataclass
class Progress:
    """A progress callback and a cancel check travelling together.

    ``sub(start, stop)`` gives a callback for one stage that maps its own
    0..1 onto ``start..stop`` of the whole, so nested steps can report without
    knowing where they sit in the pipeline.
    """

    callback: Optional[ProgressCallback] = None
    cancel: Optional[CancelCheck] = None
    start: float = 0.0
    stop: float = 1.0

    def __call__(self, fraction: float, message: str = "") -> None:
        self.check()
        fraction = min(max(float(fraction), 0.0), 1.0)
        (self.callback or _ignore)(self.start + fraction * (self.stop - self.start), message)

    def check(self) -> None:
        """Raise :class:`Cancelled` if the user asked to stop."""
        if (self.cancel or _never)():
            raise Cancelled()

    def sub(self, start: float, stop: float) -> "Progress":
        span = self.stop - self.start
        return Progress(self.callback, self.cancel, self.start + start * span, self.start + stop * span)


def as_progress(progress: Optional[ProgressCallback | Progress] = None, cancel: Optional[CancelCheck] = None) -> Progress:
    """Normalise the ``progress``/``cancel`` keyword pair into a :class:`Progress`."""
    if isinstance(progress, Progress):
        if cancel is None:
            return progress
        return Progress(progress.callback, cancel, progress.start, progress.stop)
    return Progress(progress, cancel)
