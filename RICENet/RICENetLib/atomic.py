"""Atomic writes: a file or a directory appears complete or not at all.

A crash, a full disk or a cancelled run must never leave a half-written image,
checkpoint or bundle behind that a later run could mistake for a good one.

Temporary names carry the host and process id of their writer
(``.NAME.<random>.<host>.<pid>.tmp``), so that the next write to the same
target can tell the leftovers of a killed writer from a writer still at work,
and remove only the former. What appears in place has the permissions a plain
``open()`` would have given it (``0666 & ~umask``, folders ``0777 & ~umask``),
not the private ones of temporary files, so a shared bundle is readable by
the colleagues the umask allows.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import OutputError, RICENetError

#: Failures that can only come from writing: reported as :class:`OutputError` naming the target.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and try again",
    errno.EDQUOT: "the disk quota is used up; free some space and try again",
    errno.EFBIG: "the file is larger than this file system or process allows",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EACCES: "no permission to write there; choose another folder or ask its owner",
    errno.EPERM: "no permission to write there; choose another folder or ask its owner",
}
_OS_ERROR_NUMBER = re.compile(r"os error (\d+)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp (and safetensors) create private files (0600/0700); give them the usual permissions."""
    if directory:
        mode = 0o777
    else:
        mode = 0o777 if os.stat(path).st_mode & 0o100 else 0o666
    os.chmod(path, mode & ~_umask())


def _as_if_created_tree(root: Path) -> None:
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            if not os.path.islink(os.path.join(folder, name)):
                _as_if_created(Path(folder, name), directory=True)
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                _as_if_created(Path(folder, name), directory=False)
    _as_if_created(root, directory=True)


def output_error(path: str | os.PathLike, error: BaseException) -> OutputError | None:
    """The :class:`OutputError` for a failed write of ``path``, or ``None`` if ``error`` is not a write failure.

    Understands :class:`OSError` and errors that only quote the OS error in
    their text (safetensors: ``"I/O error: File too large (os error 27)"``).
    """
    number = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if number is None:
        found = _OS_ERROR_NUMBER.search(str(error))
        number = int(found.group(1)) if found else None
    if number not in WRITE_ERRNOS and number not in (errno.EACCES, errno.EPERM):
        return None
    reason = os.strerror(number)
    made = OutputError(f"Cannot write {path}: {reason} ({_HINTS[number]}). Nothing was written there; "
                       "what was there before is unchanged.")
    made.errno, made.strerror, made.filename = number, reason, str(path)
    return made


@contextlib.contextmanager
def write_failures(path: str | os.PathLike, *folders: str | os.PathLike) -> Iterator[None]:
    """Turn a write failure into a one-line :class:`OutputError` naming ``path``.

    Disk full, file too large, quota and read-only always count; permission
    errors only when they concern ``path`` or one of ``folders`` (the
    temporary files), not a source being read.
    """
    try:
        yield
    except RICENetError:  # already a message for the user (a bundle that does not load back, a cancel...)
        raise
    except Exception as error:
        made = output_error(path, error)
        if made is None:
            raise
        if getattr(error, "errno", None) in (errno.EACCES, errno.EPERM):
            places = [str(Path(p)) for p in (path, *folders)]
            name = str(getattr(error, "filename", "") or "")
            if name and not any(name == p or name.startswith(p + os.sep) for p in places):
                raise
        raise made from None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _owner_suffix() -> str:
    return f".{_host()}.{os.getpid()}.tmp"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _stale(name: str, after_tmp: str) -> bool:
    """Whether a temporary ``name`` (``...<host>.<pid>.tmp<after_tmp>``) was left by a dead writer on this host."""
    core = name[: len(name) - len(after_tmp)] if after_tmp else name
    if not core.endswith(".tmp"):
        return False
    parts = core[: -len(".tmp")].rsplit(".", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return False  # not ours, or from before temporary names carried their writer
    return parts[1] == _host() and not _alive(int(parts[2]))


def remove_stale_temporaries(folder: str | os.PathLike, stem: str, suffix: str = "") -> list[Path]:
    """Remove what killed writers of ``stem + suffix`` left in ``folder``; returns what was removed.

    Only temporaries of that name whose writer ran on this host and is no
    longer alive are touched; a writer still at work keeps its own.
    """
    pattern = f".{glob.escape(stem)}.*.tmp{glob.escape(suffix)}"
    removed = []
    for leftover in Path(folder).glob(pattern):
        if _stale(leftover.name, suffix):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffix (``.nii.gz``, ``.safetensors``)
    so that writers choosing a format by extension still work. A full disk or
    a file too large is an :class:`OutputError` naming ``path``; the previous
    file, if any, stays.

    >>> with atomic_path("out/image.nii.gz") as tmp:   # doctest: +SKIP
    ...     sitk.WriteImage(image, str(tmp))
    """
    path = Path(path)
    if suffix is None:
        suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix
    with write_failures(path, path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        stem = path.name[: len(path.name) - len(suffix)] if suffix and path.name.endswith(suffix) else path.stem
        remove_stale_temporaries(path.parent, stem, suffix)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=_owner_suffix() + suffix, dir=path.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with write_failures(path, tmp, path.parent):
            yield tmp
            if tmp.exists():
                _as_if_created(tmp, directory=False)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _first_non_finite(value: Any, where: str = "") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or '(top level)'} = {value}"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def json_text(data: Any, where: str | os.PathLike, **options: Any) -> str:
    """Strict JSON (no NaN or Infinity, which other readers reject); a violation is an error naming the value."""
    try:
        return json.dumps(data, allow_nan=False, **options)
    except ValueError:
        found = _first_non_finite(data)
        if found is None:
            raise
        raise OutputError(f"Refusing to write {where}: {found} is not a number, and JSON has no NaN or "
                          "Infinity. The value comes from a failed computation; nothing was written.") from None


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write strict JSON atomically; NaN or Infinity anywhere in ``data`` is an :class:`OutputError`."""
    write_text(path, json_text(data, path, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place at the end.

    With ``overwrite`` an existing directory is replaced only once the new one
    is complete; otherwise an existing non-empty directory is an error. What
    an earlier writer killed on this host left behind (its temporary folder,
    or the previous version set aside during the swap) is tidied first.
    """
    from .errors import InputError

    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not old.is_symlink():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)  # a swap that finished; only its clean-up was missed
        else:
            os.replace(old, path)  # killed between the two renames of a swap: the previous version comes back
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise InputError(f"Output folder {path} already exists and is not empty; choose another or allow overwriting.")
    with write_failures(path, path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, path.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=_owner_suffix(), dir=path.parent))
    try:
        with write_failures(path, tmp, path.parent):
            yield tmp
            _as_if_created_tree(tmp)
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
