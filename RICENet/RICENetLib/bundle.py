"""The model bundle: a trained 5-fold ensemble as a folder that cannot run code.

Layout::

    BUNDLE/
      bundle.json            what the weights are and how inputs must be prepared
      fold0.safetensors      one weights file per fold (safetensors: tensors only)
      ...                    anything else (training log, curves, folds.json) is informative

``bundle.json`` holds the format version, an id, the modalities in channel
order, the preprocessing parameters, the input size, the architecture
arguments (:func:`RICENetLib.model.build_network`), the class names, and for
every fold its patients, validation metrics, weights file and that file's
SHA-256; plus the mean ± sd of the fold metrics, the seed, software versions
and the creation date.

Loading never unpickles (no ``torch.load``, no ``pickle``): weights are read
with safetensors, every file is checked against its recorded SHA-256, and every
tensor's name and shape against the network the architecture describes, so a
tampered, truncated, renamed or mismatched file is refused with a
:class:`~RICENetLib.errors.BundleError` before any network sees it.

>>> bundle = load_bundle("models/ricenet")                     # doctest: +SKIP
>>> bundle.modalities, bundle.input_size                       # doctest: +SKIP
(('postop', 'event', 'dose'), (224, 224, 224))
>>> nets = bundle.models("cuda")                               # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from . import CLASS_NAMES, MODALITIES, __version__
from .atomic import atomic_directory, write_json
from .errors import BundleError

BUNDLE_FORMAT = "ricenet-bundle"
#: The bundle format this version writes; it reads every version in :data:`READABLE_FORMAT_VERSIONS`.
BUNDLE_FORMAT_VERSION = 1
READABLE_FORMAT_VERSIONS = (1,)
BUNDLE_FILE = "bundle.json"

_WEIGHTS_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.safetensors$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BundleFold:
    """One fold's entry in ``bundle.json``; ``state_dict`` is filled by the writer and the loader."""

    index: int
    train_patients: tuple[str, ...]
    validation_patients: tuple[str, ...]
    metrics: dict[str, float]
    epoch: int | None = None
    weights: str = ""
    sha256: str = ""
    state_dict: Mapping[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "weights": self.weights,
            "sha256": self.sha256,
            "epoch": self.epoch,
            "metrics": self.metrics,
            "train_patients": list(self.train_patients),
            "validation_patients": list(self.validation_patients),
        }


def software_versions() -> dict[str, str]:
    import numpy
    import safetensors

    versions = {"ricenet": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": numpy.__version__, "safetensors": safetensors.__version__}
    try:
        import monai

        versions["monai"] = monai.__version__
    except ImportError:  # pragma: no cover - monai is a dependency, but the bundle does not need it to be written
        pass
    return versions


def mean_sd(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (ddof = 1, as papers quote "± sd over folds").

    ``sd`` is ``None`` for a single value (one fold has no spread); ``None``
    and NaN values (e.g. an AUC on a one-class fold) are left out of ``n``.
    """
    import math

    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return {"mean": None, "sd": None, "n": 0}
    mean = sum(kept) / len(kept)
    sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1)) if len(kept) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(kept)}


def fold_metrics_summary(folds: Sequence[BundleFold]) -> dict[str, dict[str, float | int | None]]:
    """:func:`mean_sd` of every numeric fold metric."""
    names = sorted({k for f in folds for k, v in f.metrics.items() if isinstance(v, (int, float))})
    return {name: mean_sd([f.metrics.get(name) for f in folds]) for name in names}


def write_bundle(
    path: str | os.PathLike,
    folds: Sequence[BundleFold],
    *,
    modalities: Sequence[str],
    architecture: Mapping[str, Any],
    input_size: Sequence[int],
    preprocessing: Mapping[str, Any],
    seed: int,
    class_names: Sequence[str] = CLASS_NAMES,
    training: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str | os.PathLike] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle atomically: the folder appears complete or not at all.

    ``folds`` carry their ``state_dict``; file names and checksums are filled
    in here. ``extra_files`` (name in the bundle → source path) are copied
    alongside, e.g. the training log and curves. The written bundle is loaded
    back before it is moved into place, so a bundle that exists is a bundle
    that loads.
    """
    import shutil

    from safetensors.torch import save_file

    modalities = tuple(modalities)
    header = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "id": "",
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "modalities": list(modalities),
        "class_names": list(class_names),
        "input_size": [int(v) for v in input_size],
        "preprocessing": dict(preprocessing),
        "architecture": dict(architecture),
        "seed": int(seed),
        "training": dict(training or {}),
        "software": software_versions(),
    }
    _check_header(header, f"Bundle {path}")
    if not folds:
        raise BundleError(f"Bundle {path}: no folds to write.")
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        written = []
        for fold in sorted(folds, key=lambda f: f.index):
            name = f"fold{fold.index}.safetensors"
            # Sorted: the same weights give the same bytes (and bundle id) whatever order they arrive in.
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in sorted(fold.state_dict.items())}
            # One metadata entry: safetensors writes several in a random order, which would change the bytes.
            about = json.dumps({"format": BUNDLE_FORMAT, "fold": fold.index, "modalities": list(modalities)})
            save_file(tensors, str(tmp / name), metadata={"ricenet": about})
            written.append(BundleFold(fold.index, tuple(fold.train_patients), tuple(fold.validation_patients),
                                      dict(fold.metrics), fold.epoch, name, _sha256(tmp / name)))
        digest = hashlib.sha256("".join(f.sha256 for f in written).encode()).hexdigest()
        header["id"] = f"ricenet-{'+'.join(modalities)}-{digest[:12]}"
        header["folds"] = [f.to_json() for f in written]
        header["metrics"] = fold_metrics_summary(written)
        for name, source in (extra_files or {}).items():
            if name == BUNDLE_FILE or _WEIGHTS_NAME.match(name) or "/" in name or name.startswith("."):
                raise BundleError(f"Bundle {path}: extra file name '{name}' is reserved or not a plain name.")
            shutil.copyfile(source, tmp / name)
        write_json(tmp / BUNDLE_FILE, _jsonable(header))
        load_bundle(tmp)
    return path


