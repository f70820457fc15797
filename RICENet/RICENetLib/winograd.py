"""3×3×3 convolutions by Winograd's minimal filtering, F(2×2×2, 3×3×3) (issue 7).

Why: in an occlusion map at 224³ most of an occluded box's arithmetic is in
``layer4`` (and ``layer3``), whose windows cover most of their small maps, so
the incremental engine cannot skip it. Winograd's algorithm computes the same
stride-1 3³ convolution with 64 multiplications per 2³ outputs and channel
pair instead of 216 (3.4× fewer): each 4³ input tile is transformed, the
channels are mixed by 64 independent matrix products, and each product is
transformed back to 2³ outputs. The transforms use only the coefficients
0, ±1 and ½, so in float32 the result agrees with a direct convolution to
float rounding (tested).

Whether it is faster depends on the machine: the transformed tiles are 8× the
output's size, so the transforms are memory traffic, and the matrix products
must run near the direct convolution's speed to keep the 3.4×. On this
project's 2-core AMD CPU they do not (MKL's batched products ran at 100–160
GFLOP/s where oneDNN's direct 3D convolution runs at ~215): in repeated runs
of 96³ and 224³ maps it was between 12 % slower and 12 % faster per box, the
machine's run-to-run noise, with no gain that repeated; so the engine leaves it
off (:func:`~RICENetLib.incremental_occlusion.default_winograd_channels`).
On a GPU it is untested; ``benchmarks/occlusion.py --device cuda`` (run by
``benchmarks/gpu.sh``) estimates the map with it from 256 and from 512
channels beside the default.

The convolution here is *valid* (no padding): the engine's tiles already carry
their halo. Layout: inputs in NCDHW or channels-last-3d; the output is
channels-last-3d (the layout the matrix products leave), as a view.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# F(2, 3) in one dimension: y = A^T [(G g) * (B^T d)] for a 4-sample tile d and a 3-tap filter g.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def winograd_weights(weight: torch.Tensor) -> torch.Tensor:
    """The transformed filters ``G g G^T`` per tile position: (64, C_in, C_out), for :func:`winograd_conv3d`.

    Computed in float64 and cast to the weight's dtype. The 64 positions are
    ordered (W, H, D), the order in which :func:`winograd_conv3d` stacks its
    transformed axes.
    """
    if weight.dim() != 5 or tuple(weight.shape[2:]) != (3, 3, 3):
        raise ValueError(f"a 3×3×3 convolution weight is needed, not one of shape {tuple(weight.shape)}")
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ip,jq,kr,ocpqr->kjico", g, g, g, weight.to(torch.float64))
    return u.reshape(64, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def winograd_conv3d(x: torch.Tensor, transformed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv3d(x, weight, bias)`` (stride 1, no padding) with ``transformed = winograd_weights(weight)``."""
    n, channels = x.shape[:2]
    out_size = [s - 2 for s in x.shape[2:]]
    if min(out_size) < 1:
        raise ValueError(f"input of spatial size {tuple(x.shape[2:])} is smaller than the 3×3×3 kernel")
    tiles = [(s + 1) // 2 for s in out_size]
    z = x.permute(0, 2, 3, 4, 1)  # (N, D, H, W, C): a view, contiguous for channels-last input
    pad = [2 * t + 2 - s for t, s in zip(tiles, x.shape[2:])]  # odd outputs: one more row of zeros
    if any(pad):
        z = F.pad(z, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
    z = z.contiguous()
    for dim, count in ((1, tiles[0]), (3, tiles[1]), (5, tiles[2])):  # D, H, W; each stacks a new leading axis
        z = _input_transform(z, dim, count)
    products = torch.bmm(z.view(64, -1, channels), transformed)  # (64, N*tiles, C_out)
    out_channels = transformed.shape[2]
    m = products.view(4, 4, 4, n, *tiles, out_channels)
    for axis in range(3):  # back along W, H, D: 4 transformed values -> 2 outputs
        m = _output_transform(m, axis)
    y = m.new_empty((n, *(2 * t for t in tiles), out_channels))
    y.view(n, tiles[0], 2, tiles[1], 2, tiles[2], 2, out_channels).copy_(m.permute(3, 4, 2, 5, 1, 6, 0, 7))
    y = y[:, : out_size[0], : out_size[1], : out_size[2]]
    if bias is not None:
        y = y + bias
    return y.permute(0, 4, 1, 2, 3)


def _input_transform(z: torch.Tensor, dim: int, tiles: int) -> torch.Tensor:
    """``B^T d`` along ``dim`` for every tile (stride 2, width 4): a new leading axis of 4."""
    index = (slice(None),) * dim + (slice(None, None, 2),)
    d = [z.narrow(dim, p, 2 * tiles - 1)[index] for p in range(4)]
    out = z.new_empty((4, *d[0].shape))
    torch.sub(d[0], d[2], out=out[0])
    torch.add(d[1], d[2], out=out[1])
    torch.sub(d[2], d[1], out=out[2])
    torch.sub(d[1], d[3], out=out[3])
    return out


def _output_transform(m: torch.Tensor, axis: int) -> torch.Tensor:
    """``A^T m`` along ``axis`` (of length 4): two outputs, same axis."""
    m0, m1, m2, m3 = m.unbind(axis)
    out = m.new_empty(m.shape[:axis] + (2,) + m.shape[axis + 1:])
    first, second = out.unbind(axis)
    torch.add(m0, m1, out=first).add_(m2)
    torch.sub(m1, m2, out=second).sub_(m3)
    return out
