"""The RICE-NET network: MONAI's 3D ResNet-18 over the stacked modalities.

The architecture is described by a plain dict (stored in the bundle) so that a
bundle always rebuilds exactly the network its weights were trained with.

>>> net = build_network(default_architecture(n_input_channels=3))
>>> net(torch.zeros(1, 3, 32, 32, 32)).shape
torch.Size([1, 2])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .errors import BundleError

SUPPORTED_NETWORKS = ("resnet18",)


def default_architecture(n_input_channels: int, num_classes: int = 2, conv1_t_stride: int = 1,
                         widen_factor: float = 1.0) -> dict[str, Any]:
    """MONAI ``resnet18`` arguments as the paper uses them (MONAI defaults otherwise); a ``widen_factor`` other
    than 1 (quick runs) is recorded, the paper's width is not, so older bundles compare equal."""
    architecture: dict[str, Any] = {
        "name": "resnet18",
        "spatial_dims": 3,
        "n_input_channels": int(n_input_channels),
        "num_classes": int(num_classes),
        "conv1_t_stride": int(conv1_t_stride),
    }
    if not (widen_factor > 0 and math.isfinite(widen_factor)):
        raise BundleError(f"The widen factor must be a positive number (got {widen_factor!r}).")
    if widen_factor != 1.0:
        architecture["widen_factor"] = float(widen_factor)
    return architecture


def build_network(architecture: dict[str, Any]) -> torch.nn.Module:
    """Build the network an architecture dict describes (weights initialised randomly)."""
    from monai.networks.nets import resnet

    arguments = dict(architecture)
    name = arguments.pop("name", "resnet18")
    if name not in SUPPORTED_NETWORKS:
        raise BundleError(f"Unknown network '{name}'; this version supports {', '.join(SUPPORTED_NETWORKS)}.")
    try:
        return getattr(resnet, name)(**arguments)
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError, RuntimeError, OverflowError) as error:
        # MONAI checks few argument values itself: a string, a negative or a huge number fails deep inside torch.
        raise BundleError(f"Invalid architecture arguments for {name}: {error}") from None


#: Peak memory of one CPU forward pass over the largest activation (the first convolution's output at the
#: paper's width): with torch 2.13, 1 thread, 3 channels, stride 1, VmHWM rose by 57 MB at 48³ and 113-143 MB
#: at 64³ (1033 MB at 128³ with 2 threads), i.e. 5-9× that activation, convolution workspace included.
ACTIVATION_FACTOR = 9


def forward_memory_bytes(architecture: dict[str, Any], input_size: tuple[int, int, int]) -> int:
    """About the most memory one forward pass of one input needs: the input plus the largest activation × factor.

    MONAI's resnet starts with a convolution of stride (``conv1_t_stride``, 2, 2)
    to ``64 × widen_factor`` channels; that output, at nearly full
    resolution, dominates. Narrower networks are counted at full width (their
    measured peak does not shrink with the width: 49 MB at 48³ for a quarter
    width). Good to a factor of about 2, which is what refusing an impossible
    size needs; it is not a capacity planner.
    """
    def number(key: str, default: float) -> float:
        value = architecture.get(key, default)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    depth, height, width = (int(v) for v in input_size)
    channels = int(number("n_input_channels", 1))
    first = int(64 * max(1.0, number("widen_factor", 1.0)))
    t_stride = max(1, int(number("conv1_t_stride", 1)))
    activation = first * -(-depth // t_stride) * -(-height // 2) * -(-width // 2)
    return 4 * (channels * depth * height * width + ACTIVATION_FACTOR * activation)