def _jsonable(value: Any) -> Any:
    """NaN is not JSON: store it as null."""
    import math

    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelBundle:
    """A validated bundle: metadata plus every fold's weights, already checked.

    Build it with :func:`load_bundle`. ``models(device)`` rebuilds the
    networks in eval mode, one per fold, in fold order.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], folds: list[BundleFold]) -> None:
        self.path = path
        self.metadata = metadata
        self.folds = folds

    @property
    def id(self) -> str:
        return str(self.metadata["id"])

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.metadata["modalities"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["class_names"])

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.metadata["input_size"])  # type: ignore[return-value]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.metadata["preprocessing"])

    @property
    def architecture(self) -> dict[str, Any]:
        return dict(self.metadata["architecture"])

    def models(self, device: str | torch.device = "cpu") -> list[torch.nn.Module]:
        from .model import build_network

        networks = []
        for fold in self.folds:
            network = build_network(self.architecture)
            network.load_state_dict(dict(fold.state_dict), strict=True)
            networks.append(network.to(device).eval())
        return networks

    def __repr__(self) -> str:
        return f"ModelBundle({self.id!r}, folds={len(self.folds)}, modalities={self.modalities})"


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Read and validate a bundle folder; every problem is a :class:`BundleError` naming the file."""
    path = Path(path)
    where = f"Model bundle {path}"
    if not path.is_dir():
        raise BundleError(f"{where} does not exist or is not a folder.")
    header_path = path / BUNDLE_FILE
    if not header_path.is_file():
        raise BundleError(f"{where} has no {BUNDLE_FILE}; it is not a RICE-NET model bundle.")
    try:
        metadata = json.loads(header_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{header_path} is not valid JSON ({error}); the bundle is damaged.") from None
    _check_header(metadata, str(header_path))
    expected = _expected_shapes(metadata["architecture"], str(header_path))
    raw_folds = metadata.get("folds")
    if not isinstance(raw_folds, list) or not raw_folds:
        raise BundleError(f"{header_path} lists no folds.")
    folds = [_load_fold(path, entry, expected, str(header_path)) for entry in raw_folds]
    indices = [f.index for f in folds]
    if len(set(indices)) != len(indices):
        raise BundleError(f"{header_path} lists a fold index twice ({indices}).")
    return ModelBundle(path, metadata, sorted(folds, key=lambda f: f.index))


def _check_header(metadata: Any, where: str) -> None:
    if not isinstance(metadata, dict) or metadata.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where} is not a RICE-NET bundle description (its 'format' is not '{BUNDLE_FORMAT}').")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{where} has no valid format_version.")
    if version not in READABLE_FORMAT_VERSIONS:
        newer = version > max(READABLE_FORMAT_VERSIONS)
        raise BundleError(f"{where} has bundle format version {version}; this RICE-NET ({__version__}) reads "
                          f"version(s) {', '.join(map(str, READABLE_FORMAT_VERSIONS))}."
                          + (" Update the extension to use this bundle." if newer else ""))
    modalities = metadata.get("modalities")
    if (not isinstance(modalities, list) or not modalities or any(m not in MODALITIES for m in modalities)
            or list(modalities) != [m for m in MODALITIES if m in modalities]):
        raise BundleError(f"{where}: 'modalities' must be a non-empty subset of {', '.join(MODALITIES)} "
                          f"in that order (got {modalities!r}).")
    classes = metadata.get("class_names")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise BundleError(f"{where}: 'class_names' must list at least two class names (got {classes!r}).")
    size = metadata.get("input_size")
    if (not isinstance(size, list) or len(size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise BundleError(f"{where}: 'input_size' must be three positive integers (got {size!r}).")
    if not isinstance(metadata.get("preprocessing"), dict):
        raise BundleError(f"{where}: 'preprocessing' must be an object of preprocessing parameters.")
    architecture = metadata.get("architecture")
    if not isinstance(architecture, dict):
        raise BundleError(f"{where}: 'architecture' must be an object of network arguments.")
    channels = architecture.get("n_input_channels")
    if channels != len(modalities):
        raise BundleError(f"{where}: the network takes {channels} input channel(s) but the bundle lists "
                          f"{len(modalities)} modalities ({', '.join(modalities)}).")
    if architecture.get("num_classes") != len(classes):
        raise BundleError(f"{where}: the network has {architecture.get('num_classes')} outputs but "
                          f"{len(classes)} class names.")


def _expected_shapes(architecture: dict[str, Any], where: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes the architecture's network has, built on the meta device (no memory, no maths)."""
    from .model import build_network

    try:
        with torch.device("meta"):
            network = build_network(architecture)
    except BundleError as error:
        raise BundleError(f"{where}: {error}") from None
    return {name: tuple(t.shape) for name, t in network.state_dict().items()}


def _load_fold(path: Path, entry: Any, expected: dict[str, tuple[int, ...]], where: str) -> BundleFold:
    from safetensors.torch import load as load_safetensors

    if not isinstance(entry, dict) or not isinstance(entry.get("index"), int):
        raise BundleError(f"{where}: a fold entry has no integer 'index'.")
    index = entry["index"]
    name = entry.get("weights")
    if not isinstance(name, str) or not _WEIGHTS_NAME.match(name):
        raise BundleError(f"{where}: fold {index} names its weights {name!r}; "
                          "a plain file name ending in .safetensors is required.")
    checksum = entry.get("sha256")
    if not isinstance(checksum, str) or not _SHA256.match(checksum):
        raise BundleError(f"{where}: fold {index} has no valid sha256 for {name}.")
    file = path / name
    if not file.is_file():
        raise BundleError(f"Model bundle {path}: the weights of fold {index} ({name}) are missing.")
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != checksum:
        raise BundleError(f"{file} does not match the SHA-256 recorded in {BUNDLE_FILE}: the file was changed "
                          "or damaged after the bundle was written. Refusing to load it.")
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:4] == b"PK\x03\x04":
        raise BundleError(f"{file} is a Python pickle / torch.save file, not safetensors. Pickles can run code "
                          "when loaded, so RICE-NET refuses them; export the weights with safetensors.")
    try:
        tensors = load_safetensors(data)
    except Exception as error:  # safetensors raises its own error type for every malformation
        raise BundleError(f"{file} is not a valid safetensors file ({error}); the file is corrupt or truncated.") from None
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise BundleError(f"{file} does not hold the weights of the network in {BUNDLE_FILE}: "
                          f"{len(missing)} tensor(s) missing (e.g. {missing[:3]}), "
                          f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}).")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            hint = ""
            if key == "conv1.weight" and len(shape) > 1:
                hint = (f" (the file's network takes {tensors[key].shape[1]} input channel(s), "
                        f"the bundle's {shape[1]})")
            raise BundleError(f"{file}: tensor {key} has shape {list(tensors[key].shape)} but the bundle's "
                              f"architecture needs {list(shape)}{hint}.")
    metrics = entry.get("metrics") if isinstance(entry.get("metrics"), dict) else {}
    return BundleFold(index, tuple(entry.get("train_patients") or ()), tuple(entry.get("validation_patients") or ()),
                      metrics, entry.get("epoch"), name, checksum, tensors)
