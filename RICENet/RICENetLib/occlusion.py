"""Occlusion sensitivity: where in the input the ensemble's decision comes from.

A box is occluded (in every channel at once, or in one channel for the
per-modality maps), the network is run again, and the drop in the probability
of the target class is spread over the box; overlapping boxes are averaged.
Positive values mark regions that support the prediction, negative ones regions
that argue against it. The map is averaged over the fold models.

Semantics follow MONAI's :class:`monai.visualize.OcclusionSensitivity` wherever
MONAI offers the setting, so that a map can be checked against it (see
``Testing/test_occlusion.py``):

* box positions: MONAI's sliding-window grid -- origins ``0, s, 2s, ...`` per
  axis, the last one moved back to end at the border; ``s = stride`` or
  ``max(int(mask * (1 - overlap)), 1)`` (a single position where the mask fills
  the axis);
* fills: ``"gaussian"`` multiplies the box by ``1 - G`` (G: MONAI's Gaussian of
  sigma = mask/4 scaled to [0, 1], so the centre is blanked and the rim almost
  kept), ``"mean_img"`` writes the image mean, a number writes that constant,
  ``"mean_patch"`` writes the mean of the box itself -- as MONAI documents it;
  MONAI 1.6.1's code multiplies the box by that mean instead (its ``predictor``
  swaps ``mul`` and ``add``; its callable modes fail outright), so for this
  mode the test checks that MONAI's output equals ours run with that product
  as a callable fill (same boxes, same averaging) and pins the difference;
* averaging: a voxel's value is the weighted mean over the boxes that cover it,
  with MONAI's Gaussian importance weights (sigma = mask/8, floored at 1e-3) in
  ``"gaussian"`` mode and equal weights otherwise;
* ROI: boxes are placed over the ROI grown by ``(mask - 1) // 2`` on each side
  (clipped to the image; the mask shrinks if that region is smaller) and the
  map is kept inside the ROI only -- MONAI's ``b_box=[z0, z1, y0, y1, x0, x1]``
  with our exclusive ``(start, stop)`` pairs.

MONAI returns the probability *with* the box occluded; ours is the unoccluded
probability minus that, per model, averaged over models.

Beyond MONAI: per-modality maps (one channel occluded at a time, its own
image/patch mean for the mean fills), coarse-then-fine, skipping boxes whose
occluded content equals the image (exact: those boxes change nothing), and the
incremental engine (:mod:`RICENetLib.incremental_occlusion`), which gives the
brute-force answer for a fraction of the FLOPs, and a choice of arithmetic for
GPUs: strict float32, TF32 or float16 (:mod:`RICENetLib.occlusion_precision`).

Cost at 224³ for one fold model (resnet18, 3 channels; ``python benchmarks/occlusion.py``):
brute force runs one forward pass (3.68 TFLOP) per box; the incremental engine
runs one unoccluded pass plus a fraction of a pass per box (FLOPs counted by
the engine, in forward-pass equivalents):

========  ====  ======  =====  ======================  ===============================
preset    mask  stride  boxes  incremental (passes)    note
========  ====  ======  =====  ======================  ===============================
quick     32    32      343    ~14                     no overlap, a first look
standard  16    8       19683  ~420 (46x fewer FLOPs)  half-overlapping boxes
fine      16    6       46656  ~1060                   MONAI's defaults (overlap 0.6)
========  ====  ======  =====  ======================  ===============================

On 2 CPU cores one forward pass takes 20-50 s, so "standard" is hours per
fold there, and "quick" (about 70 passes' worth for five folds: 20-60 min) is
the laptop setting; on a GPU the same FLOPs take seconds to minutes. ``per_modality`` multiplies the
boxes by 1 + channels; five folds by 5. Boxes
whose occluded content equals the image change nothing and are skipped exactly
(with the default Gaussian fill: boxes in the zero background outside the
brain and the dose; 45 % of the "standard" boxes of a preprocessed synthetic
case). ``coarse_to_fine`` runs the coarse grid (an eighth of the boxes) plus
the fine boxes it selects, and the unoccluded pass twice per model.

>>> result = occlusion_sensitivity(models, image, OCCLUSION_PRESETS["standard"])  # doctest: +SKIP
>>> result.sensitivity.shape, result.target_class                                # doctest: +SKIP
((224, 224, 224), 1)
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from . import MODALITIES
from .errors import InputError, reject_unknown_keys
from .occlusion_precision import PRECISIONS, brute_force_autocast, compute_dtype, precision_context, resolve_precision
from .progress import CancelCheck, Progress, ProgressCallback, as_progress

logger = logging.getLogger(__name__)

Triple = tuple[int, int, int]
FILL_MODES = ("gaussian", "mean_patch", "mean_img")
ENGINES = ("auto", "incremental", "brute")


# --------------------------------------------------------------------------- settings


@dataclass
class OcclusionSettings:
    """How to occlude: box size and spacing, fill, options. Plain data, JSON round-trip.

    * ``mask_size``: box edge in voxels (one number or (z, y, x)).
    * ``stride``: box spacing; ``None`` derives it from ``overlap`` as MONAI does.
    * ``mode``: ``"gaussian"``, ``"mean_patch"``, ``"mean_img"``, a constant, or
      (as in MONAI; not saved by :meth:`to_dict`) a callable that takes the
      occluded channels of a batch of boxes (B, c, *mask) and returns their fill.
    * ``per_modality``: also make one map per channel (that channel occluded alone).
    * ``roi``: ((z0, z1), (y0, y1), (x0, x1)) model-space box, stop exclusive.
    * ``coarse_to_fine``: first boxes twice as large and twice as far apart, then
      the requested boxes only where the coarse map reaches ``coarse_keep`` of
      its largest magnitude; elsewhere the coarse map stands. Approximate.
    * ``engine``: ``"auto"`` (incremental where the network allows it, else brute
      force with a warning), ``"incremental"`` or ``"brute"``.
    * ``batch_size``: boxes evaluated together; ``None``: by device, 8 on a CPU
      and 64 on a GPU (:func:`default_batch_size`).
    * ``winograd_channels``: the incremental engine may compute stride-1 3×3×3
      convolutions with at least this many channels by Winograd's algorithm
      (:mod:`RICENetLib.winograd`, F(2, 3) or F(4, 3) by tile shape; the same map
      to float rounding); ``0``: never; ``None``: by device, 256 on a CPU and off
      on a GPU (:func:`~RICENetLib.incremental_occlusion.default_winograd_channels`).
    * ``precision``: ``"float32"`` (strict), ``"tf32"`` (tensor-core convolutions
      on CUDA) or ``"float16"``; ``None``: ``"tf32"`` on CUDA, ``"float32"``
      elsewhere (:mod:`RICENetLib.occlusion_precision`).
    """

    mask_size: Union[int, Sequence[int]] = 16
    stride: Union[int, Sequence[int], None] = None
    overlap: float = 0.5
    mode: Union[str, float] = "gaussian"
    per_modality: bool = False
    roi: Optional[Sequence[Sequence[int]]] = None
    coarse_to_fine: bool = False
    coarse_keep: float = 0.5
    engine: str = "auto"
    batch_size: Optional[int] = None
    winograd_channels: Optional[int] = None
    precision: Optional[str] = None

    def validate(self) -> "OcclusionSettings":
        """Raise :class:`InputError` naming the bad parameter; return self."""
        for name in ("mask_size", "stride"):
            value = getattr(self, name)
            if value is None and name == "stride":
                continue
            values = _as_triple(value, name)
            if min(values) < 1:
                raise InputError(f"Occlusion {name} must be at least 1 voxel, got {value}.")
        if self.stride is not None and any(
                s > m for s, m in zip(_as_triple(self.stride, "stride"), _as_triple(self.mask_size, "mask_size"))):
            raise InputError(f"Occlusion stride {self.stride} is larger than the mask {self.mask_size}: "
                             "some voxels would be covered by no box.")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise InputError(f"Occlusion overlap must be in [0, 1), got {self.overlap}.")
        if callable(self.mode):
            pass
        elif isinstance(self.mode, str):
            if self.mode not in FILL_MODES:
                raise InputError(f"Occlusion mode '{self.mode}' is unknown; use one of {', '.join(FILL_MODES)} or a number.")
        elif isinstance(self.mode, bool) or not isinstance(self.mode, (int, float)) or not math.isfinite(self.mode):
            raise InputError(f"Occlusion mode must be one of {', '.join(FILL_MODES)} or a finite number, got {self.mode!r}.")
        if self.engine not in ENGINES:
            raise InputError(f"Occlusion engine '{self.engine}' is unknown; use one of {', '.join(ENGINES)}.")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise InputError(f"Occlusion batch_size must be at least 1, got {self.batch_size}.")
        if self.winograd_channels is not None and int(self.winograd_channels) < 0:
            raise InputError(f"Occlusion winograd_channels must be 0 (off) or more, got {self.winograd_channels}.")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"Occlusion precision '{self.precision}' is unknown; use one of {', '.join(PRECISIONS)}.")
        if self.precision == "float16" and self.winograd_channels:
            raise InputError("Occlusion winograd_channels must be 0 (off) in float16 precision: "
                             "Winograd's transforms lose too much in half precision.")
        if not 0.0 <= float(self.coarse_keep) <= 1.0:
            raise InputError(f"Occlusion coarse_keep must be in [0, 1], got {self.coarse_keep}.")
        if self.roi is not None:
            roi = list(self.roi)
            if len(roi) != 3 or any(len(pair) != 2 or int(pair[0]) >= int(pair[1]) or int(pair[0]) < 0 for pair in roi):
                raise InputError(f"Occlusion roi must be three (start, stop) pairs with 0 <= start < stop, got {self.roi}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        if callable(self.mode):
            raise InputError("Occlusion settings with a callable fill cannot be saved; use a named mode or a number.")
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = _listify(value)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OcclusionSettings":
        reject_unknown_keys(cls, data, "occlusion setting")
        values = dict(data)
        for key in ("mask_size", "stride"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        if values.get("roi") is not None:
            values["roi"] = tuple(tuple(int(v) for v in pair) for pair in values["roi"])
        return cls(**values).validate()


def default_batch_size(device: torch.device) -> int:
    """Boxes per batch when the settings leave it open: on a CPU small batches keep memory low at
    no cost in speed; on a GPU larger ones fill the device. A 224³ 'standard' map on an H200
    (benchmarks/occlusion.py) took 0.89 ms per box at 64 against 1.10–1.30 at 32; 128 gained
    about another 10 % but needs over 1 GB more for its tiles, too much for small GPUs."""
    return 64 if torch.device(device).type == "cuda" else 8


def _listify(value):
    return [_listify(v) for v in value] if isinstance(value, (tuple, list)) else value


#: Named settings for the GUI and the CLI; box counts at 224³ in the module docstring.
OCCLUSION_PRESETS: dict[str, OcclusionSettings] = {
    "quick": OcclusionSettings(mask_size=32, stride=32),
    "standard": OcclusionSettings(mask_size=16, stride=8),
    "fine": OcclusionSettings(mask_size=16, stride=6),
}


def _as_triple(value: Union[int, Sequence[int]], name: str) -> Triple:
    try:
        values = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * 3
    except (TypeError, ValueError):
        raise InputError(f"Occlusion {name} must be an integer or three integers, got {value!r}.") from None
    if len(values) != 3:
        raise InputError(f"Occlusion {name} must be an integer or three integers (z, y, x), got {value!r}.")
    return values  # type: ignore[return-value]


# --------------------------------------------------------------------------- box grid


@dataclass(frozen=True)
class BoxGrid:
    """Where the boxes go: ``starts`` (N, 3) origins of ``mask``-sized boxes inside ``region``."""

    mask: Triple
    stride: Triple
    starts: np.ndarray
    region: tuple[tuple[int, int], ...]  # where boxes are placed (ROI grown by half a mask)
    roi: tuple[tuple[int, int], ...]  # where the map is kept
    shape: Triple  # the image's spatial shape

    @property
    def count(self) -> int:
        return int(len(self.starts))


def _axis_starts(length: int, mask: int, stride: int) -> list[int]:
    """MONAI's sliding-window origins along one axis: every ``stride``, the last flush with the end."""
    starts = []
    for index in range(max(1, math.ceil(length / stride))):
        start = index * stride
        starts.append(min(start, length - mask))
        if start + mask >= length:
            break
    return starts


