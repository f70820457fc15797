"""The training engine: the CI small run, exact resume after a kill, bad cohorts, checkpoints, sampler."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from RICENetLib.bundle import load_bundle
from RICENetLib.errors import Cancelled, InputError
from RICENetTrainingLib.augmentation import AugmentationParameters
from RICENetTrainingLib.checkpoint import load_checkpoint, save_checkpoint
from RICENetTrainingLib.training import TrainingParameters, epoch_order, train_ensemble
from training_data import loader, make_cohort, one_thread, tiny_architecture  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

#: Every augmentation switched on, so that the small runs exercise all of them.
EVERY_AUGMENTATION = AugmentationParameters(spatial_probability=1.0, elastic_probability=1.0, noise_probability=1.0,
                                            brightness_probability=1.0, gamma_probability=1.0)


def test_ci_small_run_with_the_real_network(tmp_path):
    """Folds, sampler, augmentation, checkpoints, resume and bundle export with MONAI's resnet18 at 32³."""
    cases, arrays = make_cohort(2, 2)
    params = TrainingParameters(n_folds=2, epochs=1, batch_size=2, augmentation=EVERY_AUGMENTATION)
    seen = []
    out = tmp_path / "bundle"
    first = train_ensemble(cases, out, params, load=loader(arrays), preprocessing={"input_size": [32, 32, 32]},
                           on_epoch=lambda fold, epoch, row: seen.append((fold, epoch)))
    assert first.bundle == out and seen == [(0, 1), (1, 1)]
    # Resume with more epochs: each fold continues from its checkpoint instead of starting again.
    result = train_ensemble(cases, out, replace(params, epochs=2), load=loader(arrays), resume=True,
                            preprocessing={"input_size": [32, 32, 32]},
                            on_epoch=lambda fold, epoch, row: seen.append((fold, epoch)))
    assert seen == [(0, 1), (1, 1), (0, 2), (1, 2)]
    assert [len(f.history) for f in result.folds] == [2, 2]

    bundle = load_bundle(out)
    assert bundle.modalities == ("postop", "event", "dose") and bundle.input_size == (32, 32, 32)
    assert bundle.architecture["name"] == "resnet18" and "widen_factor" not in bundle.architecture
    assert bundle.metadata["training"]["epochs"] == 2
    assert bundle.metadata["preprocessing"] == {"input_size": [32, 32, 32]}
    folds = json.loads((out / "folds.json").read_text(encoding="utf-8"))
    for entry, fold in zip(folds["folds"], bundle.folds):
        assert list(fold.validation_patients) == entry["validation_patients"]
        assert not set(fold.validation_patients) & set(fold.train_patients)
        assert fold.metrics["macro_f1"] == result.folds[fold.index].metrics["macro_f1"]
    assert set(bundle.metadata["metrics"]["macro_f1"]) == {"mean", "sd", "n"}
    with open(out / "training_log.csv") as handle:
        log = list(csv.DictReader(handle))
    assert [(row["fold"], row["epoch"]) for row in log] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    assert (out / "curves_fold0.png").read_bytes()[:4] == b"\x89PNG"
    checkpoint = load_checkpoint(first.work_dir / "fold1" / "checkpoint.safetensors")
    assert checkpoint["epoch"] == 2 and set(checkpoint["optimizer"]["state"]) and "rng" in checkpoint
    # The kept weights are the bundle's weights.
    kept = result.folds[0].state_dict
    assert all(torch.equal(kept[k], v) for k, v in bundle.folds[0].state_dict.items())


def _tiny(**overrides) -> TrainingParameters:
    values = dict(n_folds=2, epochs=3, batch_size=2, architecture=tiny_architecture(), augmentation=EVERY_AUGMENTATION)
    values.update(overrides)
    return TrainingParameters(**values)


class _CancelAt:
    """Ask to stop at the first progress report after ``message`` was reported: mid-epoch, between batches."""

    def __init__(self, message: str) -> None:
        self.message, self.armed = message, False

    def progress(self, fraction: float, message: str) -> None:
        self.armed = self.armed or self.message in message

    def cancel(self) -> bool:
        return self.armed


