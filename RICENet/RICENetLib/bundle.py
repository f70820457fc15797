"""The model bundle: a trained 5-fold ensemble as a folder that cannot run code.

Layout::

    BUNDLE/
      bundle.json            what the weights are and how inputs must be prepared
      fold0.safetensors      one weights file per fold (safetensors: tensors only)
      features.safetensors   the training cohort's pooled network features (optional; RICENetLib.ood)
      ...                    anything else (training log, curves, reliability.png, folds.json) is informative

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

``bundle.json`` itself carries ``bundle_sha256``: the SHA-256 of its own content
in a canonical form (:func:`header_checksum`: every other key, sorted, compact,
UTF-8). An edit after the bundle was written (another preprocessing, input
size, class order...) changes what the weights mean, so it is refused until
someone re-seals the file on purpose with ``ricenet bundle sign BUNDLE``
(:func:`sign_bundle`), which validates the whole bundle and prints what it
seals. The seal is a checksum, not a signature with a key: it catches edits
made unknowingly, not a forger who re-seals.

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
from .errors import BundleError, RICENetError

BUNDLE_FORMAT = "ricenet-bundle"
#: The bundle format this version writes; it reads every version in :data:`READABLE_FORMAT_VERSIONS`.
BUNDLE_FORMAT_VERSION = 1
READABLE_FORMAT_VERSIONS = (1,)
BUNDLE_FILE = "bundle.json"
#: The key of ``bundle.json`` that holds the SHA-256 of the rest of it (:func:`header_checksum`).
CHECKSUM_KEY = "bundle_sha256"
#: ``bundle.json`` is a description, not data: one far larger than this is not a bundle's.
MAX_HEADER_BYTES = 64 * 1024 * 1024
SIGN_COMMAND = "ricenet bundle sign"
#: The training cohort's pooled network features (:mod:`RICENetLib.ood`).
OOD_FILE = "features.safetensors"

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
    out_of_fold: Sequence[Mapping[str, Any]] | None = None,
    calibration: Mapping[str, Any] | None = None,
    out_of_distribution: tuple[Mapping[str, torch.Tensor], Mapping[str, Any]] | None = None,
) -> Path:
    """Write a bundle atomically: the folder appears complete or not at all.

    ``folds`` carry their ``state_dict``; file names and checksums are filled
    in here. ``extra_files`` (name in the bundle → source path) are copied
    alongside, e.g. the training log and curves. ``out_of_fold`` (every
    validation patient's probabilities from the one fold that validated it:
    ``{patient_id, label, p: {class: p}, fold}``) and ``calibration``
    (:func:`RICENetLib.calibration.fit_temperature` on them) are sealed with
    the rest (:func:`_check_out_of_fold`). ``out_of_distribution`` (tensors
    and ``bundle.json`` entry of :func:`RICENetLib.ood.fit_reference`) becomes
    ``features.safetensors``, whose SHA-256 the sealed entry records
    (:func:`_load_out_of_distribution`). The written bundle is loaded
    back before it is moved into place, so a bundle that exists is a bundle
    that loads.
    """
    import shutil

    from safetensors.torch import save_file

    modalities = tuple(modalities)
    preprocessing = dict(preprocessing)
    # The network was trained on input_size: a bundle that leaves it to the preprocessing default would lie.
    preprocessing.setdefault("input_size", [int(v) for v in input_size])
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
    _check_preprocessing(header, f"Bundle {path}")
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
        if out_of_fold is not None:
            header["out_of_fold"] = [dict(entry) for entry in out_of_fold]
        if calibration is not None:
            header["calibration"] = dict(calibration)
        if out_of_distribution is not None:
            tensors, entry = out_of_distribution
            entry = dict(entry)
            name = entry.setdefault("file", OOD_FILE)
            if not _WEIGHTS_NAME.match(name) or name in {f.weights for f in written}:
                raise BundleError(f"Bundle {path}: the features file name '{name}' is not a plain name of its own.")
            save_file({k: v.detach().to("cpu").contiguous() for k, v in sorted(tensors.items())}, str(tmp / name),
                      metadata={"ricenet": json.dumps({"format": BUNDLE_FORMAT, "content": "out_of_distribution"})})
            entry["sha256"] = _sha256(tmp / name)
            header["out_of_distribution"] = entry
        for name, source in (extra_files or {}).items():
            if name == BUNDLE_FILE or _WEIGHTS_NAME.match(name) or "/" in name or name.startswith("."):
                raise BundleError(f"Bundle {path}: extra file name '{name}' is reserved or not a plain name.")
            shutil.copyfile(source, tmp / name)
        header = _jsonable(header)
        header[CHECKSUM_KEY] = header_checksum(header)
        write_json(tmp / BUNDLE_FILE, header)
        try:
            load_bundle(tmp)
        except BundleError as error:  # name the bundle, not its temporary folder
            raise BundleError(str(error).replace(str(tmp), str(path))) from None
    return path


def _jsonable(value: Any) -> Any:
    """NaN and Infinity are not JSON: store them as null (e.g. the AUC of a one-class fold)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def header_checksum(metadata: Mapping[str, Any]) -> str:
    """SHA-256 of ``bundle.json``'s content without :data:`CHECKSUM_KEY`: keys sorted, compact, UTF-8.

    The same content gives the same checksum whatever the indentation or key
    order of the file, so only a change of meaning breaks the seal.
    """
    content = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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

    def __init__(self, path: Path, metadata: dict[str, Any], folds: list[BundleFold],
                 ood_tensors: Mapping[str, torch.Tensor] | None = None) -> None:
        self.path = path
        self.metadata = metadata
        self.folds = folds
        #: ``features``/``location``/``precision`` of :mod:`RICENetLib.ood`; ``None`` for a bundle without them.
        self.ood_tensors = ood_tensors

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


