"""``ricenet train`` end to end: synthetic cohort -> preprocessing cache -> bundle, and its refusals."""

from __future__ import annotations

import csv
import shutil

import pytest

from RICENetLib.bundle import load_bundle
from RICENetLib.cli import main
from RICENetLib.preprocessing import PreprocessParameters
from training_data import one_thread  # noqa: F401 (fixture)

QUICK = ["--input-size", "32", "--spacing", "6", "--skull-strip", "none", "--folds", "2", "--batch-size", "2"]


@pytest.fixture
def cohort(small_cohort, tmp_path):
    """A private copy of the session's synthetic cohort: these tests write folds.json beside it."""
    return shutil.copytree(small_cohort.parent, tmp_path / "cohort") / small_cohort.name


@pytest.mark.usefixtures("one_thread")
def test_train_command_writes_a_bundle_the_classifier_can_use(cohort, tmp_path, capsys):
    out = tmp_path / "bundle"
    code = main(["train", "--cohort", str(cohort), "--out", str(out), "--epochs", "1", "--cache",
                 str(tmp_path / "cache"), *QUICK])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "mean ± sd over 2 fold(s): macro F1" in printed.out and f"bundle: {out}" in printed.out
    # Numbered from 1 as in the progress bar ("fold 1/2"), with the index --fold takes.
    assert "fold 1/2 (--fold 0): validation macro F1" in printed.out and "fold 2/2 (--fold 1)" in printed.out
    # 6 patients: the temperature and its ECE/Brier are shown, and why it is not applied; the reliability diagram.
    assert "calibration: temperature " in printed.out and "not applied: fewer than 20 patients" in printed.out
    assert "ECE " in printed.out and "Brier " in printed.out and f"reliability diagram: {out / 'reliability.png'}" in printed.out
    bundle = load_bundle(out)
    assert bundle.input_size == (32, 32, 32) and bundle.architecture["name"] == "resnet18"
    parameters = PreprocessParameters.from_dict(bundle.preprocessing)  # what `ricenet predict` will do
    assert parameters.skull_strip == "none" and parameters.spacing_mm == 6 and parameters.prescription_gy == 60
    assert (cohort.parent / "folds.json").read_text(encoding="utf-8") == (out / "folds.json").read_text(encoding="utf-8")
    assert len(list((tmp_path / "cache").rglob("preprocess.json"))) == 6  # every case preprocessed once, cached


def test_bad_cohort_is_refused_before_preprocessing(cohort, tmp_path, capsys):
    with open(cohort) as handle:
        rows = list(csv.DictReader(handle))
    one_class = cohort.with_name("one_class.csv")
    with open(one_class, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([r for r in rows if r["label"] == "recurrence"])
    code = main(["train", "--cohort", str(one_class), "--out", str(tmp_path / "b"), "--cache", str(tmp_path / "cache"),
                 *QUICK])
    assert code == 2 and "only 'recurrence' patients" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "b.work").exists()


def test_unreadable_case_is_named_before_training(cohort, tmp_path, capsys):
    broken = next(cohort.parent.glob("*/event.nii.gz"))
    broken.write_bytes(broken.read_bytes()[:200])
    code = main(["train", "--cohort", str(cohort), "--out", str(tmp_path / "b"), "--cache", str(tmp_path / "cache"),
                 *QUICK])
    error = capsys.readouterr().err
    assert code == 2 and f"Patient {broken.parent.name}" in error
    assert not list((tmp_path / "b.work").glob("fold[0-9]*"))


@pytest.mark.parametrize("arguments, message", [
    (["--modalities", "dose,t2"], "use one or more of postop, event, dose"),
    (["--fold", "5"], "Fold 5 does not exist"),
    (["--lr", "-1"], "learning rate"),
    (["--flip", "1.5"], "mirroring probability must lie between 0 and 1"),
])
def test_bad_options_are_named(cohort, tmp_path, capsys, arguments, message):
    try:
        code = main(["train", "--cohort", str(cohort), "--out", str(tmp_path / "b"), *QUICK, *arguments])
    except SystemExit as exit:  # argparse refuses malformed values itself
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("flags, warned", [({"avx2"}, True), ({"avx2", "amx_bf16"}, False)])
def test_bf16_on_a_cpu_without_native_support_is_warned_about(tmp_path, caplog, capsys, monkeypatch, flags, warned):
    """Emulated bfloat16 is ~100x slower than float32: said before training (which fails here on a missing cohort)."""
    import RICENetLib.cpu_half_precision as cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    for command in ("train", "ablate"):
        caplog.clear()
        assert main([command, "--cohort", str(tmp_path / "none.csv"), "--out", str(tmp_path / "b"), "--device", "cpu",
                     "--bf16", *QUICK]) == 2
        assert ("--bf16: bfloat16 on the CPU: this CPU has no native bfloat16 arithmetic" in caplog.text) is warned
        assert "does not exist" in capsys.readouterr().err


def test_the_commands_loading_share_is_the_engines():
    from RICENetTrainingLib import training
    from RICENetTrainingLib.commands import train

    assert train.LOADING_SHARE == training.LOADING_SHARE
