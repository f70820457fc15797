"""Cases as tensors: every case of a cohort preprocessed once, checked, and held in memory.

Training takes a *case loader*, any callable ``case -> array (C, D, H, W)``
whose channels follow :data:`RICENetLib.MODALITIES`. The default one runs the
preprocessing pipeline through its disk cache (:func:`pipeline_loader`), so
registration and skull stripping happen once per case and parameters, not
once per experiment; tests pass in-memory arrays. All cases are loaded before the first epoch, so
an unreadable case stops the run at once, naming the patient, instead of
hours into training. Every modality subset is a channel selection of the
same loaded tensors, which is how the ablation trains seven models from one
preprocessing pass.

>>> data = load_cases(cases, lambda case: arrays[case.patient_id])   # doctest: +SKIP
>>> data.channels(("event", "dose"))                                 # doctest: +SKIP
[1, 2]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from RICENetLib import MODALITIES
from RICENetLib.cohort import Case
from RICENetLib.errors import Cancelled, InputError, RICENetError
from RICENetLib.progress import as_progress

CaseLoader = Callable[[Case], np.ndarray]


@dataclass
class CaseTensors:
    """Preprocessed cases in cohort order: ``images[i]`` is ``(len(modalities), D, H, W)`` float32."""

    cases: list[Case]
    images: list[torch.Tensor]
    modalities: tuple[str, ...] = MODALITIES

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images[0].shape[1:])  # type: ignore[return-value]

    @property
    def labels(self) -> list[int]:
        return [case.label_index for case in self.cases]

    def indices(self, patient_ids: Sequence[str]) -> list[int]:
        where = {case.patient_id: i for i, case in enumerate(self.cases)}
        missing = [p for p in patient_ids if p not in where]
        if missing:
            raise InputError(f"Patient(s) {', '.join(missing[:5])} of the folds are not in the loaded cohort.")
        return [where[p] for p in patient_ids]

    def channels(self, modalities: Sequence[str]) -> list[int]:
        unknown = [m for m in modalities if m not in self.modalities]
        if unknown:
            raise InputError(f"Modality {', '.join(unknown)} was not loaded (have {', '.join(self.modalities)}).")
        return [self.modalities.index(m) for m in modalities]


def load_cases(cases: Sequence[Case], load: CaseLoader, modalities: Sequence[str] = MODALITIES,
               progress=None, cancel=None) -> CaseTensors:
    """Load and check every case; the first failure is an :class:`InputError` naming the patient."""
    report = as_progress(progress, cancel)
    modalities = tuple(modalities)
    images: list[torch.Tensor] = []
    for number, case in enumerate(cases):
        report(number / max(len(cases), 1), f"preparing {case.patient_id} ({number + 1}/{len(cases)})")
        try:
            array = load(case)
        except Cancelled:
            raise
        except RICENetError as error:
            raise InputError(f"Patient {case.patient_id}: {error}") from None
        except (OSError, ValueError, RuntimeError) as error:
            raise InputError(f"Patient {case.patient_id} could not be prepared for training: {error}") from None
        images.append(_checked(array, case, modalities, images[0].shape if images else None))
    report(1.0, f"{len(cases)} cases ready")
    return CaseTensors(list(cases), images, modalities)


def _checked(array: Any, case: Case, modalities: tuple[str, ...], shape: Any) -> torch.Tensor:
    where = f"Patient {case.patient_id}"
    tensor = torch.as_tensor(np.asarray(array), dtype=torch.float32)
    if tensor.ndim != 4 or tensor.shape[0] != len(modalities):
        raise InputError(f"{where}: the prepared image has shape {tuple(tensor.shape)}; expected "
                         f"({len(modalities)}, D, H, W) with channels {', '.join(modalities)}.")
    if shape is not None and tensor.shape != shape:
        raise InputError(f"{where}: the prepared image has shape {tuple(tensor.shape)} but the first case's is "
                         f"{tuple(shape)}; every case must be prepared to the same input size.")
    if not torch.isfinite(tensor).all():
        raise InputError(f"{where}: the prepared image contains NaN or infinite values.")
    return tensor.contiguous()


class CaseSamples(torch.utils.data.Dataset):
    """Training samples addressed by ``(case index, augmentation seed)``, as the epoch's batch sampler yields them.

    The dataset itself never changes between epochs, so worker processes can
    persist; with an ``augment`` it augments on the CPU inside the workers.
    """

    def __init__(self, data: CaseTensors, channels: Sequence[int], augment: Callable | None = None) -> None:
        self.data = data
        self.channels = list(channels)
        self.all_channels = self.channels == list(range(len(data.modalities)))
        self.augment = augment
        self.labels = data.labels

    def __len__(self) -> int:
        return len(self.data.images)

    def image(self, index: int) -> torch.Tensor:
        """Case ``index`` with the selected channels, not augmented (for validation)."""
        image = self.data.images[index]
        return image if self.all_channels else image[self.channels]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = key
        image = self.image(index)
        if self.augment is not None:
            image = self.augment(image, seed)
        return image, self.labels[index], seed


def default_cache_dir() -> Path:
    """``$RICENET_CACHE``, else ``$XDG_CACHE_HOME/ricenet/preprocessed``, else ``~/.cache/ricenet/preprocessed``."""
    if os.environ.get("RICENET_CACHE"):
        return Path(os.environ["RICENET_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ricenet" / "preprocessed"


class PipelineLoader:
    """``case -> (3, D, H, W)`` through the preprocessing pipeline and its disk cache.

    A class, not a closure, so that it can be sent to the processes of
    :mod:`.parallel_folds`; the cache is opened where it is used.
    """

    def __init__(self, parameters: Mapping[str, Any], cache_dir: str | os.PathLike) -> None:
        from RICENetLib.preprocessing import PreprocessParameters

        self.parameters = PreprocessParameters.from_dict(dict(parameters))
        self.cache_dir = str(cache_dir)
        self._cache = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}

    def __call__(self, case: Case) -> np.ndarray:
        from RICENetLib.preprocess_cache import PreprocessCache

        if self._cache is None:
            self._cache = PreprocessCache(self.cache_dir)
        paths = case.paths
        result = self._cache.get_or_compute(paths["postop"], paths["event"], paths["dose"], self.parameters,
                                            case_id=case.patient_id)
        return result.stack(MODALITIES)


def pipeline_loader(preprocessing: Mapping[str, Any] | None = None,
                    cache_dir: str | os.PathLike | None = None) -> tuple[CaseLoader, dict[str, Any]]:
    """A case loader running the preprocessing pipeline through its disk cache, and the full parameters.

    ``preprocessing`` may name only some parameters (the rest take their
    defaults); the returned dict names them all, which is what a bundle must
    record so that the classifier prepares new cases exactly the same way.
    """
    loader = PipelineLoader(preprocessing or {}, cache_dir if cache_dir is not None else default_cache_dir())
    return loader, loader.parameters.to_dict()