def test_killed_run_resumes_to_identical_weights(tmp_path):
    cases, arrays = make_cohort(4, 4, size=16)
    params = _tiny(lr_schedule="cosine")  # the resumed epochs must also get the scheduled rates
    reference = train_ensemble(cases, tmp_path / "reference", params, load=loader(arrays))

    stop = _CancelAt("fold 2/2, epoch 2: batch 1/")
    with pytest.raises(Cancelled):
        train_ensemble(cases, tmp_path / "killed", params, load=loader(arrays), progress=stop.progress,
                       cancel=stop.cancel)
    work = tmp_path / "killed.work"
    assert not (tmp_path / "killed").exists()
    assert load_checkpoint(work / "fold0" / "checkpoint.safetensors")["epoch"] == 3
    assert load_checkpoint(work / "fold1" / "checkpoint.safetensors")["epoch"] == 1  # epoch 2 was lost, no more
    with pytest.raises(InputError, match="holds an earlier run of fold 0; resume it"):
        train_ensemble(cases, tmp_path / "killed", params, load=loader(arrays))

    resumed = train_ensemble(cases, tmp_path / "killed", params, load=loader(arrays), resume=True)
    for a, b in zip(reference.folds, resumed.folds):
        assert a.epoch == b.epoch
        assert [r["val_loss"] for r in a.history] == [r["val_loss"] for r in b.history]
        assert a.state_dict.keys() == b.state_dict.keys()
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    for fold in ("fold0", "fold1"):
        final_a = load_checkpoint(reference.work_dir / fold / "checkpoint.safetensors")
        final_b = load_checkpoint(work / fold / "checkpoint.safetensors")
        assert all(torch.equal(final_a["model"][k], final_b["model"][k]) for k in final_a["model"])
        for index, state in final_a["optimizer"]["state"].items():
            assert all(torch.equal(v, final_b["optimizer"]["state"][index][n]) for n, v in state.items())


def test_resume_refuses_other_settings(tmp_path):
    cases, arrays = make_cohort(2, 2, size=16)
    train_ensemble(cases, tmp_path / "b", _tiny(epochs=1, augment=False), load=loader(arrays))
    with pytest.raises(InputError, match="other settings.*learning_rate: was 0.0001, now 0.001"):
        train_ensemble(cases, tmp_path / "b", _tiny(epochs=2, augment=False, learning_rate=1e-3),
                       load=loader(arrays), resume=True)


def test_single_fold_jobs_assemble_the_bundle_when_the_last_one_ends(tmp_path):
    cases, arrays = make_cohort(2, 2, size=16)
    out = tmp_path / "b"
    one = train_ensemble(cases, out, _tiny(epochs=1, folds=(1,)), load=loader(arrays))
    assert one.bundle is None and one.missing_folds == [0] and not out.exists()
    both = train_ensemble(cases, out, _tiny(epochs=1, folds=(0,)), load=loader(arrays))
    assert both.bundle == out and [f.fold for f in both.folds] == [0, 1]
    assert len(load_bundle(out).folds) == 2


@pytest.mark.parametrize("recurrence, rice, folds, message", [
    (4, 0, 2, "only 'recurrence' patients"),
    (1, 1, 3, "fewer than the 3 folds"),
    (4, 1, 2, "1 'rice' patient\\(s\\) for 2 folds"),
])
def test_bad_cohorts_fail_before_training(tmp_path, recurrence, rice, folds, message):
    cases, arrays = make_cohort(recurrence, rice)
    with pytest.raises(InputError, match=message):
        train_ensemble(cases, tmp_path / "b", _tiny(n_folds=folds), load=loader(arrays))
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.work").exists()


def test_unreadable_case_fails_before_training_naming_the_patient(tmp_path):
    cases, arrays = make_cohort(3, 3)

    def load(case):
        if case.patient_id == "P04":
            raise OSError("P04/event.nii.gz: file is truncated")
        return arrays[case.patient_id]

    with pytest.raises(InputError, match="Patient P04 could not be prepared.*truncated"):
        train_ensemble(cases, tmp_path / "b", _tiny(), load=load)
    assert not list((tmp_path / "b.work").glob("fold[0-9]*"))
    arrays["P02"] = arrays["P02"][:, :16]
    with pytest.raises(InputError, match="Patient P02: the prepared image has shape"):
        train_ensemble(cases, tmp_path / "b", _tiny(), load=loader(arrays))
    arrays["P02"] = np.full((3, 32, 32, 32), np.nan, dtype=np.float32)
    with pytest.raises(InputError, match="Patient P02: .*NaN"):
        train_ensemble(cases, tmp_path / "b", _tiny(), load=loader(arrays))