def box_grid(shape: Sequence[int], settings: OcclusionSettings, *, mask_size=None, stride=None) -> BoxGrid:
    """Box origins for an image of spatial ``shape`` (``mask_size``/``stride`` override the settings)."""
    shape = tuple(int(s) for s in shape)
    mask = _as_triple(settings.mask_size if mask_size is None else mask_size, "mask_size")
    if settings.roi is None:
        roi = tuple((0, s) for s in shape)
        region = roi
    else:
        roi = tuple((int(a), min(int(b), s)) for (a, b), s in zip(settings.roi, shape))
        if any(a >= b for a, b in roi):
            raise InputError(f"Occlusion roi {settings.roi} lies outside the image of shape {shape}.")
        grow = [(m - 1) // 2 for m in mask]
        region = tuple((max(a - g, 0), min(b + g, s)) for (a, b), g, s in zip(roi, grow, shape))
    lengths = [b - a for a, b in region]
    mask = tuple(min(m, n) for m, n in zip(mask, lengths))  # type: ignore[assignment]
    if stride is None and settings.stride is None:
        steps = tuple(n if m == n else max(int(m * (1.0 - float(settings.overlap))), 1)
                      for m, n in zip(mask, lengths))
    else:
        steps = _as_triple(settings.stride if stride is None else stride, "stride")
    axes = [np.asarray(_axis_starts(n, m, s)) + a for n, m, s, (a, _) in zip(lengths, mask, steps, region)]
    starts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.int64)
    return BoxGrid(mask, steps, starts, region, roi, shape)  # type: ignore[arg-type]