def load_bundle(path: str | os.PathLike, *, verify_checksum: bool = True) -> ModelBundle:
    """Read and validate a bundle folder; every problem is a :class:`BundleError` naming the file.

    ``verify_checksum=False`` is for :func:`sign_bundle` alone: it validates
    everything except the seal of ``bundle.json``.
    """
    path = Path(path)
    header_path = path / BUNDLE_FILE
    metadata = read_header(path)
    _check_format(metadata, str(header_path))
    if verify_checksum:
        _check_checksum(metadata, path)
    _check_header(metadata, str(header_path))
    _check_preprocessing(metadata, str(header_path))
    expected = _expected_shapes(metadata["architecture"], str(header_path))
    raw_folds = metadata.get("folds")
    if not isinstance(raw_folds, list) or not raw_folds:
        raise BundleError(f"{header_path} lists no folds.")
    _check_fold_entries(raw_folds, str(header_path))
    _check_out_of_fold(metadata, str(header_path))
    _check_memory(metadata, path)
    folds = [_load_fold(path, entry, expected, str(header_path)) for entry in raw_folds]
    ood = _load_out_of_distribution(metadata, path)
    return ModelBundle(path, metadata, sorted(folds, key=lambda f: f.index), ood)


def sign_bundle(path: str | os.PathLike) -> tuple[ModelBundle, str]:
    """Seal ``bundle.json`` as it is now, after validating the whole bundle; returns it and the old seal's state.

    The state is ``"missing"`` (a bundle from before seals, or the key was
    removed), ``"changed"`` (the content was edited) or ``"valid"`` (nothing
    to do; the file is left untouched). Everything else is checked as by
    :func:`load_bundle`, so a bundle that cannot load is never sealed.
    """
    path = Path(path)
    metadata = read_header(path)
    _check_format(metadata, str(path / BUNDLE_FILE))
    bundle = load_bundle(path, verify_checksum=False)
    checksum = header_checksum(metadata)
    recorded = metadata.get(CHECKSUM_KEY)
    state = "missing" if recorded is None else "valid" if recorded == checksum else "changed"
    if state != "valid":
        sealed = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
        sealed[CHECKSUM_KEY] = checksum
        write_json(path / BUNDLE_FILE, sealed)
        bundle.metadata = sealed
    return bundle, state