@pytest.mark.parametrize("overrides, message", [
    (dict(modalities=("dose", "t2")), "Modalities dose,t2"),
    (dict(learning_rate=0.0), "learning rate"),
    (dict(epochs=0), "epochs"),
    (dict(lr_schedule="step"), "learning-rate schedule 'step'"),
    (dict(folds=(2,)), "Fold 2 does not exist"),
    (dict(architecture=tiny_architecture(2)), "2 input channel\\(s\\) but 3 modalities"),
    (dict(device="cuda:7"), "cuda:7"),
    (dict(augmentation=AugmentationParameters(flip_probability=-0.1)), "mirroring probability"),
])
def test_bad_parameters_are_named(tmp_path, overrides, message):
    cases, arrays = make_cohort(2, 2)
    if overrides.get("device") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(InputError, match=message):
        train_ensemble(cases, tmp_path / "b", _tiny(**overrides), load=loader(arrays))


def test_existing_output_is_not_overwritten_unless_asked(tmp_path):
    cases, arrays = make_cohort(2, 2, size=16)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        train_ensemble(cases, tmp_path / "b", _tiny(epochs=1), load=loader(arrays))
    train_ensemble(cases, tmp_path / "b", _tiny(epochs=1, augment=False), load=loader(arrays), overwrite=True)
    assert load_bundle(tmp_path / "b") and not (tmp_path / "b" / "keep.txt").exists()


def test_cosine_schedule_decays_from_the_set_rate_and_is_logged(tmp_path):
    params = _tiny(epochs=4, learning_rate=1e-3, lr_schedule="cosine")
    rates = [params.learning_rate_at(epoch) for epoch in range(4)]
    assert rates[0] == 1e-3 and rates == sorted(rates, reverse=True) and rates[2] == pytest.approx(5e-4)
    assert _tiny(learning_rate=1e-3).learning_rate_at(3) == 1e-3  # constant by default
    cases, arrays = make_cohort(2, 2, size=16)
    result = train_ensemble(cases, tmp_path / "b", replace(params, augment=False), load=loader(arrays))
    assert [row["learning_rate"] for row in result.folds[0].history] == pytest.approx(rates)
    with open(result.work_dir / "fold0" / "log.csv", encoding="utf-8") as handle:
        assert [float(row["learning_rate"]) for row in csv.DictReader(handle)] == pytest.approx(rates, rel=1e-5)


def test_sampler_balances_the_classes_and_is_seeded():
    labels = [0] * 30 + [1] * 10
    draws = [i for epoch in range(50) for i in epoch_order(labels, len(labels), seed=3, fold=0, epoch=epoch)]
    rice_share = sum(labels[i] for i in draws) / len(draws)
    assert 0.45 < rice_share < 0.55  # 25 % of the patients, half of the draws
    assert epoch_order(labels, 40, 3, 0, 7) == epoch_order(labels, 40, 3, 0, 7)
    assert epoch_order(labels, 40, 3, 0, 7) != epoch_order(labels, 40, 3, 0, 8)


def test_checkpoint_round_trip_and_atomic_save(tmp_path, monkeypatch):
    import random

    import safetensors.torch

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    state = {"epoch": 4, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
             "numpy": np.random.RandomState(1).get_state(), "python": random.Random(2).getstate(),
             "history": [{"val_auc": float("nan"), "kept": True}], "best": {"state": None}}
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, state)
    back = load_checkpoint(path)
    assert back["epoch"] == 4 and back["best"] == {"state": None} and back["history"][0]["kept"] is True
    assert back["optimizer"]["param_groups"] == optimizer.state_dict()["param_groups"]  # tuples stay tuples
    assert set(back["optimizer"]["state"]) == {0, 1, 2, 3}  # integer keys stay integers
    assert np.array_equal(back["numpy"][1], state["numpy"][1]) and back["python"] == state["python"]
    torch.optim.Adam(net.parameters(), lr=1e-3).load_state_dict(back["optimizer"])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, dict(state, epoch=5))
    assert load_checkpoint(path)["epoch"] == 4 and [p.name for p in tmp_path.iterdir()] == [path.name]
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(InputError, match="cannot be read.*delete it"):
        load_checkpoint(path)


