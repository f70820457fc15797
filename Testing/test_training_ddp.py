"""Data-parallel training with two CPU processes (gloo), started by torchrun as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from RICENetLib.bundle import load_bundle
from RICENetLib.metrics import classification_metrics
from RICENetTrainingLib.checkpoint import load_checkpoint
from RICENetTrainingLib.training import TrainingParameters, rank_batches
from training_data import make_cohort, tiny_architecture

HERE = Path(__file__).resolve().parent


def test_ddp_with_two_cpu_processes(tmp_path):
    cases, arrays = make_cohort(4, 4, size=32)
    data = tmp_path / "cohort.npz"
    np.savez(data, labels=json.dumps({c.patient_id: c.label for c in cases}), **arrays)
    params = TrainingParameters(n_folds=2, epochs=2, batch_size=1, architecture=tiny_architecture(),
                                selection="last").to_dict()
    out = tmp_path / "bundle"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(HERE / "train_script.py"), str(data), str(out), json.dumps(params)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    digests = {(tmp_path / f"bundle.rank{r}.txt").read_text(encoding="utf-8") for r in (0, 1)}
    assert len(digests) == 1  # DDP kept the two processes' models identical
    state = load_checkpoint(tmp_path / "bundle.work" / "fold1" / "checkpoint.safetensors")
    assert state["fingerprint"]["processes"] == 2 and state["epoch"] == 2
    assert state["sampler"]["samples_per_epoch"] == 4  # 4 training patients, global batch 2

    # Rank 0 alone wrote the bundle; its validation metrics, computed on two shards and summed
    # across the processes, are those of the final model on the whole validation fold.
    bundle = load_bundle(out)
    fold = bundle.folds[1]
    model = bundle.models()[1]
    images = torch.stack([torch.from_numpy(arrays[p]) for p in fold.validation_patients])
    truth = [next(c.label_index for c in cases if c.patient_id == p) for p in fold.validation_patients]
    with torch.no_grad():
        logits = model(images)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(truth)).item()
    expected = classification_metrics(truth, torch.softmax(logits, 1).numpy(), loss=loss)
    assert fold.metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert fold.metrics["macro_f1"] == expected["macro_f1"]


def test_ranks_split_each_global_batch_without_overlap():
    keys = list(range(12))
    one = rank_batches(keys, batch_size=4)
    ranks = [rank_batches(keys, batch_size=2, rank=r, world_size=2) for r in (0, 1)]
    for step, batch in enumerate(one):
        assert ranks[0][step] + ranks[1][step] == batch  # the same samples, in the same global step