def count_boxes(shape: Sequence[int], settings: OcclusionSettings) -> int:
    """Boxes in one map (= forward passes per model and map for brute force)."""
    return box_grid(shape, settings).count


def forward_passes(shape: Sequence[int], settings: OcclusionSettings, models: int = 5, channels: int = 3) -> int:
    """Occluded evaluations a whole run costs (all maps, all models), coarse-to-fine excluded."""
    maps = 1 + (channels if settings.per_modality else 0)
    return count_boxes(shape, settings) * maps * models


# --------------------------------------------------------------------------- fills and weights


def gaussian_multiplier(mask: Triple, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``1 - G`` with G MONAI's smoothed delta (sigma = mask/4) rescaled to [0, 1]; shape ``mask``.

    MONAI's own :class:`~monai.transforms.GaussianSmooth` makes G, so the fill
    stays MONAI's if its kernel sampling ever changes.
    """
    from monai.transforms import GaussianSmooth

    delta = torch.zeros((1, *mask), dtype=dtype, device=device)
    delta[(0, *[m // 2 for m in mask])] = 1.0
    g = torch.as_tensor(GaussianSmooth(sigma=[0.25 * m for m in mask])(delta))[0]
    g = g.as_subclass(torch.Tensor) if hasattr(g, "as_tensor") else g
    low, high = g.min(), g.max()
    if float(high - low) == 0.0:
        return torch.zeros(mask, dtype=dtype, device=device)
    return ((high - g) / (high - low)).to(dtype)


def importance_weights(mask: Triple, gaussian: bool) -> np.ndarray:
    """Per-voxel weight of one box in the average (MONAI's sliding-window importance map)."""
    if not gaussian:
        return np.ones(mask, dtype=np.float64)
    weights = torch.ones((), dtype=torch.float32)
    for axis, m in enumerate(mask):
        x = torch.arange(-(m - 1) / 2.0, (m - 1) / 2.0 + 1, dtype=torch.float32)
        profile = torch.exp(x ** 2 / (-2 * (0.125 * m) ** 2))
        weights = weights[..., None] * profile.view(*([1] * axis), m)
    weights = weights.clamp(min=max(float(weights.min()), 1e-3))
    return weights.numpy().astype(np.float64)


@dataclass
class _Fill:
    """Makes the occluded content of boxes for one map (all channels, or one channel)."""

    image: torch.Tensor  # (C, D, H, W)
    mask: Triple
    mode: Union[str, float]
    channel: Optional[int]  # None: every channel
    multiplier: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.mode == "gaussian":
            self.multiplier = gaussian_multiplier(self.mask, self.image.dtype, self.image.device)
        selected = self.image if self.channel is None else self.image[self.channel]
        self._image_mean = selected.mean() if self.mode == "mean_img" else None

    def original(self, starts: np.ndarray) -> torch.Tensor:
        m = self.mask
        return torch.stack([self.image[:, z:z + m[0], y:y + m[1], x:x + m[2]] for z, y, x in starts.tolist()])

    def occlude(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(original, occluded) box contents, each (B, C, *mask)."""
        original = self.original(starts)
        patches = original.clone()
        chosen = slice(None) if self.channel is None else slice(self.channel, self.channel + 1)
        region = patches[:, chosen]
        if self.mode == "gaussian":
            region.mul_(self.multiplier)
        elif self.mode == "mean_patch":
            region.copy_(region.mean(dim=(1, 2, 3, 4), keepdim=True).expand_as(region))
        elif self.mode == "mean_img":
            region.fill_(float(self._image_mean))
        elif callable(self.mode):
            region.copy_(self.mode(region.clone()))
        else:
            region.fill_(float(self.mode))
        return original, patches


def _changed_box(original: torch.Tensor, patches: torch.Tensor, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute [lo, hi) of the voxels a box really changes; lo == hi where it changes nothing."""
    diff = (original != patches).any(dim=1)  # (B, *mask)
    lo = np.zeros((len(starts), 3), dtype=np.int64)
    hi = np.zeros((len(starts), 3), dtype=np.int64)
    for axis in range(3):
        others = tuple(d for d in (1, 2, 3) if d != axis + 1)
        hit = diff.any(dim=others).cpu().numpy()  # (B, m)
        length = hit.shape[1]
        lo[:, axis] = np.argmax(hit, axis=1)
        hi[:, axis] = length - np.argmax(hit[:, ::-1], axis=1)
    unchanged = ~diff.flatten(1).any(dim=1).cpu().numpy()
    lo += starts
    hi += starts
    lo[unchanged] = hi[unchanged] = 0
    return lo, hi


# --------------------------------------------------------------------------- evaluators


class _Brute:
    """Reference engine: the whole network on every occluded copy of the image."""

    engine = "brute"

    def __init__(self, model: torch.nn.Module, image: torch.Tensor, precision: str = "float32") -> None:
        self.model = model
        self.image = image
        self.autocast = functools.partial(brute_force_autocast, precision, image.device)
        with torch.inference_mode(), self.autocast():
            self.base_logits = model(image[None])[0]

    def order(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.arange(len(lo))

    def logits(self, starts: np.ndarray, patches: torch.Tensor, lo: np.ndarray, hi: np.ndarray) -> torch.Tensor:
        batch = self.image[None].repeat(len(starts), 1, 1, 1, 1)
        m = patches.shape[2:]
        for b, (z, y, x) in enumerate(starts.tolist()):
            batch[b, :, z:z + m[0], y:y + m[1], x:x + m[2]] = patches[b]
        with torch.inference_mode(), self.autocast():
            return self.model(batch)


class _Incremental:
    """Exact fast engine (issue 7); see :mod:`RICENetLib.incremental_occlusion`."""

    engine = "incremental"

    def __init__(self, network, image: torch.Tensor, channels_last: Optional[bool] = None,
                 winograd_channels: Optional[int] = None) -> None:
        from .incremental_occlusion import IncrementalRunner

        self.runner = IncrementalRunner(network, image, channels_last, winograd_channels)
        self.base_logits = self.runner.base_logits

    def order(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Boxes with equal window sizes next to each other, so that a batch (computed at its
        largest window per layer) wastes little; the deepest layers, whose windows are the
        largest and vary most near the borders, are the primary keys."""
        return np.lexsort(self.runner.signature(lo, hi).T)

    def logits(self, starts, patches, lo, hi) -> torch.Tensor:
        return self.runner.logits(starts, patches, lo, hi)


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes; a single output is a sigmoid for class 1 (class 0 = 1 - p)."""
    logits = logits.detach().cpu().to(torch.float64)  # on the CPU: MPS has no float64
    if logits.shape[-1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=-1)
    return torch.softmax(logits, dim=-1)


@dataclass
class _Prepared:
    """A model ready to run on the device: the module, and its compiled form if incremental."""

    model: torch.nn.Module
    network: Any = None  # IncrementalNetwork or None
    engine: str = "brute"


def _prepare(model: torch.nn.Module, engine: str, device: torch.device, dtype: torch.dtype, index: int) -> _Prepared:
    if engine in ("auto", "incremental"):
        from .incremental_occlusion import UnsupportedNetwork, compile_network

        try:
            return _Prepared(model, compile_network(model).to(device, dtype), "incremental")
        except UnsupportedNetwork as reason:
            if engine == "incremental":
                raise InputError(f"The incremental occlusion engine cannot run model {index}: {reason}. "
                                 "Use engine 'auto' or 'brute'.") from None
            warnings.warn(f"Occlusion falls back to brute force for model {index} ({reason}); "
                          "this is much slower.", RuntimeWarning, stacklevel=3)
    if _module_device(model) != device:
        model = copy.deepcopy(model).to(device)
    return _Prepared(model, None, "brute")


def _module_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _module_dtype(model: torch.nn.Module) -> torch.dtype:
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


# --------------------------------------------------------------------------- result


@dataclass
class OcclusionResult:
    """Maps in model space (D, H, W) and what they cost."""

    sensitivity: np.ndarray  # float32; drop of the target-class probability, mean over models
    per_modality: Optional[dict[str, np.ndarray]]
    target_class: int
    probabilities: np.ndarray  # unoccluded ensemble-mean class probabilities
    boxes: int  # boxes in one map (the final grid)
    forward_passes: int  # occluded evaluations run, all models and maps (skipped boxes excluded)
    skipped_boxes: int  # boxes that changed no voxel (exactly zero effect, not evaluated)
    engine: str  # "incremental", "brute" or "incremental+brute"
    seconds: float
    mask_size: Triple
    stride: Triple
    roi: tuple[tuple[int, int], ...]
    settings: OcclusionSettings = field(default_factory=OcclusionSettings)
    precision: str = "float32"  # what the map was computed in (settings.precision resolved for the device)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the maps, for reports and ``prediction.json``."""
        return {
            "target_class": self.target_class,
            "probabilities": [float(p) for p in self.probabilities],
            "boxes": self.boxes,
            "forward_passes": self.forward_passes,
            "skipped_boxes": self.skipped_boxes,
            "engine": self.engine,
            "seconds": round(self.seconds, 3),
            "mask_size": list(self.mask_size),
            "stride": list(self.stride),
            "roi": _listify(self.roi),
            "per_modality": sorted(self.per_modality) if self.per_modality else None,
            "settings": self.settings.to_dict(),
            "precision": self.precision,
        }


# --------------------------------------------------------------------------- main entry


def occlusion_sensitivity(
    models: Sequence[torch.nn.Module],
    image: torch.Tensor,
    settings: Optional[OcclusionSettings] = None,
    *,
    target_class: Optional[int] = None,
    device: Union[torch.device, str, None] = None,
    modality_names: Optional[Sequence[str]] = None,
    progress: Optional[Union[ProgressCallback, Progress]] = None,
    cancel: Optional[CancelCheck] = None,
) -> OcclusionResult:
    """Occlusion sensitivity of an ensemble on one preprocessed image (C, D, H, W).

    ``target_class`` None takes the class of the ensemble's mean probability.
    ``device`` None uses the first model's device. Models are run in eval mode
    and left as they were. ``modality_names`` name the per-modality maps
    (default :data:`RICENetLib.MODALITIES` for three channels).
    """
    began = time.perf_counter()
    settings = (settings or OcclusionSettings()).validate()
    report = as_progress(progress, cancel)
    models = list(models)
    if not models:
        raise InputError("Occlusion sensitivity needs at least one model.")
    image = torch.as_tensor(image)
    if image.dim() != 4 or min(image.shape) < 1:
        raise InputError(f"Occlusion sensitivity needs an image of shape (channels, D, H, W), got {tuple(image.shape)}.")
    if not bool(torch.isfinite(image).all()):
        raise InputError("The image for occlusion sensitivity contains NaN or infinite values.")
    channels = image.shape[0]
    names = list(modality_names) if modality_names is not None else (
        list(MODALITIES) if channels == len(MODALITIES) else [f"channel{c}" for c in range(channels)])
    if len(names) != channels:
        raise InputError(f"modality_names has {len(names)} names for an image with {channels} channels.")
    device = torch.device(device) if device is not None else _module_device(models[0])
    dtype = _module_dtype(models[0])
    precision = resolve_precision(settings.precision, device)
    x = image.to(device=device, dtype=dtype)
    grid = box_grid(x.shape[1:], settings)
    variants: list[Optional[int]] = [None] + (list(range(channels)) if settings.per_modality else [])

    training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        prepared = [_prepare(m, settings.engine, device, compute_dtype(precision, dtype), i)
                    for i, m in enumerate(models)]
        run = _Run(prepared, x, settings, variants, report, precision)
        with precision_context(precision, device):
            maps, base, target = _maps(run, grid, settings, variants, target_class, report)
    finally:
        for m, was_training in zip(models, training):
            m.train(was_training)
    report(1.0, "Occlusion sensitivity done")
    engines = sorted({p.engine for p in prepared}, key=lambda e: e != "incremental")
    return OcclusionResult(
        sensitivity=maps[0].astype(np.float32),
        per_modality={names[c]: maps[i + 1].astype(np.float32) for i, c in enumerate(variants[1:])} or None,
        target_class=target,
        probabilities=base.mean(axis=0).astype(np.float64),
        boxes=grid.count,
        forward_passes=run.passes,
        skipped_boxes=run.skipped,
        engine="+".join(engines),
        seconds=time.perf_counter() - began,
        mask_size=grid.mask,
        stride=grid.stride,
        roi=grid.roi,
        settings=settings,
        precision=precision,
    )


def _maps(run: "_Run", grid: BoxGrid, settings: OcclusionSettings, variants: list[Optional[int]],
          target_class: Optional[int], report: Progress) -> tuple[list[np.ndarray], np.ndarray, int]:
    """(maps, per-model unoccluded probabilities, target class): the plain grid, or coarse then fine."""
    shape = run.x.shape[1:]
    if settings.coarse_to_fine:
        coarse = box_grid(shape, settings, mask_size=tuple(2 * m for m in grid.mask),
                          stride=tuple(2 * s for s in grid.stride))
        first = run.evaluate(coarse, [np.arange(coarse.count)] * len(variants), report.sub(0.0, 0.3))
        target = _target(first.base, target_class)
        coarse_maps = [first.accumulate(coarse, v, target) for v in range(len(variants))]
        chosen = [_refine(grid, coarse_map, settings.coarse_keep, coarse.roi) for coarse_map in coarse_maps]
        second = run.evaluate(grid, chosen, report.sub(0.3, 1.0))
        maps = []
        for v, coarse_map in enumerate(coarse_maps):
            fine, weight = second.accumulate(grid, v, target, keep_weight=True)
            maps.append(np.where(weight > 0, fine, coarse_map))
    else:
        second = run.evaluate(grid, [np.arange(grid.count)] * len(variants), report)
        target = _target(second.base, target_class)
        maps = [second.accumulate(grid, v, target) for v in range(len(variants))]
    return maps, second.base, target


def _target(base: np.ndarray, target_class: Optional[int]) -> int:
    classes = base.shape[1]
    if target_class is None:
        return int(np.argmax(base.mean(axis=0)))
    if not 0 <= int(target_class) < classes:
        raise InputError(f"target_class {target_class} is not a class of this network (0..{classes - 1}).")
    return int(target_class)


def _refine(grid: BoxGrid, coarse_map: np.ndarray, keep: float, roi) -> np.ndarray:
    """Indices of fine boxes that overlap voxels where |coarse| >= keep * max |coarse| (inside the ROI)."""
    magnitude = np.zeros_like(coarse_map)
    inside = tuple(slice(a, b) for a, b in roi)
    magnitude[inside] = np.abs(coarse_map[inside])
    if keep <= 0.0:
        return np.arange(grid.count)
    threshold = keep * float(magnitude.max())
    if threshold <= 0.0:
        return np.arange(0)  # the coarse map is flat zero: nothing to refine
    hot = magnitude >= threshold
    m = grid.mask
    return np.asarray([i for i, (z, y, x) in enumerate(grid.starts.tolist())
                       if hot[z:z + m[0], y:y + m[1], x:x + m[2]].any()], dtype=np.int64)


@dataclass
class _Outcome:
    """Per-model probabilities: ``base`` (M, K) unoccluded; ``boxes[v]`` (M, N, K) per map."""

    base: np.ndarray
    boxes: list[np.ndarray]
    evaluated: list[np.ndarray]  # per map, the box indices that were run (others: not part of it)
    gaussian: bool

    def accumulate(self, grid: BoxGrid, variant: int, target: int, keep_weight: bool = False):
        """Weighted mean of the per-box drops (model mean) over the boxes covering each voxel."""
        shape = grid.shape
        total = np.zeros(shape, dtype=np.float64)
        weight = np.zeros(shape, dtype=np.float64)
        w = importance_weights(grid.mask, self.gaussian)
        drops = (self.base[:, None, target] - self.boxes[variant][:, :, target]).mean(axis=0)
        m = grid.mask
        for i in self.evaluated[variant].tolist():
            z, y, x = grid.starts[i].tolist()
            where = (slice(z, z + m[0]), slice(y, y + m[1]), slice(x, x + m[2]))
            total[where] += w * drops[i]
            weight[where] += w
        result = np.zeros(shape, dtype=np.float64)
        np.divide(total, weight, out=result, where=weight > 0)
        kept = np.zeros(shape, dtype=np.float64)
        inside = tuple(slice(a, b) for a, b in grid.roi)
        kept[inside] = result[inside]
        return (kept, weight) if keep_weight else kept


class _Run:
    """Evaluates box sets for every model, one model's cache in memory at a time."""

    def __init__(self, prepared: list[_Prepared], x: torch.Tensor, settings: OcclusionSettings,
                 variants: list[Optional[int]], report: Progress, precision: str) -> None:
        self.prepared, self.x, self.settings, self.variants = prepared, x, settings, variants
        self.precision = precision
        self.engine_x = x.to(compute_dtype(precision, x.dtype))  # what the incremental engine computes on
        self.passes = 0
        self.skipped = 0

    def evaluate(self, grid: BoxGrid, chosen: list[np.ndarray], report: Progress) -> _Outcome:
        fills = [_Fill(self.x, grid.mask, self.settings.mode, v) for v in self.variants]
        changed = [self._changed(fill, grid.starts[idx]) for fill, idx in zip(fills, chosen)]
        models = len(self.prepared)
        base = np.zeros((models, 0))
        boxes: list[np.ndarray] = []
        todo = sum(int((lo < hi).all(axis=1).sum()) for lo, hi in changed) * models
        done = 0
        batch = int(self.settings.batch_size or default_batch_size(self.x.device))
        for m, item in enumerate(self.prepared):
            report(done / max(todo, 1), f"Occlusion: preparing model {m + 1}/{models}")
            evaluator = (_Incremental(item.network, self.engine_x, winograd_channels=self.settings.winograd_channels)
                         if item.network is not None else _Brute(item.model, self.x, self.precision))
            self._check_finite(evaluator.base_logits, m)
            base_p = _probabilities(evaluator.base_logits[None])[0].cpu().numpy()
            if m == 0:
                base = np.zeros((models, base_p.shape[0]))
                boxes = [np.zeros((models, grid.count, base_p.shape[0])) for _ in self.variants]
            base[m] = base_p
            for v, (fill, idx, (lo, hi)) in enumerate(zip(fills, chosen, changed)):
                boxes[v][m] = base_p  # unchanged boxes: exactly the unoccluded probabilities
                live = np.flatnonzero((lo < hi).all(axis=1))
                if m == 0:
                    self.skipped += len(idx) - len(live)
                live = live[evaluator.order(lo[live], hi[live])]
                for first in range(0, len(live), batch):
                    part = live[first:first + batch]
                    starts = grid.starts[idx[part]]
                    _, patches = fill.occlude(starts)
                    logits = evaluator.logits(starts, patches, lo[part], hi[part])
                    self._check_finite(logits, m)
                    boxes[v][m, idx[part]] = _probabilities(logits).cpu().numpy()
                    self.passes += len(part)
                    done += len(part)
                    report(done / max(todo, 1),
                           f"Occlusion: model {m + 1}/{models}, {done}/{todo} boxes ({evaluator.engine})")
            del evaluator
        return _Outcome(base, boxes, chosen, self.settings.mode == "gaussian")

    def _check_finite(self, logits: torch.Tensor, model: int) -> None:
        if not bool(torch.isfinite(logits).all()):
            hint = (" float16 ends at ±65,504: use precision 'tf32' or 'float32'." if self.precision == "float16"
                    else " Check the model's weights and the image's intensities.")
            raise InputError(f"Occlusion: model {model} gave non-finite outputs in {self.precision} precision.{hint}")

    def _changed(self, fill: _Fill, starts: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        los, his = [], []
        for first in range(0, len(starts), chunk):
            part = starts[first:first + chunk]
            original, patches = fill.occlude(part)
            lo, hi = _changed_box(original, patches, part)
            los.append(lo)
            his.append(hi)
        if not los:
            return np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
        return np.concatenate(los), np.concatenate(his)