def test_process_killed_with_sigkill_resumes_to_identical_weights(tmp_path):
    """A real kill (no chance to clean up) at whatever moment it lands, then ``resume``."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cases, arrays = make_cohort(4, 4, size=16)
    params = _tiny(epochs=6)
    data = tmp_path / "cohort.npz"
    np.savez(data, labels=json.dumps({c.patient_id: c.label for c in cases}), **arrays)
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "train_script.py"), str(data), str(out),
                                json.dumps(params.to_dict())], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoint = tmp_path / "killed.work" / "fold0" / "checkpoint.safetensors"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere in the next epoch, maybe in the middle of writing the checkpoint
    process.send_signal(signal.SIGKILL)
    output = process.communicate()[0].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, f"finished before the kill: {output[-2000:]}"
    assert not out.exists()
    stale = checkpoint.parent / ".checkpoint.abc123.tmp.safetensors"  # as a kill during saving leaves it
    stale.write_bytes(b"half a checkpoint")

    resumed = train_ensemble(cases, out, params, load=loader(arrays), resume=True)
    assert not stale.exists()
    reference = train_ensemble(cases, tmp_path / "reference", params, load=loader(arrays))
    for a, b in zip(reference.folds, resumed.folds):
        assert a.epoch == b.epoch and len(b.history) == 6
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert load_bundle(out).id == load_bundle(tmp_path / "reference").id  # the id is a digest of the weights


def test_bf16_channels_last_and_cpu_side_augmentation_run(tmp_path):
    """The GPU options also run on a CPU (slowly), so a typo in them cannot hide until a GPU is lent."""
    cases, arrays = make_cohort(2, 2, size=16)
    params = _tiny(epochs=1, bf16=True, channels_last=True, augment_on="cpu")
    result = train_ensemble(cases, tmp_path / "b", params, load=loader(arrays))
    assert result.bundle is not None
    assert all(v.dtype != torch.bfloat16 for v in result.folds[0].state_dict.values())  # weights stay float32


def test_checkpoint_write_on_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    """Writes past RLIMIT_FSIZE fail with EFBIG in the child, as on a full disk."""
    from test_atomic import run_child

    path = tmp_path / "fold0" / "checkpoint.safetensors"
    save_checkpoint(path, {"epoch": 1, "weights": torch.zeros(10)})
    child = run_child("""
        import sys, torch
        from RICENetLib.errors import RICENetError
        from RICENetTrainingLib.checkpoint import save_checkpoint
        try:
            save_checkpoint(sys.argv[1], {"epoch": 2, "weights": torch.zeros(100_000)})
        except RICENetError as error:
            print(error)
    """, str(path), fsize_limit=100_000)
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [f"Cannot write {path}: File too large (the file is larger than this file "
                                         "system or process allows). Nothing was written there; what was there "
                                         "before is unchanged."]
    assert load_checkpoint(path)["epoch"] == 1 and [p.name for p in path.parent.iterdir()] == [path.name]


def test_full_disk_at_the_first_checkpoint_leaves_no_empty_fold_folder(tmp_path):
    from test_atomic import run_child

    out = tmp_path / "b"
    child = run_child("""
        import sys
        sys.path.insert(0, sys.argv[2])
        from training_data import loader, make_cohort, tiny_architecture
        from RICENetLib.errors import RICENetError
        from RICENetTrainingLib.training import TrainingParameters, train_ensemble
        cases, arrays = make_cohort(2, 2, size=16)
        params = TrainingParameters(n_folds=2, epochs=1, batch_size=2, architecture=tiny_architecture(), augment=False)
        try:
            train_ensemble(cases, sys.argv[1], params, load=loader(arrays))
        except RICENetError as error:
            print(error)
    """, str(out), str(Path(__file__).parent), fsize_limit=300_000)
    assert child.returncode == 0, child.stderr
    checkpoint = tmp_path / "b.work" / "fold0" / "checkpoint.safetensors"
    assert child.stdout.splitlines() == [f"Fold 0, epoch 1: Cannot write {checkpoint}: File too large (the file is "
                                         "larger than this file system or process allows). Nothing was written "
                                         "there; what was there before is unchanged. No epoch of this fold was saved."]
    assert not out.exists() and sorted(p.name for p in (tmp_path / "b.work").iterdir()) == ["folds.json"]


def test_a_diverging_fold_stops_before_its_checkpoint_is_spoilt(tmp_path):
    """A learning rate of 1e30: one step blows the weights up, the next epoch's loss is NaN. Stop, naming the
    fold and epoch, before that epoch's checkpoint replaces the last usable one."""
    cases, arrays = make_cohort(2, 2, size=16)
    with pytest.raises(InputError, match=r"Fold 0 diverged in epoch 2: the training loss is nan; "
                                         r"the checkpoint of epoch 1 is kept\. Lower the learning rate \(now 1e\+30\)"):
        train_ensemble(cases, tmp_path / "b", _tiny(epochs=3, learning_rate=1e30, augment=False), load=loader(arrays))
    assert not (tmp_path / "b").exists()
    assert load_checkpoint(tmp_path / "b.work" / "fold0" / "checkpoint.safetensors")["epoch"] == 1
