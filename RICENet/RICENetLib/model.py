"""The RICE-NET network: MONAI's 3D ResNet-18 over the stacked modalities.

The architecture is described by a plain dict (stored in the bundle) so that a
bundle always rebuilds exactly the network its weights were trained with.

>>> net = build_network(default_architecture(n_input_channels=3))
>>> net(torch.zeros(1, 3, 32, 32, 32)).shape
torch.Size([1, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import BundleError

SUPPORTED_NETWORKS = ("resnet18",)


def default_architecture(n_input_channels: int, num_classes: int = 2, conv1_t_stride: int = 1) -> dict[str, Any]:
    """MONAI ``resnet18`` arguments as the paper uses them (MONAI defaults otherwise)."""
    return {
        "name": "resnet18",
        "spatial_dims": 3,
        "n_input_channels": int(n_input_channels),
        "num_classes": int(num_classes),
        "conv1_t_stride": int(conv1_t_stride),
    }


def build_network(architecture: dict[str, Any]) -> torch.nn.Module:
    """Build the network an architecture dict describes (weights initialised randomly)."""
    from monai.networks.nets import resnet

    arguments = dict(architecture)
    name = arguments.pop("name", "resnet18")
    if name not in SUPPORTED_NETWORKS:
        raise BundleError(f"Unknown network '{name}'; this version supports {', '.join(SUPPORTED_NETWORKS)}.")
    try:
        return getattr(resnet, name)(**arguments)
    except TypeError as error:
        raise BundleError(f"Invalid architecture arguments for {name}: {error}") from None
