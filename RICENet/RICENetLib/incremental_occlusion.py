"""Exact occlusion sensitivity by incremental inference (issue 7).

Why: occluding one box of a 224³ input changes only a small block of each
layer's activations; the stem and ``layer1``, where most of a 3D ResNet's FLOPs
are, change in well under 1 % of their volume. Running the whole network once
per box (brute force) recomputes everything else for nothing. This engine runs
the unoccluded image once, keeps every activation map a later layer reads, and
for each occluded box recomputes only each layer's *window*: the block of
outputs whose receptive field touches the changed region of its input (the
box's projective field, grown layer by layer by kernel, stride and padding).
Everything outside a window is read from the cache; the global average pool is
updated by the window's difference. The result equals brute force up to
floating-point rounding (tested to 1e-4 in probability, usually ~1e-7).

Supported: MONAI :class:`~monai.networks.nets.ResNet` (``resnet10`` ... ``resnet200``)
in eval mode -- convolutions (any kernel/stride/padding, no dilation or groups),
BatchNorm3d with running statistics (folded into the convolution as a
per-channel affine), ReLU, the stem max-pool, basic and bottleneck blocks with
identity, strided 1×1 (shortcut 'B') or subsample-and-zero-pad (shortcut 'A')
shortcuts, global average pool, linear head. :func:`compile_network` raises
:class:`UnsupportedNetwork` for anything else; the caller falls back to brute
force.

Memory: the stem convolution's output (64×224³ floats, 2.9 GB) is not kept: the
stem is recomputed on the small input tile each max-pool window needs. The other
cached maps of a 3-channel resnet18 at 224³ take about 2.4 GB (float32).

>>> net = compile_network(model)                                # doctest: +SKIP
>>> runner = IncrementalRunner(net, image)                      # image: (C, D, H, W)
>>> logits = runner.logits(box_starts, patches, changed_lo, changed_hi)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import record_function

from .winograd import tile_counts, transformed_tile, winograd_conv3d, winograd_tile, winograd_weights

Triple = tuple[int, int, int]


class UnsupportedNetwork(Exception):
    """The network contains something the incremental engine cannot reproduce exactly."""


# --------------------------------------------------------------------------- network description


@dataclass(frozen=True)
class _Conv:
    """A convolution with its BatchNorm folded in (eval mode), optionally followed by ReLU."""

    weight: torch.Tensor
    bias: torch.Tensor
    kernel: Triple
    stride: Triple
    padding: Triple
    relu: bool
    # Winograd-transformed weights by tile size, made on first use (None: always convolve directly)
    winograd: Optional[dict[int, torch.Tensor]] = field(default=None, compare=False)

    def full(self, x: torch.Tensor, tally: "_Tally") -> torch.Tensor:
        y = F.conv3d(x, self.weight, self.bias, self.stride, self.padding)
        tally.conv(self.weight, y)
        return y.relu_() if self.relu else y

    def tile(self, x: torch.Tensor, tally: "_Tally") -> torch.Tensor:
        """Apply to a tile that already carries its padding (no implicit zero padding)."""
        size = 0 if self.winograd is None else winograd_tile([s - 2 for s in x.shape[2:]], min(self.weight.shape[:2]))
        if not size:
            y = F.conv3d(x, self.weight, self.bias, self.stride, 0)
            tally.conv(self.weight, y)
        else:
            transformed = self.winograd.get(size)
            if transformed is None:
                transformed = winograd_weights(self.weight.to(torch.float64), size).to(self.weight.dtype)
                self.winograd[size] = transformed
            y = winograd_conv3d(x, transformed, self.bias)
            tally.winograd(transformed, y)
            y = y.contiguous(memory_format=torch.channels_last_3d if _channels_last(x) else torch.contiguous_format)
        return y.relu_() if self.relu else y

    def to(self, device: torch.device, dtype: torch.dtype, channels_last: bool = False,
           winograd_channels: int = 0) -> "_Conv":
        """On ``device`` in ``dtype``; a stride-1 3×3×3 convolution with at least ``winograd_channels``
        (> 0) input and output channels may compute its tiles by Winograd's algorithm
        (:func:`~RICENetLib.winograd.winograd_tile` decides per tile shape)."""
        layout = torch.channels_last_3d if channels_last else torch.contiguous_format
        weight = self.weight.to(device, dtype, memory_format=layout)
        fits = (winograd_channels > 0 and self.kernel == (3, 3, 3) and self.stride == (1, 1, 1)
                and min(weight.shape[:2]) >= winograd_channels and weight.device.type != "meta"
                and dtype in (torch.float32, torch.float64))  # half precision: transforms lose too much
        return _Conv(weight, self.bias.to(device, dtype), self.kernel, self.stride, self.padding, self.relu,
                     {} if fits else None)


class _Tally:
    """FLOPs of the convolutions and the linear head as they run, counted like
    :class:`torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add, no bias),
    cheap enough to keep on; the benchmark reads it on the meta device."""

    def __init__(self) -> None:
        self.flops = 0

    def conv(self, weight: torch.Tensor, out: torch.Tensor) -> None:
        self.flops += 2 * out.numel() * int(np.prod(weight.shape[1:]))

    def winograd(self, transformed: torch.Tensor, out: torch.Tensor) -> None:
        """The matrix products of :func:`winograd_conv3d` (as FlopCounterMode counts its ``bmm``;
        the transforms, like BatchNorm and ReLU elsewhere, are not counted)."""
        positions, c_in, c_out = transformed.shape
        tiles = out.shape[0] * int(np.prod(tile_counts(out.shape[2:], transformed_tile(transformed))))
        self.flops += 2 * positions * tiles * c_in * c_out

    def linear(self, weight: torch.Tensor, rows: int) -> None:
        self.flops += 2 * rows * weight.numel()


@dataclass(frozen=True)
class _MaxPool:
    kernel: Triple
    stride: Triple
    padding: Triple


@dataclass(frozen=True)
class _Subsample:
    """Shortcut 'A': keep every ``stride``-th voxel, pad the channels with zeros."""

    stride: Triple
    out_channels: int


@dataclass(frozen=True)
class _Block:
    """A residual block: ``relu(main(x) + shortcut(x))``; the last main conv has no ReLU."""

    main: tuple[_Conv, ...]
    shortcut: Optional[Union[_Conv, _Subsample]]  # None: identity


@dataclass(frozen=True)
class IncrementalNetwork:
    """A MONAI ResNet read into plain steps (BN folded) that the incremental engine can replay."""

    in_channels: int
    stem: _Conv
    pool: Optional[_MaxPool]
    blocks: tuple[_Block, ...]
    fc_weight: Optional[torch.Tensor]
    fc_bias: Optional[torch.Tensor]

    def to(self, device: torch.device | str, dtype: torch.dtype, channels_last: bool = False,
           winograd_channels: int = 0) -> "IncrementalNetwork":
        """On ``device`` in ``dtype``; ``channels_last``: convolution weights in channels-last-3d layout;
        ``winograd_channels``: see :meth:`_Conv.to` (the unoccluded pass never uses it). In half
        precision the linear head stays float32 (it reads float64 pool sums)."""
        device = torch.device(device)
        head_dtype = _head_dtype(dtype)

        def move(step):
            return step.to(device, dtype, channels_last, winograd_channels) if isinstance(step, _Conv) else step

        blocks = tuple(_Block(tuple(move(c) for c in b.main), move(b.shortcut)) for b in self.blocks)
        fc_w = None if self.fc_weight is None else self.fc_weight.to(device, head_dtype)
        fc_b = None if self.fc_bias is None else self.fc_bias.to(device, head_dtype)
        return IncrementalNetwork(self.in_channels, move(self.stem), self.pool, blocks, fc_w, fc_b)


def _head_dtype(dtype: torch.dtype) -> torch.dtype:
    """The linear head's dtype for maps held in ``dtype``: float32 in half precision."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _triple(value, what: str) -> Triple:
    if isinstance(value, str):
        raise UnsupportedNetwork(f"{what}: string padding '{value}'")
    values = tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value,) * 3))
    if len(values) != 3:
        raise UnsupportedNetwork(f"{what}: expected 3 spatial dimensions, got {values}")
    return values  # type: ignore[return-value]


def _no_hooks(module: nn.Module, what: str) -> None:
    if module._forward_hooks or module._forward_pre_hooks:  # noqa: SLF001 - a hook could change the output
        raise UnsupportedNetwork(f"{what} has forward hooks")


def _fold(conv: nn.Module, bn: Optional[nn.Module], relu: bool, what: str) -> _Conv:
    """Fold eval-mode BatchNorm into the convolution (computed in float64, cast back)."""
    if type(conv) is not nn.Conv3d:
        raise UnsupportedNetwork(f"{what}: {type(conv).__name__} is not a Conv3d")
    _no_hooks(conv, what)
    if conv.groups != 1 or _triple(conv.dilation, what) != (1, 1, 1) or conv.padding_mode != "zeros":
        raise UnsupportedNetwork(f"{what}: grouped, dilated or non-zero-padded convolution")
    # folded in float64 on the CPU (MPS has no float64), cast back to the model's dtype
    weight = conv.weight.detach().cpu().to(torch.float64)
    bias = (conv.bias.detach().cpu().to(torch.float64) if conv.bias is not None
            else torch.zeros(weight.shape[0], dtype=torch.float64))
    if bn is not None:
        if type(bn) is not nn.BatchNorm3d:
            raise UnsupportedNetwork(f"{what}: normalisation {type(bn).__name__} is not BatchNorm3d")
        _no_hooks(bn, what)
        if bn.running_mean is None or bn.running_var is None:
            raise UnsupportedNetwork(f"{what}: BatchNorm without running statistics uses batch statistics")
        scale = torch.rsqrt(bn.running_var.detach().cpu().to(torch.float64) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach().cpu().to(torch.float64)
        shift = -bn.running_mean.detach().cpu().to(torch.float64) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.detach().cpu().to(torch.float64)
        weight = weight * scale.view(-1, 1, 1, 1, 1)
        bias = bias * scale + shift
    dtype = conv.weight.dtype
    return _Conv(weight.to(dtype), bias.to(dtype), _triple(conv.kernel_size, what), _triple(conv.stride, what),
                 _triple(conv.padding, what), relu)


def _check_relu(act: nn.Module, what: str) -> None:
    if type(act) is not nn.ReLU:
        raise UnsupportedNetwork(f"{what}: activation {type(act).__name__} is not ReLU")
    _no_hooks(act, what)


def compile_network(model: nn.Module) -> IncrementalNetwork:
    """Read a MONAI 3D ResNet into an :class:`IncrementalNetwork`, or raise :class:`UnsupportedNetwork`.

    The result holds copies of the weights (BN folded); ``model`` is not changed.
    """
    from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck

    if not isinstance(model, ResNet) or type(model).forward is not ResNet.forward:
        raise UnsupportedNetwork(f"{type(model).__name__} is not a MONAI ResNet classifier")
    _no_hooks(model, "the network")
    if model.conv1.weight.dim() != 5:
        raise UnsupportedNetwork("only 3D networks are supported")
    _check_relu(model.act, "stem")
    stem = _fold(model.conv1, model.bn1, True, "stem")
    pool = None
    if not model.no_max_pool:
        mp = model.maxpool
        if type(mp) is not nn.MaxPool3d or mp.ceil_mode or mp.return_indices or _triple(mp.dilation, "max-pool") != (1, 1, 1):
            raise UnsupportedNetwork("stem max-pool is not a plain MaxPool3d")
        _no_hooks(mp, "stem max-pool")
        pool = _MaxPool(_triple(mp.kernel_size, "max-pool"), _triple(mp.stride or mp.kernel_size, "max-pool"),
                        _triple(mp.padding, "max-pool"))
    blocks: list[_Block] = []
    for layer_name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(model, layer_name)
        if type(layer) is not nn.Sequential:
            raise UnsupportedNetwork(f"{layer_name} is not a Sequential")
        _no_hooks(layer, layer_name)
        for index, block in enumerate(layer):
            what = f"{layer_name}[{index}]"
            _no_hooks(block, what)
            _check_relu(block.act, what)
            if type(block) is ResNetBlock:
                main = (_fold(block.conv1, block.bn1, True, what + ".conv1"),
                        _fold(block.conv2, block.bn2, False, what + ".conv2"))
            elif type(block) is ResNetBottleneck:
                main = (_fold(block.conv1, block.bn1, True, what + ".conv1"),
                        _fold(block.conv2, block.bn2, True, what + ".conv2"),
                        _fold(block.conv3, block.bn3, False, what + ".conv3"))
            else:
                raise UnsupportedNetwork(f"{what}: block type {type(block).__name__}")
            blocks.append(_Block(main, _shortcut(block.downsample, what)))
    if type(model.avgpool) is not nn.AdaptiveAvgPool3d or _triple(model.avgpool.output_size, "avgpool") != (1, 1, 1):
        raise UnsupportedNetwork("the head is not a global average pool")
    _no_hooks(model.avgpool, "avgpool")
    fc_w = fc_b = None
    if model.fc is not None:
        if type(model.fc) is not nn.Linear:
            raise UnsupportedNetwork("the classifier is not a Linear layer")
        _no_hooks(model.fc, "fc")
        fc_w = model.fc.weight.detach().cpu().clone()
        fc_b = model.fc.bias.detach().cpu().clone() if model.fc.bias is not None else torch.zeros_like(fc_w[:, 0])
    return IncrementalNetwork(int(model.conv1.in_channels), stem, pool, tuple(blocks), fc_w, fc_b)


def _shortcut(downsample, what: str) -> Optional[Union[_Conv, _Subsample]]:
    if downsample is None:
        return None
    if type(downsample) is nn.Sequential and len(downsample) == 2:
        _no_hooks(downsample, what + ".downsample")
        return _fold(downsample[0], downsample[1], False, what + ".downsample")
    if isinstance(downsample, functools.partial):
        from monai.networks.nets.resnet import ResNet

        func = getattr(downsample.func, "__func__", None)
        if func is ResNet._downsample_basic_block and downsample.keywords.get("spatial_dims", 3) == 3:  # noqa: SLF001
            return _Subsample(_triple(downsample.keywords["stride"], what), int(downsample.keywords["planes"]))
    raise UnsupportedNetwork(f"{what}: unknown shortcut {downsample!r}")


# --------------------------------------------------------------------------- geometry (integer, numpy)


def _out_size(size: np.ndarray, kernel: Triple, stride: Triple, padding: Triple) -> np.ndarray:
    k, s, p = (np.asarray(v) for v in (kernel, stride, padding))
    return (size + 2 * p - k) // s + 1


def _reach(lo: np.ndarray, hi: np.ndarray, kernel: Triple, stride: Triple, padding: Triple,
           size_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outputs whose receptive field touches the input interval [lo, hi) per dimension.

    Output ``o`` reads inputs ``o*s - p .. o*s - p + k - 1``. An empty input
    (``hi <= lo`` in any dimension) stays empty (returned as lo == hi == 0).
    """
    k, s, p = (np.asarray(v) for v in (kernel, stride, padding))
    new_lo = np.maximum(-((-(lo + p - k + 1)) // s), 0)
    new_hi = np.minimum((hi - 1 + p) // s + 1, size_out)
    empty = ((hi <= lo) | (new_hi <= new_lo)).any(axis=-1, keepdims=True)
    return np.where(empty, 0, new_lo), np.where(empty, 0, new_hi)


def _union(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    a_empty = (a[1] <= a[0]).any(axis=-1, keepdims=True)
    b_empty = (b[1] <= b[0]).any(axis=-1, keepdims=True)
    lo = np.where(a_empty, b[0], np.where(b_empty, a[0], np.minimum(a[0], b[0])))
    hi = np.where(a_empty, b[1], np.where(b_empty, a[1], np.maximum(a[1], b[1])))
    return lo, hi


class _Geometry:
    """Map sizes of every cached state, and per-box changed intervals through the network.

    States: 0 = input; 1 = stem (after max-pool); then for each block its main
    intermediates followed by the block output.
    """

    def __init__(self, net: IncrementalNetwork, spatial: Sequence[int]) -> None:
        self.net = net
        size = np.asarray(spatial, dtype=np.int64)
        self.sizes: list[np.ndarray] = [size]
        size = _out_size(size, net.stem.kernel, net.stem.stride, net.stem.padding)
        self.stem_size = size
        if net.pool is not None:
            size = _out_size(size, net.pool.kernel, net.pool.stride, net.pool.padding)
        self.sizes.append(size)
        for block in net.blocks:
            for conv in block.main[:-1]:
                size = _out_size(size, conv.kernel, conv.stride, conv.padding)
                self.sizes.append(size)
            last = block.main[-1]
            size = _out_size(size, last.kernel, last.stride, last.padding)
            self.sizes.append(size)
        if (np.asarray(self.sizes) < 1).any():
            raise UnsupportedNetwork(f"input {tuple(spatial)} is too small for this network")

    def intervals(self, lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Changed interval [lo, hi) of every state for boxes whose input changed in [lo, hi)."""
        net = self.net
        out = [(lo, hi)]
        cur = _reach(lo, hi, net.stem.kernel, net.stem.stride, net.stem.padding, self.stem_size)
        if net.pool is not None:
            cur = _reach(*cur, net.pool.kernel, net.pool.stride, net.pool.padding, self.sizes[1])
        out.append(cur)
        state = 1
        for block in net.blocks:
            block_in = cur
            for conv in block.main[:-1]:
                state += 1
                cur = _reach(*cur, conv.kernel, conv.stride, conv.padding, self.sizes[state])
                out.append(cur)
            state += 1
            last = block.main[-1]
            main = _reach(*cur, last.kernel, last.stride, last.padding, self.sizes[state])
            short = block.shortcut
            if short is None:
                skip = block_in
            elif isinstance(short, _Conv):
                skip = _reach(*block_in, short.kernel, short.stride, short.padding, self.sizes[state])
            else:
                skip = _reach(*block_in, (1, 1, 1), short.stride, (0, 0, 0), self.sizes[state])
            cur = _union(main, skip)
            out.append(cur)
        return out


# --------------------------------------------------------------------------- execution


@dataclass
class _State:
    """One activation map: the cached unoccluded map plus, per box, a recomputed window."""

    cache: torch.Tensor  # (1, C, *S)
    window: Optional[torch.Tensor] = None  # (B, C, *W)
    start: Optional[np.ndarray] = None  # (B, 3) int64, window origin in map coordinates


def _gather(state: _State, origin: np.ndarray, size: Sequence[int], pad: float) -> torch.Tensor:
    """Tiles ``origin + [0, size)`` of the map as occluded for each box, ``pad`` outside the map.

    Values come from the box's recomputed window where the tile overlaps it and
    from the cache elsewhere (the window covers everything the box changed).
    """
    cache = state.cache
    if cache.device.type == "cpu" and cache.dtype in (torch.float32, torch.float64) and not _channels_last(cache):
        return _gather_slices(state, origin, size, pad)
    return _gather_indexed(state, origin, size, pad)


def _gather_slices(state: _State, origin: np.ndarray, size: Sequence[int], pad: float) -> torch.Tensor:
    """CPU: per-box slice copies through numpy views -- single-threaded memcpy, where torch's
    OpenMP copies of many small slices crawl when the cores are shared."""
    cache = state.cache[0]
    spatial = cache.shape[1:]
    size = [int(n) for n in size]
    origin = np.asarray(origin, dtype=np.int64)
    tiles = cache.new_empty((len(origin), cache.shape[0], *size))
    src_map, dst = cache.numpy(), tiles.numpy()
    if not ((origin >= 0).all() and (origin + size <= np.asarray(spatial)).all()):
        dst.fill(pad)
    window = None if state.window is None else state.window.numpy()
    for b, o in enumerate(origin.tolist()):
        src = tuple(slice(max(o[d], 0), min(o[d] + size[d], spatial[d])) for d in range(3))
        if all(s.start < s.stop for s in src):
            to = tuple(slice(s.start - o[d], s.stop - o[d]) for d, s in enumerate(src))
            dst[(b, slice(None)) + to] = src_map[(slice(None),) + src]
        if window is not None:
            w = state.start[b].tolist()
            lo = [max(o[d], w[d]) for d in range(3)]
            hi = [min(o[d] + size[d], w[d] + window.shape[2 + d]) for d in range(3)]
            if all(a < c for a, c in zip(lo, hi)):
                to = tuple(slice(lo[d] - o[d], hi[d] - o[d]) for d in range(3))
                src_w = tuple(slice(lo[d] - w[d], hi[d] - w[d]) for d in range(3))
                dst[(b, slice(None)) + to] = window[(b, slice(None)) + src_w]
    return tiles


def _gather_indexed(state: _State, origin: np.ndarray, size: Sequence[int], pad: float) -> torch.Tensor:
    """GPU (and meta): one batched advanced-index gather -- a handful of kernels per call
    instead of two small copies per box.

    The gather runs over channels-last views (D, H, W, C), so that each gathered
    voxel is one contiguous run of channels when the maps are channels-last (the
    GPU layout); the tiles come back in the cache's layout.
    """
    cache = state.cache[0].permute(1, 2, 3, 0)  # (D, H, W, C)
    device = cache.device
    spatial = cache.shape[:3]
    size = [int(n) for n in size]
    index_device = device if device.type != "meta" else torch.device("cpu")
    origin_t = torch.as_tensor(np.asarray(origin, dtype=np.int64), device=index_device)
    index = [origin_t[:, d, None] + torch.arange(size[d], device=index_device) for d in range(3)]  # (B, n_d)

    def grid(parts):
        return parts[0][:, :, None, None], parts[1][:, None, :, None], parts[2][:, None, None, :]

    def on_device(parts):
        return [p.to(device) for p in parts] if index_device != device else parts

    def outer(parts):  # (B, *size, 1): True where every axis' condition holds
        return (parts[0][:, :, None, None] & parts[1][:, None, :, None] & parts[2][:, None, None, :])[..., None]

    clamped = on_device([index[d].clamp(0, spatial[d] - 1) for d in range(3)])
    tiles = cache[grid(clamped)]  # (B, *size, C)
    if state.window is not None:
        window = state.window.permute(0, 2, 3, 4, 1)  # (B, *W, C)
        wsize = window.shape[1:4]
        start = torch.as_tensor(state.start, device=index_device)
        rel = [index[d] - start[:, d, None] for d in range(3)]
        inside = on_device([(rel[d] >= 0) & (rel[d] < wsize[d]) for d in range(3)])
        relc = on_device([rel[d].clamp(0, wsize[d] - 1) for d in range(3)])
        batch = torch.arange(len(origin_t), device=device)[:, None, None, None]
        tiles = torch.where(outer(inside), window[(batch,) + grid(relc)], tiles)
    valid = on_device([(index[d] >= 0) & (index[d] < spatial[d]) for d in range(3)])
    tiles = torch.where(outer(valid), tiles, torch.full((), pad, dtype=tiles.dtype, device=device))
    layout = torch.channels_last_3d if _channels_last(state.cache) else torch.contiguous_format
    return tiles.permute(0, 4, 1, 2, 3).contiguous(memory_format=layout)


def default_winograd_channels(device: torch.device) -> int:
    """From how many channels a stride-1 3×3×3 tile convolution may run by Winograd's algorithm
    (:mod:`RICENetLib.winograd`, which picks the tile or declines per tile shape) on ``device``;
    0: never. CPU: from 256 (layer3 and layer4 of a ResNet-18; 1.3× faster maps at 96³, see the
    README). GPU: off until measured on one (``benchmarks/gpu.sh`` prints both)."""
    return 256 if device.type == "cpu" else 0


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


class IncrementalRunner:
    """The unoccluded pass of one network on one image, ready to evaluate occluded boxes.

    ``image`` is (C, D, H, W) on the device and in the dtype to compute in
    (float16: weights, cached maps and tiles in half precision; the pool sums
    stay float64 and the head float32).
    ``channels_last`` (default: on CUDA) keeps weights, cached maps and tiles in
    the channels-last-3d layout, which cuDNN's fastest 3D convolutions want: on
    an H200 a 224³ 'standard' map took 1.30 ms per box against 1.57 in the
    default layout (benchmarks/occlusion.py). It changes speed only. (cuDNN's
    autotuner, ``torch.backends.cudnn.benchmark``, was slower: a map has dozens
    of tile shapes and each is timed anew.)
    """

    def __init__(self, net: IncrementalNetwork, image: torch.Tensor, channels_last: Optional[bool] = None,
                 winograd_channels: Optional[int] = None) -> None:
        if image.dim() != 4 or image.shape[0] != net.in_channels:
            raise ValueError(f"image of shape {tuple(image.shape)} does not fit a {net.in_channels}-channel network")
        self.channels_last = image.device.type == "cuda" if channels_last is None else bool(channels_last)
        if winograd_channels is None:
            winograd_channels = default_winograd_channels(image.device)
        self.net = net.to(image.device, image.dtype, self.channels_last, int(winograd_channels))
        self.geometry = _Geometry(self.net, image.shape[1:])
        self.tally = _Tally()  # FLOPs run so far: the unoccluded pass, then every box
        with torch.inference_mode():
            self._caches, self.base_logits = self._full(image[None])

    # -- unoccluded pass -------------------------------------------------------------------------
    def _full(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        net = self.net
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        caches = [x]
        y = net.stem.full(x, self.tally)
        if net.pool is not None:
            y = F.max_pool3d(y, net.pool.kernel, net.pool.stride, net.pool.padding)
        caches.append(y)
        for block in net.blocks:
            block_in = y
            for conv in block.main[:-1]:
                y = conv.full(y, self.tally)
                caches.append(y)
            y = block.main[-1].full(y, self.tally)
            y = (y + self._shortcut_full(block.shortcut, block_in)).relu_()
            caches.append(y)
        for cache, size in zip(caches, self.geometry.sizes):
            assert tuple(cache.shape[2:]) == tuple(int(s) for s in size), "geometry out of step with the network"
        self._sum_dtype = torch.float32 if y.device.type == "mps" else torch.float64  # MPS has no float64
        self._pool_sum = y.to(self._sum_dtype).sum(dim=(2, 3, 4))[0]  # (C,)
        self._pool_count = float(np.prod(y.shape[2:]))
        return caches, self._head(self._pool_sum[None] / self._pool_count)[0]

    def _shortcut_full(self, short, x: torch.Tensor) -> torch.Tensor:
        if short is None:
            return x
        if isinstance(short, _Conv):
            return short.full(x, self.tally)
        return _zero_pad_channels(x[:, :, :: short.stride[0], :: short.stride[1], :: short.stride[2]], short.out_channels)

    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        pooled = pooled.to(_head_dtype(self.net.stem.weight.dtype))
        if self.net.fc_weight is None:
            return pooled
        self.tally.linear(self.net.fc_weight, pooled.shape[0])
        return F.linear(pooled, self.net.fc_weight, self.net.fc_bias)

    # -- occluded boxes --------------------------------------------------------------------------
    def signature(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Per-box window sizes of every state, shallow to deep, (N, 3 * states): the key to sort boxes into batches."""
        return np.concatenate([np.maximum(h - l, 0) for l, h in self.geometry.intervals(lo, hi)[1:]], axis=1)

    def logits(self, box_start: np.ndarray, patches: torch.Tensor, lo: np.ndarray, hi: np.ndarray) -> torch.Tensor:
        """Logits for a batch of occluded boxes.

        ``box_start`` (B, 3): box origins; ``patches`` (B, C, *mask): the occluded
        box contents; ``lo``/``hi`` (B, 3): the sub-box where the patch differs
        from the image (absolute coordinates, non-empty).
        """
        with torch.inference_mode():
            return self._logits(box_start, patches, lo, hi)

    @staticmethod
    def _window(interval: tuple[np.ndarray, np.ndarray], size: np.ndarray) -> tuple[list[int], np.ndarray]:
        """One window size for the batch (the largest changed extent), origins kept inside the map."""
        lo, hi = interval
        extent = np.maximum(np.maximum(hi - lo, 0).max(axis=0), 1)
        extent = np.minimum(extent, size)
        return [int(e) for e in extent], np.clip(lo, 0, size - extent)

    def _logits(self, box_start, patches, lo, hi) -> torch.Tensor:
        net, geo, caches = self.net, self.geometry, self._caches
        intervals = geo.intervals(np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64))
        state = _State(caches[0], patches.to(caches[0].device, caches[0].dtype), np.asarray(box_start, dtype=np.int64))

        # stem (+ max-pool), recomputed from an input tile so its 64×D×H×W output needs no cache
        # (the record_function labels name each stage in a torch.profiler trace: benchmarks/occlusion.py)
        with record_function("occlusion stage: stem"):
            extent, start = self._window(intervals[1], geo.sizes[1])
            stem = net.stem
            if net.pool is not None:
                pool = net.pool
                conv_origin = start * np.asarray(pool.stride) - np.asarray(pool.padding)
                conv_size = [(e - 1) * s + k for e, s, k in zip(extent, pool.stride, pool.kernel)]
            else:
                conv_origin, conv_size = start, extent
            origin = conv_origin * np.asarray(stem.stride) - np.asarray(stem.padding)
            size = [(e - 1) * s + k for e, s, k in zip(conv_size, stem.stride, stem.kernel)]
            y = stem.tile(_gather(state, origin, size, 0.0), self.tally)
            if net.pool is not None:
                y = _mask_outside(y, conv_origin, geo.stem_size, float("-inf"))
                y = F.max_pool3d(y, pool.kernel, pool.stride, 0)
            state = _State(caches[1], y, start)

        index = 1
        for number, block in enumerate(net.blocks):
            with record_function(f"occlusion stage: block {number} ({block.main[-1].weight.shape[0]} channels)"):
                block_in = state
                for conv in block.main[:-1]:
                    index += 1
                    state = self._conv_state(conv, state, intervals[index], geo.sizes[index], caches[index])
                index += 1
                extent, start = self._window(intervals[index], geo.sizes[index])
                y = self._conv_window(block.main[-1], state, start, extent)
                y += self._shortcut_window(block.shortcut, block_in, start, extent)
                state = _State(caches[index], y.relu_(), start)

        # global average pool, updated by the difference inside each box's window
        with record_function("occlusion stage: pool + head"):
            extent = list(state.window.shape[2:])
            before = _gather(_State(state.cache), state.start, extent, 0.0)
            delta = (state.window.to(self._sum_dtype) - before.to(self._sum_dtype)).sum(dim=(2, 3, 4))
            return self._head((self._pool_sum[None] + delta) / self._pool_count)

    def _conv_state(self, conv: _Conv, state: _State, interval, size, cache) -> _State:
        extent, start = self._window(interval, size)
        return _State(cache, self._conv_window(conv, state, start, extent), start)

    def _conv_window(self, conv: _Conv, state: _State, start: np.ndarray, extent: list[int]) -> torch.Tensor:
        origin = start * np.asarray(conv.stride) - np.asarray(conv.padding)
        size = [(e - 1) * s + k for e, s, k in zip(extent, conv.stride, conv.kernel)]
        return conv.tile(_gather(state, origin, size, 0.0), self.tally)

    def _shortcut_window(self, short, state: _State, start: np.ndarray, extent: list[int]) -> torch.Tensor:
        if short is None:
            return _gather(state, start, extent, 0.0)
        if isinstance(short, _Conv):
            return self._conv_window(short, state, start, extent)
        stride = short.stride
        origin = start * np.asarray(stride)
        size = [(e - 1) * s + 1 for e, s in zip(extent, stride)]
        tiles = _gather(state, origin, size, 0.0)[:, :, :: stride[0], :: stride[1], :: stride[2]]
        return _zero_pad_channels(tiles, short.out_channels)


def _zero_pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    extra = channels - x.shape[1]
    if extra <= 0:
        return x
    return torch.cat([x, x.new_zeros((x.shape[0], extra, *x.shape[2:]))], dim=1)


def _mask_outside(y: torch.Tensor, origin: np.ndarray, size: np.ndarray, value: float) -> torch.Tensor:
    """Set tile positions that fall outside the map (where the next layer pads) to ``value``."""
    extent = np.asarray(y.shape[2:])
    for b, o in enumerate(np.asarray(origin).tolist()):
        for d in range(3):
            before, after = max(-o[d], 0), max(o[d] + int(extent[d]) - int(size[d]), 0)
            if before:
                y[(b, slice(None)) + (slice(None),) * d + (slice(0, before),)] = value
            if after:
                y[(b, slice(None)) + (slice(None),) * d + (slice(int(extent[d]) - after, None),)] = value
    return y
