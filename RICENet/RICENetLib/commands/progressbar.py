"""A tqdm progress bar that accepts the engine's ``progress(fraction, message)``.

The time left is estimated from the work after ``timed_from`` only: the
stages before it (reading and preprocessing the images, loading a cohort)
take a share of the bar that says nothing about their time, so an estimate
made from them was off by minutes (preprocessing at 0–15 % of the bar in
20 s promised the occlusion's 10 minutes in 2). Until the timed part has
moved the bar by :data:`MIN_TIMED_PROGRESS`, the bar shows ``?``.

>>> eta = Eta(timed_from=0.15)
>>> eta.update(0.10, now=20.0) is None   # preprocessing: no estimate
True
>>> eta.update(0.15, now=30.0) is None   # the timed part begins
True
>>> eta.update(0.50, now=100.0)          # 35 % in 70 s: 50 % more takes 100 s
100.0
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator, Optional

from ..progress import ProgressCallback

#: The estimate appears once the timed part has moved the bar this far (a few noisy first steps are no rate).
MIN_TIMED_PROGRESS = 0.02


class Eta:
    """Seconds left, measured from the first report at or past ``timed_from``."""

    def __init__(self, timed_from: float = 0.0) -> None:
        self.timed_from = float(timed_from)
        self._start: Optional[tuple[float, float]] = None  # (fraction, time) where the timed part began

    def update(self, fraction: float, now: float | None = None) -> Optional[float]:
        now = time.monotonic() if now is None else now
        if fraction < self.timed_from:
            return None
        if self._start is None:
            self._start = (fraction, now)
            return None
        done = fraction - self._start[0]
        if done < MIN_TIMED_PROGRESS:
            return None
        return (now - self._start[1]) / done * (1.0 - fraction)


def _clock(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    from tqdm import tqdm

    return tqdm.format_interval(seconds)


@contextlib.contextmanager
def progress_bar(description: str, timed_from: float = 0.0) -> Iterator[ProgressCallback]:
    """Yield a callback drawing a 0–100 % bar on stderr; the bar closes at exit.

    ``timed_from`` is where on the bar the work whose pace predicts the rest
    begins (after preprocessing); the time left is shown from there on.
    Redrawn at most ten times a second on a terminal, and every 30 s when
    stderr is a log file, so that a CI log or ``2> run.log`` stays readable.
    """
    from tqdm import tqdm

    eta = Eta(timed_from)
    left: list[Optional[float]] = [None]

    class Bar(tqdm):  # type: ignore[misc,valid-type]
        @property
        def format_dict(self) -> dict[str, Any]:
            values = super().format_dict
            values["left"] = _clock(left[0])
            return values

    interval = 0.1 if sys.stderr.isatty() else 30.0
    last = [-float("inf")]
    bar = Bar(total=1000, desc=description, unit="‰", file=sys.stderr, dynamic_ncols=True,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{left} {postfix}")

    def update(fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        left[0] = eta.update(fraction)
        bar.n = int(round(1000 * fraction))
        if message:
            bar.set_postfix_str(message[:60], refresh=False)
        now = time.monotonic()
        if now - last[0] >= interval or bar.n == 1000:
            last[0] = now
            bar.refresh()

    try:
        yield update
    finally:
        bar.close()
