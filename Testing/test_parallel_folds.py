"""Folds trained side by side in CPU processes give the bundle one process gives; failures stop them all."""

from __future__ import annotations

import numpy as np
import pytest

from RICENetLib.bundle import load_bundle
from RICENetLib.errors import InputError
from RICENetTrainingLib.parallel_folds import check_processes, fold_groups, train_in_processes
from RICENetTrainingLib.training import TrainingParameters, train_ensemble
from training_data import ArrayLoader, make_cohort, one_thread, tiny_architecture  # noqa: F401 (fixture)

PREPROCESSING = {"input_size": [32, 32, 32]}


def test_folds_are_dealt_round_robin():
    assert fold_groups([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert fold_groups([0, 1], 3) == [[0], [1]]
    assert fold_groups([3], 2) == [[3]]


@pytest.mark.usefixtures("one_thread")
def test_two_processes_write_the_bundle_one_process_writes(tmp_path):
    cases, arrays = make_cohort(5, 5)
    # 3 folds over 2 processes: one process trains folds 1 and 3, the other fold 2.
    params = TrainingParameters(n_folds=3, epochs=1, batch_size=4, architecture=tiny_architecture(), device="cpu")
    one = train_ensemble(cases, tmp_path / "one", params, load=ArrayLoader(arrays), preprocessing=PREPROCESSING,
                         folds_file=tmp_path / "folds.json")
    seen = []
    two = train_in_processes(cases, tmp_path / "two", params, 2, load=ArrayLoader(arrays), preprocessing=PREPROCESSING,
                             folds_file=tmp_path / "folds.json", threads=1,
                             progress=lambda fraction, text: seen.append((fraction, text)))
    assert two.bundle == tmp_path / "two" and [f.fold for f in two.folds] == [0, 1, 2] and not two.missing_folds
    a, b = load_bundle(one.bundle), load_bundle(two.bundle)
    assert [f.validation_patients for f in a.folds] == [f.validation_patients for f in b.folds]
    assert [f.epoch for f in a.folds] == [f.epoch for f in b.folds]
    # The same seeds, folds and sampling: the weights agree to rounding (another process's oneDNN kernels may sum in
    # another order: 2-3e-5 seen after two epochs); other initial weights or sample orders would differ far more.
    for fold_a, fold_b in zip(a.folds, b.folds):
        assert fold_a.state_dict.keys() == fold_b.state_dict.keys()
        for name, tensor in fold_a.state_dict.items():
            np.testing.assert_allclose(tensor.numpy(), fold_b.state_dict[name].numpy(), atol=1e-3)
    oof = lambda bundle: sorted((r["patient_id"], r["p"]["rice"]) for r in bundle.metadata["out_of_fold"])  # noqa: E731
    assert [p for p, _ in oof(a)] == [p for p, _ in oof(b)]
    np.testing.assert_allclose([v for _, v in oof(a)], [v for _, v in oof(b)], atol=1e-3)
    fractions = [f for f, _ in seen]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions[-1] == pytest.approx(1.0) and any("fold 2/3" in text for _, text in seen)
    assert any("fold 3/3" in text for _, text in seen)


@pytest.mark.usefixtures("one_thread")
def test_a_failing_process_stops_the_training_with_the_patient_named_and_no_bundle(tmp_path):
    cases, arrays = make_cohort(5, 5)
    del arrays["P07"]
    params = TrainingParameters(n_folds=2, epochs=1, batch_size=4, architecture=tiny_architecture(), device="cpu")
    with pytest.raises(InputError, match="Patient P07"):
        train_in_processes(cases, tmp_path / "bundle", params, 2, load=ArrayLoader(arrays),
                           preprocessing=PREPROCESSING, threads=1)
    assert not (tmp_path / "bundle" / "bundle.json").exists()


def test_processes_are_refused_where_they_cannot_help(monkeypatch):
    params = TrainingParameters(device="cpu")
    with pytest.raises(InputError, match="--processes must be a whole number"):
        check_processes(0, params)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="under torchrun"):
        check_processes(2, params)
    monkeypatch.delenv("WORLD_SIZE")
    check_processes(2, params)
    check_processes(1, TrainingParameters(device="cpu"))


def test_an_earlier_run_is_refused_before_any_process_starts(tmp_path):
    cases, arrays = make_cohort(5, 5)
    params = TrainingParameters(n_folds=2, epochs=1, batch_size=4, architecture=tiny_architecture(), device="cpu")
    stale = tmp_path / "bundle.work" / "fold1" / "checkpoint.safetensors"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run")
    with pytest.raises(InputError, match="holds an earlier run of fold 1"):
        train_in_processes(cases, tmp_path / "bundle", params, 2, load=ArrayLoader(arrays), preprocessing=PREPROCESSING)
    assert stale.read_bytes() == b"an earlier run" and not (tmp_path / "bundle").exists()
