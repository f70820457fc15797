"""A tqdm progress bar that accepts the engine's ``progress(fraction, message)``."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

from ..progress import ProgressCallback


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[ProgressCallback]:
    """Yield a callback drawing a 0–100 % bar on stderr; the bar closes at exit.

    Redrawn at most ten times a second on a terminal, and every 30 s when
    stderr is a log file, so that a CI log or ``2> run.log`` stays readable.
    """
    from tqdm import tqdm

    interval = 0.1 if sys.stderr.isatty() else 30.0
    last = [-float("inf")]
    bar = tqdm(total=1000, desc=description, unit="‰", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def update(fraction: float, message: str) -> None:
        bar.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
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
