"""The work a Slicer worker thread does, in small steps that each end with a progress report.

Each workload is built (and warmed up) on the main thread and returns a
``step(report)`` that does one piece of real engine work and calls
``report(fraction, message)`` at least once, as the engine reports to a
:class:`~RICENetLib.background.BackgroundTask`:

* ``inference``: a forward pass of MONAI's resnet18 (3 channels, ``size``³), as a fold model runs;
* ``occlusion``: :func:`RICENetLib.occlusion.occlusion_sensitivity` on that
  network with the incremental engine, boxes of half the size, two boxes a batch
  (the engine reports per batch);
* ``training``: one step of the training module's recipe: the paper's
  augmentation (:class:`RICENetTrainingLib.augmentation.Augmenter`) on a batch
  of two, forward, cross-entropy, backward, Adam.
"""

from __future__ import annotations

from typing import Callable

import torch

Report = Callable[..., None]
Step = Callable[[Report], None]


def inference(size: int) -> Step:
    from RICENetLib.model import build_network, default_architecture

    torch.manual_seed(0)
    network = build_network(default_architecture(3)).eval()
    image = torch.randn(1, 3, size, size, size)

    def step(report: Report) -> None:
        with torch.inference_mode():
            network(image)
        report(0.5, "forward pass")

    return step


def occlusion(size: int) -> Step:
    from RICENetLib.model import build_network, default_architecture
    from RICENetLib.occlusion import OcclusionSettings, occlusion_sensitivity

    torch.manual_seed(0)
    network = build_network(default_architecture(3)).eval()
    image = torch.randn(3, size, size, size)
    settings = OcclusionSettings(mask_size=size // 2, stride=size // 2, engine="incremental", batch_size=2)

    def step(report: Report) -> None:
        occlusion_sensitivity([network], image, settings, progress=report)

    return step


def training(size: int) -> Step:
    from RICENetLib.model import build_network
    from RICENetTrainingLib.augmentation import Augmenter
    from RICENetTrainingLib.training import TrainingParameters

    params = TrainingParameters()
    torch.manual_seed(0)
    network = build_network(params.network_architecture()).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=params.learning_rate)
    augment = Augmenter(params.modalities, params.augmentation)
    images = torch.randn(2, 3, size, size, size)
    labels = torch.tensor([0, 1])
    seeds = iter(range(10**9))

    def step(report: Report) -> None:
        batch = augment.batch(images, [next(seeds), next(seeds)])
        loss = torch.nn.functional.cross_entropy(network(batch), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        report(0.5, "training step")

    return step


WORKLOADS: dict[str, Callable[[int], Step]] = {"inference": inference, "occlusion": occlusion, "training": training}


def build(name: str, size: int) -> Step:
    """The workload's step (warm it up in a worker thread: first calls and a new thread's memory cost extra)."""
    return WORKLOADS[name](size)
