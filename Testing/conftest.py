"""Shared fixtures: small synthetic cases and cohorts, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests must not compete for the two cores with nested thread pools.
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """A 6-case synthetic cohort at 48 voxels across (about 5 mm voxels); returns cohort.csv."""
    from RICENetLib.synthetic import write_cohort

    return write_cohort(tmp_path_factory.mktemp("cohort") / "synthetic", cases=6, seed=11, size=48)


@pytest.fixture(scope="session")
def small_case():
    """One in-memory synthetic recurrence case at 64 voxels across (about 3.8 mm voxels)."""
    from RICENetLib.synthetic import generate_case

    return generate_case("T001", "recurrence", seed=5, size=64)


@pytest.fixture(scope="session")
def trained_tiny_bundle(tmp_path_factory) -> Path:
    """A 2-fold ensemble trained for one epoch on 20 in-memory patients (tiny network, 32³; about 15 s).

    Enough patients for the calibration, the 90 % prediction sets and the
    out-of-distribution reference (20 out-of-fold patients each) to apply.
    The cohort is noise with a bright cube (``training_data.make_cohort``):
    to this bundle a synthetic head is another anatomy.
    """
    import torch

    from RICENetTrainingLib.training import TrainingParameters, train_ensemble
    from training_data import loader, make_cohort, tiny_architecture

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see training_data.one_thread
    try:
        cases, arrays = make_cohort(10, 10)
        params = TrainingParameters(n_folds=2, epochs=1, batch_size=4, architecture=tiny_architecture())
        result = train_ensemble(cases, tmp_path_factory.mktemp("trained") / "bundle", params, load=loader(arrays),
                                preprocessing={"input_size": [32, 32, 32], "spacing_mm": 6.0, "skull_strip": "none"})
    finally:
        torch.set_num_threads(before)
    return result.bundle
