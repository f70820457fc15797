"""A disk cache of preprocessed cases, so training and ablations do not redo registration.

An entry is a folder written by :meth:`PreprocessResult.save`, named by a
SHA-256 of what decides the result: the input files (resolved path, size and
modification time — or, with ``content_hash``, their bytes), the preprocessing
parameters, the result format version and the versions of the software that
computes it. Change any of them and the old entry is simply never found again.

>>> cache = PreprocessCache("~/.cache/ricenet/preprocessed")                       # doctest: +SKIP
>>> result = cache.get_or_compute(case.paths["postop"], case.paths["event"],     # doctest: +SKIP
...                               case.paths["dose"], params, case_id=case.patient_id)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from .errors import InputError
from .preprocessing import FORMAT, FORMAT_VERSION, PreprocessParameters, PreprocessResult, software_versions, preprocess_case
from .progress import CancelCheck, Progress, ProgressCallback, as_progress

log = logging.getLogger(__name__)


def _file_fingerprint(path: Path, content_hash: bool) -> dict[str, Any]:
    stat = path.stat()
    entry: dict[str, Any] = {"name": path.name, "size": stat.st_size}
    if content_hash:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        entry["sha256"] = digest.hexdigest()
    else:
        entry["mtime_ns"] = stat.st_mtime_ns
    return entry


def input_fingerprint(path: str | os.PathLike, content_hash: bool = False) -> dict[str, Any]:
    """What identifies one input: a file, or every file of a DICOM series folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Image {path} does not exist.")
    resolved = path.resolve()
    if resolved.is_dir():
        files = sorted(p for p in resolved.iterdir() if p.is_file())
        return {"path": str(resolved), "files": [_file_fingerprint(p, content_hash) for p in files]}
    return {"path": str(resolved), **_file_fingerprint(resolved, content_hash)}


class PreprocessCache:
    """Preprocessed cases under ``root``, one folder per key (``root/ab/abcdef…``).

    ``content_hash`` identifies inputs by their bytes rather than path, size
    and time: slower, but a copied or touched file still hits. The path stays
    in the key either way, so two copies of one case are two entries.
    """

    def __init__(self, root: str | os.PathLike, content_hash: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.content_hash = content_hash
        self.hits = 0
        self.misses = 0

    def key_material(self, postop: str | os.PathLike, event: str | os.PathLike, dose: str | os.PathLike,
                     params: PreprocessParameters) -> dict[str, Any]:
        software = software_versions(params)
        software.pop("python", None)
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "software": software,
            "parameters": params.to_dict(),
            "inputs": {name: input_fingerprint(value, self.content_hash)
                       for name, value in (("postop", postop), ("event", event), ("dose", dose))},
        }

    def key(self, postop: str | os.PathLike, event: str | os.PathLike, dose: str | os.PathLike,
            params: PreprocessParameters) -> str:
        material = json.dumps(self.key_material(postop, event, dose, params), sort_keys=True)
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Optional[PreprocessResult]:
        """The cached result, or ``None`` when absent or unreadable (then it is recomputed)."""
        folder = self.path(key)
        if not (folder / "preprocess.json").exists():
            return None
        try:
            return PreprocessResult.load(folder)
        except (InputError, OSError, KeyError, ValueError) as error:
            log.warning("Ignoring unreadable cache entry %s: %s", folder, error)
            return None

    def put(self, key: str, result: PreprocessResult) -> Path:
        folder = self.path(key)
        try:
            result.save(folder, overwrite=True)
        except OSError as error:  # another process may have written the same entry at the same moment
            if self.get(key) is None:
                raise InputError(f"Could not write the preprocessing cache entry {folder}: {error}") from None
        return folder

    def get_or_compute(self, postop: str | os.PathLike, event: str | os.PathLike, dose: str | os.PathLike,
                       params: Optional[PreprocessParameters] = None, *, case_id: Optional[str] = None,
                       progress: Optional[ProgressCallback | Progress] = None,
                       cancel: Optional[CancelCheck] = None) -> PreprocessResult:
        """The cached result for these files and parameters, computing and storing it when missing."""
        params = (params or PreprocessParameters()).validate()
        for value, modality in ((postop, "postop"), (event, "event"), (dose, "dose")):
            if not isinstance(value, (str, os.PathLike)):
                raise InputError(f"The preprocessing cache needs file paths; the {modality} image is a {type(value).__name__}.")
        p = as_progress(progress, cancel)
        key = self.key(postop, event, dose, params)
        cached = self.get(key)
        if cached is not None:
            self.hits += 1
            cached.info["case_id"] = case_id
            p(1.0, "preprocessed (cached)")
            return cached
        self.misses += 1
        result = preprocess_case(postop, event, dose, params, case_id=case_id, progress=p)
        result.info["cache_key"] = key
        result.reference = None  # a cached result never holds it; a fresh one should not differ
        self.put(key, result)
        return result
