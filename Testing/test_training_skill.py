"""The training loop learns: a signal a reader sees at once is found in a few epochs (issue 4).

The other training tests check mechanics (folds, resume, bundles) on data
whose labels the network need not learn. This one checks skill: lesions of two
sizes at random places in the event channel, the post-op and dose channels
carrying nothing about the label, so a mix-up anywhere between labels,
sampler, augmentation and validation (a label paired with another patient's
volume, channels shuffled by augmentation) leaves the network at chance.
"""

from __future__ import annotations

import numpy as np
import pytest

from RICENetLib.cohort import Case
from RICENetTrainingLib.training import TrainingParameters, train_ensemble
from training_data import one_thread, tiny_architecture  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def lesion_cohort(cases: int, size: int, seed: int) -> tuple[list[Case], dict[str, np.ndarray]]:
    """Recurrence: a bright ball of radius 5–7 voxels; RICE: 2.5–4; anywhere in the middle half; noise around."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.mgrid[:size, :size, :size]).astype(np.float32)
    cohort, arrays = [], {}
    for number in range(cases):
        label = "recurrence" if number % 5 < 3 else "rice"
        image = rng.normal(0.0, 0.3, size=(3, size, size, size)).astype(np.float32)
        centre = rng.uniform(0.3 * size, 0.7 * size, size=3).astype(np.float32)
        distance = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0))
        radius = rng.uniform(5.0, 7.0) if label == "recurrence" else rng.uniform(2.5, 4.0)
        image[1][distance < radius] += 1.5
        image[2] += np.exp(-distance / 12.0)  # a "dose" centred on the lesion, alike in both classes
        patient = f"S{number:03d}"
        cohort.append(Case(patient, label, {}))
        arrays[patient] = image
    return cohort, arrays


def test_training_learns_an_obvious_signal(tmp_path):
    cases, arrays = lesion_cohort(40, 24, seed=3)
    params = TrainingParameters(n_folds=4, folds=(0,), epochs=8, batch_size=4, learning_rate=1e-3,
                                architecture=tiny_architecture(), selection="last")
    result = train_ensemble(cases, tmp_path / "b", params, load=lambda case: arrays[case.patient_id],
                            preprocessing={"input_size": [24, 24, 24]})
    history = result.folds[0].history
    auc = [round(row["val_auc"], 3) for row in history]
    f1 = [round(row["val_macro_f1"], 3) for row in history]
    # 10 validation patients, none seen in training: ranked almost perfectly over the last epochs (with the labels
    # shuffled, this run's AUC stays at or below 0.71). Macro F1 at the 0.5 threshold moves more from epoch to
    # epoch even when the ranking is perfect (docs/TRAINING.md), so only its best epoch is held to a bar.
    assert min(auc[-4:]) >= 0.9, auc
    assert max(f1) >= 0.85, f1
    assert history[0]["train_loss"] > history[-1]["train_loss"]
