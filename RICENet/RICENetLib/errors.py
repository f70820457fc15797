"""Exceptions whose messages a clinician or physicist can act on.

Every error raised on purpose by the engine derives from :class:`RICENetError`,
so the CLI and the Slicer GUI can show its message as is (no traceback) while
programming errors still surface as ordinary tracebacks.
"""

from __future__ import annotations


class RICENetError(Exception):
    """Base class: the message is written for the user, not the developer."""


class InputError(RICENetError, ValueError):
    """An input (file, image, table, parameter) is missing or unusable.

    The message names the input and says what is wrong with it.
    """


class BundleError(RICENetError, ValueError):
    """A model bundle is missing, incomplete, corrupt or incompatible."""


class OutputError(RICENetError, OSError):
    """A result cannot be written (disk full, file too large, no permission, read-only).

    Also an :class:`OSError`, so callers that already catch write failures keep
    working; the message names the file and what to do. What was there before
    is left as it was.
    """

    def __str__(self) -> str:  # the message as written, not OSError's "[Errno N] ..." form
        return str(self.args[0]) if self.args else ""


class PreprocessingError(RICENetError, RuntimeError):
    """A preprocessing step (registration, skull stripping, ...) failed."""


class Cancelled(RICENetError):
    """The user cancelled a long-running operation."""

    def __init__(self, message: str = "Cancelled by the user.") -> None:
        super().__init__(message)


def reject_unknown_keys(cls: type, data, what: str) -> None:
    """Refuse keys that are not fields of the dataclass ``cls`` (a newer format, or a typo).

    ``what`` names the kind of entry, e.g. ``"preprocessing parameter"``.
    """
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"Unknown {what}(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
