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
