"""3×3×3 convolutions by Winograd's minimal filtering, F(2³, 3³) and F(4³, 3³) (issue 7).

Why: in an occlusion map most of an occluded box's arithmetic is in
``layer3`` and ``layer4``, whose windows cover most of their small maps, so the
incremental engine cannot skip it. Winograd's algorithm computes the same
stride-1 3³ convolution with far fewer multiplications: each input tile of
(m + 2)³ voxels is transformed, the channels are mixed by (m + 2)³ independent
matrix products, and each product is transformed back to m³ outputs.

* F(2, 3), m = 2: 64 products per 2³ outputs instead of 216 (3.4× fewer); its
  transforms use only 0, ±1 and ½, so float32 results match a direct
  convolution to float rounding. The transformed tiles are 8× the input.
* F(4, 3), m = 4: 216 products per 4³ outputs instead of 1,728 (8× fewer), and
  tiles only 3.4× the input; its coefficients reach 8 and 1/24, so float32
  errors are about ten times a direct convolution's (~1e-5 of the largest
  output; tested, and the engine's maps still match brute force).

Which one pays depends on the tile: outputs are padded up to whole tiles
(a 9³ output costs F(4, 3) as much as a 12³ one) and the transforms are memory
traffic, which matters more the fewer channels there are.
:func:`winograd_tile` picks per call from a cost model measured on this
project's 2-core CPU (``benchmarks/occlusion.py`` prints what it gives); the
engine uses it from :func:`~RICENetLib.incremental_occlusion.default_winograd_channels`
channels up.

The convolution here is *valid* (no padding): the engine's tiles already carry
their halo. Layout: inputs in NCDHW or channels-last-3d; the output is
channels-last-3d (the layout the matrix products leave), as a view.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

# y = A^T [(G g) * (B^T d)] in one dimension, for a 3-tap filter g and a tile d of m + 2 samples.
_G = {
    2: ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
    4: ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0)),
}
_BT4 = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
        (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_AT4 = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))
TILES = (2, 4)

# The cost model of winograd_tile: the time of a direct convolution over that of Winograd's is
# about (27 x outputs / products) / (MATMUL + TRAFFIC[m] / channels), fitted to layer3/layer4 tiles
# of a batch of 8 on the 2-core CPU (direct 3D convolution ~215 GFLOP/s, batched products ~140).
_MATMUL = 1.5
_TRAFFIC = {2: 250.0, 4: 500.0}
_WORTH = 1.3  # use Winograd's algorithm only if the model promises at least this speed-up


def winograd_weights(weight: torch.Tensor, tile: int = 2) -> torch.Tensor:
    """The transformed filters ``G g G^T`` per tile position: ((tile + 2)³, C_in, C_out), for :func:`winograd_conv3d`.

    Computed in float64 and cast to the weight's dtype. The positions are
    ordered (W, H, D), the order in which :func:`winograd_conv3d` stacks its
    transformed axes.
    """
    if weight.dim() != 5 or tuple(weight.shape[2:]) != (3, 3, 3):
        raise ValueError(f"a 3×3×3 convolution weight is needed, not one of shape {tuple(weight.shape)}")
    if tile not in _G:
        raise ValueError(f"Winograd tile {tile} is not implemented; use one of {TILES}")
    g = torch.tensor(_G[tile], dtype=torch.float64, device=weight.device)
    u = torch.einsum("ip,jq,kr,ocpqr->kjico", g, g, g, weight.to(torch.float64))
    return u.reshape((tile + 2) ** 3, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def transformed_tile(transformed: torch.Tensor) -> int:
    """The tile size ``m`` that :func:`winograd_weights` made ``transformed`` for (its first axis is (m + 2)³)."""
    tile = round(transformed.shape[0] ** (1 / 3)) - 2
    if tile not in _G or (tile + 2) ** 3 != transformed.shape[0]:
        raise ValueError(f"transformed weights of shape {tuple(transformed.shape)} come from no known tile")
    return tile


def tile_counts(out_size: Sequence[int], tile: int) -> list[int]:
    """Tiles per axis that cover ``out_size`` outputs (the last one padded)."""
    return [-(-s // tile) for s in out_size]


def winograd_tile(out_size: Sequence[int], channels: int) -> int:
    """The tile (2 or 4) that the cost model expects to beat a direct convolution of ``channels``
    (the smaller of in and out) onto ``out_size`` outputs by at least 1.3×; 0: neither, convolve directly."""
    direct = 27 * math.prod(out_size)
    best, best_gain = 0, _WORTH
    for m in TILES:
        products = (m + 2) ** 3 * math.prod(tile_counts(out_size, m))
        gain = direct / products / (_MATMUL + _TRAFFIC[m] / channels)
        if gain >= best_gain:  # ties go to the larger tile, which moves less data
            best, best_gain = m, gain
    return best


def winograd_conv3d(x: torch.Tensor, transformed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv3d(x, weight, bias)`` (stride 1, no padding) with ``transformed = winograd_weights(weight, tile)``;
    the tile is read from ``transformed``'s shape."""
    tile = transformed_tile(transformed)
    n, channels = x.shape[:2]
    out_size = [s - 2 for s in x.shape[2:]]
    if min(out_size) < 1:
        raise ValueError(f"input of spatial size {tuple(x.shape[2:])} is smaller than the 3×3×3 kernel")
    tiles = tile_counts(out_size, tile)
    z = x.permute(0, 2, 3, 4, 1)  # (N, D, H, W, C): a view, contiguous for channels-last input
    pad = [tile * t + 2 - s for t, s in zip(tiles, x.shape[2:])]  # outputs up to whole tiles: zeros
    if any(pad):
        z = F.pad(z, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
    z = z.contiguous()
    if tile == 2:
        for dim, count in ((1, tiles[0]), (3, tiles[1]), (5, tiles[2])):  # D, H, W; each stacks a new leading axis
            z = _input_transform_2(z, dim, count)
        v = z.view(64, -1, channels)
    else:
        v = _input_transform_matrix(z, tiles, _BT4)
    products = torch.bmm(v, transformed)  # ((tile + 2)³, N*tiles, C_out)
    out_channels = transformed.shape[2]
    alpha = tile + 2
    if tile == 2:
        m = products.view(4, 4, 4, n, *tiles, out_channels)
        for axis in range(3):  # back along W, H, D: 4 transformed values -> 2 outputs
            m = _output_transform_2(m, axis)
    else:
        at = torch.tensor(_AT4, dtype=products.dtype, device=products.device)
        m = torch.matmul(at, products.view(alpha, -1))  # along W
        m = torch.matmul(at, m.view(tile, alpha, -1))  # along H
        m = torch.matmul(at, m.view(tile * tile, alpha, -1))  # along D
        m = m.view(tile, tile, tile, n, *tiles, out_channels)
    y = m.new_empty((n, *(tile * t for t in tiles), out_channels))
    y.view(n, tiles[0], tile, tiles[1], tile, tiles[2], tile, out_channels).copy_(m.permute(3, 4, 2, 5, 1, 6, 0, 7))
    y = y[:, : out_size[0], : out_size[1], : out_size[2]]
    if bias is not None:
        y = y + bias
    return y.permute(0, 4, 1, 2, 3)


def _input_transform_2(z: torch.Tensor, dim: int, tiles: int) -> torch.Tensor:
    """F(2, 3)'s ``B^T d`` along ``dim`` for every tile (stride 2, width 4): a new leading axis of 4."""
    index = (slice(None),) * dim + (slice(None, None, 2),)
    d = [z.narrow(dim, p, 2 * tiles - 1)[index] for p in range(4)]
    out = z.new_empty((4, *d[0].shape))
    torch.sub(d[0], d[2], out=out[0])
    torch.add(d[1], d[2], out=out[1])
    torch.sub(d[2], d[1], out=out[2])
    torch.sub(d[1], d[3], out=out[3])
    return out


def _output_transform_2(m: torch.Tensor, axis: int) -> torch.Tensor:
    """F(2, 3)'s ``A^T m`` along ``axis`` (of length 4): two outputs, same axis."""
    m0, m1, m2, m3 = m.unbind(axis)
    out = m.new_empty(m.shape[:axis] + (2,) + m.shape[axis + 1:])
    first, second = out.unbind(axis)
    torch.add(m0, m1, out=first).add_(m2)
    torch.sub(m1, m2, out=second).sub_(m3)
    return out


def _input_transform_matrix(z: torch.Tensor, tiles: Sequence[int], bt: tuple) -> torch.Tensor:
    """``B^T d B`` along D, H and W by matrix products, one sample at a time so that each sample's
    intermediate tiles stay in the CPU's cache: (alpha³, N * tiles, C) with positions ordered (W, H, D)."""
    alpha = len(bt)
    step = alpha - 2
    n, channels = z.shape[0], z.shape[-1]
    matrix = torch.tensor(bt, dtype=z.dtype, device=z.device)
    out = z.new_empty((alpha ** 3, n, math.prod(tiles) * channels))
    for sample in range(n):
        s = z[sample:sample + 1]
        for axis in range(3):  # D, H, W; each stacks a new leading axis
            dim = 1 + 2 * axis  # past the leading axes stacked so far
            index = (slice(None),) * dim + (slice(None, None, step),)
            windows = torch.stack([s.narrow(dim, p, step * (tiles[axis] - 1) + 1)[index] for p in range(alpha)])
            s = torch.matmul(matrix, windows.view(alpha, -1)).view(windows.shape)
        out[:, sample] = s.view(alpha ** 3, -1)
    return out.view(alpha ** 3, n * math.prod(tiles), channels)