def describe_bundle(bundle: ModelBundle) -> list[str]:
    """What a bundle says, line by line: what ``ricenet bundle sign``/``verify`` show before a person trusts it."""
    meta = bundle.metadata
    lines = [
        f"bundle        {bundle.path}",
        f"id            {bundle.id}",
        f"created       {meta.get('created', '?')} with ricenet {meta.get('software', {}).get('ricenet', '?')}",
        f"modalities    {', '.join(bundle.modalities)} (channel order)",
        f"classes       {', '.join(bundle.class_names)} (output order)",
        f"input size    {' × '.join(map(str, bundle.input_size))} voxels",
        f"architecture  {json.dumps(bundle.architecture, sort_keys=True)}",
        f"preprocessing {json.dumps(bundle.preprocessing, sort_keys=True)}",
        f"seed          {meta.get('seed')}",
    ]
    for fold in bundle.folds:
        f1 = fold.metrics.get("macro_f1")
        lines.append(f"fold {fold.index:<8} {fold.weights} sha256 {fold.sha256[:16]}…, epoch {fold.epoch}, "
                     f"validation macro F1 {f1 if f1 is None else round(f1, 3)}, "
                     f"{len(fold.validation_patients)} validation patient(s)")
    if meta.get("out_of_fold") is not None:
        from .calibration import summary_line

        lines.append(summary_line(meta.get("calibration")).replace("calibration: ", "calibration   ", 1))
    ood = meta.get("out_of_distribution")
    lines.append(f"features      {ood['file']} sha256 {ood['sha256'][:16]}…, {ood['feature_dim']} pooled features of "
                 f"{len(ood['patients'])} patients per fold, {len(ood['reference'])} out-of-fold distances"
                 if ood else "features      none (no out-of-distribution check with this bundle)")
    lines.append(f"{CHECKSUM_KEY} {meta.get(CHECKSUM_KEY)}")
    return lines


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """``bundle.json`` parsed as strict JSON (no NaN, no repeated keys), not yet validated."""
    path = Path(path)
    where = f"Model bundle {path}"
    if not path.is_dir():
        raise BundleError(f"{where} does not exist or is not a folder.")
    header_path = path / BUNDLE_FILE
    try:
        header_path.stat()
    except PermissionError as error:  # a folder others may not enter: not "there is no bundle.json"
        raise _unreadable(header_path, error) from None
    except OSError:
        pass
    if not header_path.is_file():
        raise BundleError(f"{where} has no {BUNDLE_FILE}; it is not a RICE-NET model bundle.")
    try:
        size = header_path.stat().st_size
        if size > MAX_HEADER_BYTES:
            raise BundleError(f"{header_path} is {size / 2**20:.0f} MiB; a bundle description is a few kB "
                              f"(at most {MAX_HEADER_BYTES // 2**20} MiB). This is not a RICE-NET bundle.json.")
        raw = header_path.read_bytes()
    except OSError as error:
        raise _unreadable(header_path, error) from None
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeated_keys, parse_constant=_no_constants)
    except RecursionError:
        raise BundleError(f"{header_path} is nested too deeply to be a bundle description; the bundle is damaged.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{header_path} is not valid JSON ({error}); the bundle is damaged.") from None
    except ValueError as error:
        raise BundleError(f"{header_path} is not strict JSON: {error}; the bundle is damaged or was edited by hand.") from None


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two values for one key would let two readers see two different bundles."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key '{key}' appears twice in one object")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _unreadable(file: Path, error: OSError) -> BundleError:
    reason = error.strerror or str(error)
    hint = (" Ask the bundle's owner to make it readable (chmod -R a+rX BUNDLE) or copy it to a folder of yours."
            if isinstance(error, PermissionError) else "")
    return BundleError(f"{file} cannot be read ({reason}).{hint}")


def _check_checksum(metadata: dict[str, Any], path: Path) -> None:
    header_path = path / BUNDLE_FILE
    recorded = metadata.get(CHECKSUM_KEY)
    if recorded is None:
        raise BundleError(f"{header_path} has no {CHECKSUM_KEY}: it was written before bundle descriptions were "
                          f"sealed, or the seal was removed. Check its content, then run "
                          f"'{SIGN_COMMAND} {path}' to seal it.")
    if not isinstance(recorded, str) or not _SHA256.match(recorded) or recorded != header_checksum(metadata):
        raise BundleError(f"{header_path} was changed after the bundle was written (its content no longer matches "
                          f"its {CHECKSUM_KEY}). An edit can change what the model means, so it is refused. Restore "
                          f"the original, or, if the edit is deliberate, run '{SIGN_COMMAND} {path}' to seal it.")


