"""A tqdm progress bar that accepts the engine's ``progress(fraction, message)``."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from ..progress import ProgressCallback


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[ProgressCallback]:
    """Yield a callback drawing a 0–100 % bar on stderr; the bar closes at exit."""
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=description, unit="‰", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def update(fraction: float, message: str) -> None:
        bar.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        if message:
            bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
