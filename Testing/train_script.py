"""Run by the training tests in a separate process (alone, or under torchrun): train on arrays saved by the test.

Each rank writes a digest of its kept weights to ``OUT.rank<R>.txt``, so the
test can check that every process ended with the same model.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import torch

from RICENetLib.cohort import Case
from RICENetTrainingLib.training import TrainingParameters, train_ensemble


def main(data_path: str, out: str, params_json: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    arrays = dict(np.load(data_path))
    labels = json.loads(str(arrays.pop("labels")))
    cases = [Case(patient, labels[patient], {}) for patient in sorted(arrays)]
    params = TrainingParameters.from_dict(json.loads(params_json))
    result = train_ensemble(cases, out, params, load=lambda case: arrays[case.patient_id])
    digest = hashlib.sha256()
    for fold in result.folds:
        for name, tensor in sorted(fold.state_dict.items()):
            digest.update(name.encode() + tensor.numpy().tobytes())
    with open(f"{out}.rank{os.environ.get('RANK', '0')}.txt", "w") as handle:
        handle.write(digest.hexdigest())


if __name__ == "__main__":
    main(*sys.argv[1:4])
