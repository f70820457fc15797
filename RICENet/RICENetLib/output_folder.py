"""Output folders: checked before the work, and replaced only when all they hold is our own files.

Why: a command that runs for minutes must not find out at the end that
``--out`` is a file, sits under a file, or cannot be written; and
``--overwrite`` must never delete what a user keeps in a folder they named by
mistake (``--out ~/Documents --overwrite``).

>>> check_writable(Path("results/P001"))                   # doctest: +SKIP
>>> check_replaceable(Path("results/P001"), PREDICT_FILES.__contains__, overwrite=True, command="predict")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import OutputError, RICENetError

__all__ = ["OutputError", "check_replaceable", "check_writable", "writing"]


def _reason(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}"


def check_writable(folder: str | os.PathLike, option: str = "--out") -> None:
    """Make sure ``folder`` can be created and written now: create it (and missing parents), write and
    remove a probe file, and remove again what was created, so a refused run leaves nothing behind."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder} is a file, not a folder; choose a folder path.")
    missing = []
    existing = folder
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {folder} cannot be made: {existing} is a file, not a folder.")
    created: list[Path] = []
    try:
        for path in reversed(missing):
            path.mkdir()
            created.append(path)
        fd, probe = tempfile.mkstemp(prefix=".ricenet-probe.", dir=folder)
        try:
            os.write(fd, b"ricenet")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        raise OutputError(f"{option} {folder} cannot be written: {_reason(error)}.") from None
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()


def check_replaceable(folder: str | os.PathLike, own: Callable[[str], bool], overwrite: bool, command: str) -> None:
    """An existing non-empty ``folder`` is refused without ``--overwrite``; with it, it is refused while it
    holds anything ``ricenet <command>`` does not write (``own(name)`` says what it writes)."""
    folder = Path(folder)
    if not folder.is_dir():
        if folder.exists():
            raise OutputError(f"Output folder {folder} is a file, not a folder; choose another path.")
        return
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return
    if not overwrite:
        raise OutputError(f"Output folder {folder} already exists and is not empty; choose another or add --overwrite.")
    foreign = [name for name in names if not own(name)]
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"Output folder {folder} holds {listed}, which ricenet {command} did not write; "
                          f"--overwrite replaces only a folder of its own outputs: choose another folder or move them.")


@contextlib.contextmanager
def writing(folder: str | os.PathLike) -> Iterator[None]:
    """Turn an operating-system error while writing ``folder`` (disk full, permissions) into an
    :class:`OutputError` that names it."""
    try:
        yield
    except OutputError as error:
        # A file inside the folder's temporary twin could not be written: name the folder the user gave.
        cause = error.__context__
        if not isinstance(cause, OSError) or isinstance(cause, RICENetError):
            raise
        raise OutputError(f"Could not write {folder}: {_reason(cause)}.") from None
    except RICENetError:
        raise
    except OSError as error:
        raise OutputError(f"Could not write {folder}: {_reason(error)}.") from None
