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
def dicom_cohort(small_cohort, tmp_path_factory) -> Path:
    """Four cases of :func:`small_cohort` (two of each class: the fewest two stratified folds train on) written
    as DICOM: MR series and an RTDOSE, as ``ricenet synth --format dicom`` writes them. Returns cohort.csv.

    Made from the NIfTI files, so that the two versions of each case can be compared, at no generation cost.
    """
    from RICENetLib.cohort import Case, load_cohort, write_cohort_csv
    from RICENetLib.image_io import read_image
    from RICENetLib.synthetic_dicom import write_dicom_images

    out = tmp_path_factory.mktemp("dicom") / "synthetic"
    cases = load_cohort(small_cohort)
    chosen = [c for c in cases if c.label == "rice"][:2] + [c for c in cases if c.label == "recurrence"][:2]
    written = []
    for case in sorted(chosen, key=lambda c: c.patient_id):
        images = {role: read_image(case.paths[role]) for role in ("postop", "event", "dose")}
        written.append(Case(case.patient_id, case.label, write_dicom_images(case.patient_id, **images,
                                                                            folder=out / case.patient_id)))
    return write_cohort_csv(out / "cohort.csv", written)


@pytest.fixture(scope="session")
def dicom_preprocessed(dicom_cohort) -> dict:
    """Every case of :func:`dicom_cohort` preprocessed from its DICOM files, by patient id."""
    from RICENetLib.cohort import load_cohort
    from RICENetLib.preprocessing import PreprocessParameters, preprocess_case
    from dicom_data import DICOM_PREPROCESSING

    parameters = PreprocessParameters.from_dict(DICOM_PREPROCESSING)
    return {case.patient_id: preprocess_case(case.paths["postop"], case.paths["event"], case.paths["dose"], parameters)
            for case in load_cohort(dicom_cohort)}


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