def _check_format(metadata: Any, where: str) -> None:
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


def _check_header(metadata: Any, where: str) -> None:
    _check_format(metadata, where)
    modalities = metadata.get("modalities")
    if (not isinstance(modalities, list) or not modalities or any(m not in MODALITIES for m in modalities)
            or list(modalities) != [m for m in MODALITIES if m in modalities]):
        raise BundleError(f"{where}: 'modalities' must be a non-empty subset of {', '.join(MODALITIES)} "
                          f"in that order (got {modalities!r}).")
    classes = metadata.get("class_names")
    if (not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c.strip() for c in classes)
            or len(set(classes)) != len(classes)):
        raise BundleError(f"{where}: 'class_names' must list at least two different, non-empty class names "
                          f"(got {classes!r}).")
    size = metadata.get("input_size")
    if (not isinstance(size, list) or len(size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise BundleError(f"{where}: 'input_size' must be three positive integers (got {size!r}).")
    seed = metadata.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise BundleError(f"{where}: 'seed' must be an integer (got {seed!r}).")
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
    for key, value in architecture.items():
        if key != "name" and not all(_plain_argument(v) for v in (value if isinstance(value, list) else [value])):
            raise BundleError(f"{where}: architecture argument '{key}' = {value!r} is not a plain value this "
                              "network takes (numbers from 0 to 4096, short names, true/false).")


def _plain_argument(value: Any) -> bool:
    import math

    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return len(value) <= 64
    return isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 4096


def _check_preprocessing(metadata: dict[str, Any], where: str) -> None:
    """The preprocessing must be one this version runs, and must make the input the network was trained on."""
    from .preprocessing import PreprocessParameters

    try:
        parameters = PreprocessParameters.from_dict(metadata["preprocessing"])
    except (RICENetError, TypeError, ValueError) as error:
        raise BundleError(f"{where}: its preprocessing cannot be used ({error}).") from None
    if tuple(parameters.size_zyx) != tuple(metadata["input_size"]):
        raise BundleError(f"{where}: the preprocessing makes inputs of {list(parameters.size_zyx)} voxels but the "
                          f"network was trained on 'input_size' {metadata['input_size']}.")


def _check_fold_entries(entries: list[Any], where: str) -> None:
    """Types of every fold entry, and no two folds on one index or one weights file."""
    indices, names = [], []
    for entry in entries:
        if (not isinstance(entry, dict) or not isinstance(entry.get("index"), int) or isinstance(entry["index"], bool)
                or entry["index"] < 0):
            raise BundleError(f"{where}: a fold entry has no non-negative integer 'index'.")
        index = entry["index"]
        for key in ("train_patients", "validation_patients"):
            value = entry.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BundleError(f"{where}: fold {index}: '{key}' must be a list of patient ids.")
        metrics = entry.get("metrics", {})
        if not isinstance(metrics, dict) or not all(
                v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
            raise BundleError(f"{where}: fold {index}: 'metrics' must map names to numbers.")
        epoch = entry.get("epoch")
        if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
            raise BundleError(f"{where}: fold {index}: 'epoch' must be a non-negative integer (got {epoch!r}).")
        indices.append(index)
        names.append(entry.get("weights"))
    if len(set(indices)) != len(indices):
        raise BundleError(f"{where} lists a fold index twice ({indices}).")
    repeated = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if repeated:
        raise BundleError(f"{where}: folds share the weights file {repeated[0]}; each fold needs its own model.")


def _finite_number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_out_of_fold(metadata: dict[str, Any], where: str) -> None:
    """``out_of_fold`` and ``calibration`` (both optional, the second needs the first) must mean what they say.

    Every entry names a patient that its fold validated, once; a label among
    the class names; a probability per class in [0, 1] summing to 1. The
    calibration's temperature is a positive number and its patient count that
    of ``out_of_fold``. An older bundle without them loads (without calibration).
    """
    oof, calibration = metadata.get("out_of_fold"), metadata.get("calibration")
    if oof is None:
        if calibration is not None:
            raise BundleError(f"{where}: 'calibration' without 'out_of_fold' (the data it was fitted on).")
        return
    classes = list(metadata["class_names"])
    validated = {f["index"]: set(f.get("validation_patients") or []) for f in metadata["folds"]}
    if not isinstance(oof, list) or not oof:
        raise BundleError(f"{where}: 'out_of_fold' must be a non-empty list of patients' out-of-fold probabilities.")
    seen: set[str] = set()
    for number, entry in enumerate(oof):
        name = f"{where}: out_of_fold entry {number + 1}"
        if not isinstance(entry, dict) or set(entry) != {"patient_id", "label", "p", "fold"}:
            raise BundleError(f"{name} must have exactly patient_id, label, p and fold.")
        patient, fold, p = entry["patient_id"], entry["fold"], entry["p"]
        if not isinstance(patient, str) or patient in seen:
            raise BundleError(f"{name}: patient id {patient!r} is not a string or appears twice "
                              "(each patient is validated by exactly one fold).")
        seen.add(patient)
        if entry["label"] not in classes:
            raise BundleError(f"{name} ({patient}): label {entry['label']!r} is not one of {', '.join(classes)}.")
        if not isinstance(fold, int) or isinstance(fold, bool) or patient not in validated.get(fold, ()):
            raise BundleError(f"{name} ({patient}): fold {fold!r} did not validate this patient.")
        if (not isinstance(p, dict) or set(p) != set(classes) or not all(_finite_number(v) and 0 <= v <= 1 for v in p.values())
                or abs(sum(p.values()) - 1.0) > 1e-4):
            raise BundleError(f"{name} ({patient}): 'p' must give every class ({', '.join(classes)}) a probability "
                              "in [0, 1], summing to 1.")
    if calibration is None:
        return
    if not isinstance(calibration, dict) or not isinstance(calibration.get("method"), str):
        raise BundleError(f"{where}: 'calibration' must be an object with a 'method'.")
    temperature = calibration.get("temperature")
    if not _finite_number(temperature) or temperature <= 0:
        raise BundleError(f"{where}: the calibration temperature must be a positive number (got {temperature!r}).")
    if calibration.get("n_patients") != len(oof):
        raise BundleError(f"{where}: the calibration was fitted on {calibration.get('n_patients')!r} patients but "
                          f"'out_of_fold' holds {len(oof)}.")
    for key in ("ece_before", "ece_after", "brier_before", "brier_after"):
        if not _finite_number(calibration.get(key)) or not 0 <= calibration[key] <= 1:
            raise BundleError(f"{where}: calibration '{key}' must be a number in [0, 1] (got {calibration.get(key)!r}).")


def _load_out_of_distribution(metadata: dict[str, Any], path: Path) -> dict[str, torch.Tensor] | None:
    """``features.safetensors`` checked against its sealed SHA-256, and its shapes against ``bundle.json``.

    Optional (older bundles have none: the gate then says it is not
    available); when recorded, it must be exactly what was recorded.
    """
    entry = metadata.get("out_of_distribution")
    if entry is None:
        return None
    where = f"{path / BUNDLE_FILE}: 'out_of_distribution'"
    folds = metadata["folds"]
    if (not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not _WEIGHTS_NAME.match(entry["file"])
            or not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"])
            or not isinstance(entry.get("patients"), list) or not isinstance(entry.get("reference"), list)
            or not isinstance(entry.get("folds"), list) or not isinstance(entry.get("feature_dim"), int)):
        raise BundleError(f"{where} must name its features file, its sha256, the patients, folds, feature_dim "
                          "and reference distances.")
    if [f.get("fold") for f in entry["folds"]] != sorted(f["index"] for f in folds):
        raise BundleError(f"{where} describes folds {[f.get('fold') for f in entry['folds']]}, the bundle has "
                          f"{sorted(f['index'] for f in folds)}.")
    for item in entry["reference"]:
        if (not isinstance(item, dict) or item.get("patient_id") not in entry["patients"]
                or not _finite_number(item.get("distance")) or item["distance"] < 0):
            raise BundleError(f"{where}: every reference entry needs a patient of the cohort and a distance ≥ 0.")
    file = path / entry["file"]
    if not file.is_file():
        raise BundleError(f"Model bundle {path}: the training-cohort features ({entry['file']}) are missing.")
    tensors = _sealed_safetensors(file, entry["sha256"])
    n_folds, n_patients, dim = len(folds), len(entry["patients"]), entry["feature_dim"]
    expected = {"features": (n_folds, n_patients, dim), "location": (n_folds, dim), "precision": (n_folds, dim, dim)}
    if {k: tuple(v.shape) for k, v in tensors.items()} != expected or not all(
            bool(torch.isfinite(v).all()) for v in tensors.values()):
        raise BundleError(f"{file} must hold finite tensors {expected} (folds, patients, feature dimension); "
                          f"it holds {({k: list(v.shape) for k, v in tensors.items()})}.")
    return tensors


def available_memory_bytes() -> int:
    """The most memory one forward pass could have here: physical RAM, or a visible GPU's if larger."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a generous workstation
        ram = 256 * 2**30
    best = int(ram)
    if torch.cuda.is_available():
        for number in range(torch.cuda.device_count()):
            best = max(best, int(torch.cuda.get_device_properties(number).total_memory))
    return best


def _check_memory(metadata: dict[str, Any], path: Path) -> None:
    from .model import forward_memory_bytes

    size = tuple(metadata["input_size"])
    need = forward_memory_bytes(metadata["architecture"], size)  # type: ignore[arg-type]
    have = available_memory_bytes()
    if need > 2 * have:  # the estimate may be up to 2× high: refuse only what cannot fit even then
        raise BundleError(f"Model bundle {path}: its input size {'×'.join(map(str, size))} needs about "
                          f"{_bytes(need)} of memory for one forward pass (at least {_bytes(need / 2)}), more than this machine has "
                          f"({_bytes(have)}). Its {BUNDLE_FILE} is wrong, or the bundle needs a larger machine.")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _expected_shapes(architecture: dict[str, Any], where: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes the architecture's network has, built on the meta device (no memory, no maths)."""
    from .model import build_network

    try:
        with torch.device("meta"):
            network = build_network(architecture)
    except BundleError as error:
        raise BundleError(f"{where}: {error}") from None
    return {name: tuple(t.shape) for name, t in network.state_dict().items()}


def _sealed_safetensors(file: Path, checksum: str) -> dict[str, torch.Tensor]:
    """The tensors of ``file`` once its bytes match ``checksum``; never a pickle. Every problem is a BundleError."""
    from safetensors.torch import load as load_safetensors

    try:
        data = file.read_bytes()
    except OSError as error:
        raise _unreadable(file, error) from None
    if hashlib.sha256(data).hexdigest() != checksum:
        raise BundleError(f"{file} does not match the SHA-256 recorded in {BUNDLE_FILE}: the file was changed "
                          "or damaged after the bundle was written. Refusing to load it.")
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:4] == b"PK\x03\x04":
        raise BundleError(f"{file} is a Python pickle / torch.save file, not safetensors. Pickles can run code "
                          "when loaded, so RICE-NET refuses them; export the weights with safetensors.")
    try:
        return load_safetensors(data)
    except Exception as error:  # safetensors raises its own error type for every malformation
        raise BundleError(f"{file} is not a valid safetensors file ({error}); the file is corrupt or truncated.") from None


def _load_fold(path: Path, entry: Any, expected: dict[str, tuple[int, ...]], where: str) -> BundleFold:
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
    tensors = _sealed_safetensors(file, checksum)
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
        tensor = tensors[key]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BundleError(f"{file}: tensor {key} holds NaN or infinite values, so fold {index} cannot give a "
                              "probability (the training diverged, or the file was made wrongly). Refusing to load it.")
    metrics = entry.get("metrics") if isinstance(entry.get("metrics"), dict) else {}
    return BundleFold(index, tuple(entry.get("train_patients") or ()), tuple(entry.get("validation_patients") or ()),
                      metrics, entry.get("epoch"), name, checksum, tensors)
