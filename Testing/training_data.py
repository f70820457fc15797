"""In-memory cohorts for the training tests: arrays instead of preprocessed images.

The training engine takes any ``case -> (3, D, H, W)`` loader, so these tests
exercise it without registration or skull stripping. A ``rice`` case has a
bright cube in the dose channel, a ``recurrence`` case one in the event
channel: learnable, so curves move, but the tests check mechanics, not skill.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RICENetLib.cohort import Case
from RICENetLib.model import default_architecture


def tiny_architecture(channels: int = 3, **extra) -> dict:
    """MONAI's resnet18 layout eight times narrower: for tests about mechanics, not the network."""
    return dict(default_architecture(channels), widen_factor=0.125, **extra)


def make_cohort(n_recurrence: int = 4, n_rice: int = 4, size: int = 32, seed: int = 0) -> tuple[list[Case], dict]:
    rng = np.random.default_rng(seed)
    cases, arrays = [], {}
    for number in range(n_recurrence + n_rice):
        label = "recurrence" if number < n_recurrence else "rice"
        patient = f"P{number:02d}"
        image = rng.normal(0.0, 0.5, size=(3, size, size, size)).astype(np.float32)
        lo, hi = size // 4, size // 4 + size // 3
        image[2 if label == "rice" else 1, lo:hi, lo:hi, lo:hi] += 2.0
        cases.append(Case(patient, label, {}))
        arrays[patient] = image
    return cases, arrays


def loader(arrays: dict):
    return lambda case: arrays[case.patient_id]


class ArrayLoader:
    """:func:`loader` as a class: picklable, for the processes of ``parallel_folds``."""

    def __init__(self, arrays: dict) -> None:
        self.arrays = arrays

    def __call__(self, case: Case) -> np.ndarray:
        if case.patient_id not in self.arrays:
            raise ValueError("no image for this patient")
        return self.arrays[case.patient_id]


@pytest.fixture
def one_thread():
    """Run on one intra-op thread: at these sizes a second thread gains little on an idle machine and,
    on a shared one, OpenMP threads waiting for each other make steps up to 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
