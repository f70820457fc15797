"""Training augmentation: one random spatial change for all channels, intensity changes for the MRIs only.

The paper lists elastic deformation, rotation, scaling, Gaussian noise,
brightness and gamma. How they are applied here, and why:

* **Spatial** (elastic + rotation + scaling) is one MONAI grid built from a
  coarse random displacement field and a random affine, applied to every
  channel with a single resampling, so the three volumes stay co-registered
  (the dose must stay where the lesion is) and are interpolated only once.
  The elastic field is drawn on a coarse control grid and upsampled on the
  device, unlike MONAI's ``Rand3DElastic`` which draws a full-resolution
  field with numpy on the CPU and smooths it (3.7 s for 3×224³ on a CPU,
  DESIGN.md), and would starve a GPU. Sizes are fractions of the volume, so
  the same settings mean the same anatomy at 32³ and at 224³.
* **Intensity** (Gaussian noise, brightness, gamma) is applied to each MRI
  channel independently: the two scans come from separate sessions whose
  noise, gain and contrast differ in real life.
* **Mirroring** (``flip_probability``, per axis, all channels) is not in the
  paper and is off by default. The class of a lesion does not depend on which
  side of the head it is on, and mirroring multiplies the variety of small
  cohorts; on a test task with 48 training cases it kept the network from
  memorising them (docs/TRAINING.md).
* **The dose channel gets the spatial change only.** It is not an image of
  the patient but the planned physical dose (Gy / prescription): it has no
  scanner noise, no gain and no contrast curve, and its absolute level (e.g.
  the 50–60 Gy region) is part of the signal the model should learn. Noise,
  brightness or gamma would teach the network that dose values are unreliable.

Every random choice of a sample comes from one integer seed (numpy for the
few random parameters, a ``torch.Generator`` on the tensor's device for the
noise field), so a sample augments identically on every run, in any worker
process, and the same code runs on CPU tensors or GPU tensors.

>>> augment = Augmenter(("postop", "event", "dose"), AugmentationParameters())
>>> out = augment(torch.zeros(3, 32, 32, 32), seed=1)       # same device as the input
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from RICENetLib.errors import InputError, reject_unknown_keys


@dataclass(frozen=True)
class AugmentationParameters:
    """Probabilities and ranges; ``0`` probability switches a transform off."""

    spatial_probability: float = 0.8
    rotation_degrees: float = 15.0      # per axis, uniform in ±
    scale_range: float = 0.10           # per axis, factor in 1 ± scale_range
    elastic_probability: float = 0.5    # of the spatial changes, how many are also elastic
    elastic_points: int = 6             # control points along each axis
    elastic_magnitude: float = 0.02     # largest control-point shift, fraction of the axis length
    noise_probability: float = 0.3
    noise_std: float = 0.1              # noise sd drawn in [0, noise_std] (z-score units)
    brightness_probability: float = 0.3
    brightness_range: float = 0.25      # multiplicative, factor in 1 ± brightness_range (keeps background 0)
    gamma_probability: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    flip_probability: float = 0.0       # per axis, mirror all channels; not in the paper, so off by default

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gamma_range"] = list(self.gamma_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AugmentationParameters":
        reject_unknown_keys(cls, data, "augmentation parameter")
        values = dict(data)
        if "gamma_range" in values:
            values["gamma_range"] = tuple(float(v) for v in values["gamma_range"])
        return cls(**values)


class SpatialAugment:
    """Random elastic + rotation + scaling as one grid, one bilinear resampling, zero padding.

    The rotation and scaling are MONAI's ``RandAffineGrid``; the elastic field
    is added to the grid before it, as MONAI's ``Rand3DElastic`` does.
    """

    def __init__(self, params: AugmentationParameters) -> None:
        from monai.transforms import RandAffineGrid

        self.params = params
        angle = math.radians(params.rotation_degrees)
        self.affine = RandAffineGrid(rotate_range=(angle,) * 3, scale_range=(params.scale_range,) * 3,
                                     dtype=torch.float32)

    def __call__(self, image: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
        from monai.transforms import Resample
        from monai.transforms.utils import create_grid
        from monai.utils import convert_to_tensor

        p = self.params
        if rng.uniform() >= p.spatial_probability:
            return image
        size = tuple(image.shape[1:])
        device = image.device
        grid = create_grid(spatial_size=size, device=device, backend="torch", dtype=torch.float32)
        if rng.uniform() < p.elastic_probability and p.elastic_magnitude > 0:
            points = max(int(p.elastic_points), 2)
            coarse = torch.from_numpy(rng.uniform(-1.0, 1.0, (1, 3) + (points,) * 3).astype(np.float32))
            field = F.interpolate(coarse.to(device), size=size, mode="trilinear", align_corners=True)[0]
            reach = torch.tensor([p.elastic_magnitude * n for n in size], device=device).view(3, 1, 1, 1)
            grid[:3] += field * reach
        self.affine.set_random_state(state=rng)
        grid = self.affine(grid=grid)
        resample = Resample(mode="bilinear", padding_mode="zeros", device=device, dtype=torch.float32)
        return convert_to_tensor(resample(image, grid), track_meta=False)


class IntensityAugment:
    """Gaussian noise, brightness (multiplicative) and gamma, on one single-channel volume.

    Brightness and gamma are MONAI's ``RandScaleIntensity`` and
    ``RandAdjustContrast``; the noise field is drawn on the volume's device
    (MONAI's ``RandGaussianNoise`` draws it with numpy on the CPU).
    """

    def __init__(self, params: AugmentationParameters) -> None:
        from monai.transforms import RandAdjustContrast, RandScaleIntensity

        self.params = params
        self.brightness = RandScaleIntensity(factors=params.brightness_range, prob=params.brightness_probability)
        self.gamma = RandAdjustContrast(prob=params.gamma_probability, gamma=params.gamma_range)

    def __call__(self, channel: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
        from monai.utils import convert_to_tensor

        p = self.params
        if rng.uniform() < p.noise_probability and p.noise_std > 0:
            sd = float(rng.uniform(0.0, p.noise_std))
            generator = torch.Generator(device=channel.device).manual_seed(int(rng.randint(2**31 - 1)))
            noise = torch.randn(channel.shape, generator=generator, device=channel.device, dtype=channel.dtype)
            channel = channel + sd * noise
        self.brightness.set_random_state(state=rng)
        self.gamma.set_random_state(state=rng)
        channel = self.gamma(self.brightness(channel))
        return convert_to_tensor(channel, track_meta=False)


class Augmenter:
    """Augment one sample ``(C, D, H, W)`` or a batch, reproducibly from per-sample seeds, on the input's device."""

    def __init__(self, modalities: Sequence[str], params: AugmentationParameters | None = None) -> None:
        self.modalities = tuple(modalities)
        self.params = params or AugmentationParameters()
        self.mri_channels = [i for i, m in enumerate(self.modalities) if m != "dose"]
        self.spatial = SpatialAugment(self.params)
        self.intensity = IntensityAugment(self.params)

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        if image.ndim != 4 or image.shape[0] != len(self.modalities):
            raise ValueError(f"Augmenter expects ({len(self.modalities)}, D, H, W), got {tuple(image.shape)}.")
        rng = np.random.RandomState(int(seed) % 2**32)
        out = self.spatial(image, rng)
        if self.params.flip_probability > 0:  # no draw when off: the paper's augmentation stays as it was
            axes = [1 + axis for axis in range(3) if rng.uniform() < self.params.flip_probability]
            if axes:
                out = torch.flip(out, axes)
        if self.mri_channels:
            channels = list(out.unbind(0))
            for index in self.mri_channels:
                channels[index] = self.intensity(channels[index][None], rng)[0]
            out = torch.stack(channels)
        return out

    def batch(self, images: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Augment each sample of ``(B, C, D, H, W)`` with its own seed."""
        return torch.stack([self(image, seed) for image, seed in zip(images, seeds)])
