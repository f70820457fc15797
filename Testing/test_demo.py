"""``ricenet demo``'s second run: what it reuses, what a changed option redoes, and what it cleans up."""

from __future__ import annotations

import argparse

from RICENetLib.commands import demo
from RICENetLib.demo_stages import MANIFEST_NAME, STAGES, plan_stages, read_manifest, write_manifest


def options(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return demo.stage_options(parser.parse_args(list(argv)))


def decisions(recorded, wanted, present=None):
    return [(d.stage, d.reuse, d.reason) for d in plan_stages(recorded, wanted, present or dict.fromkeys(STAGES, True))]


def test_same_options_reuse_every_stage_and_device_or_out_change_nothing():
    made = options()
    assert options("--device", "cpu", "--out", "/elsewhere", "--keep-checkpoints") == made
    assert all(reuse for _, reuse, _ in decisions(made, options("--device", "cpu")))


def test_a_changed_option_redoes_its_stage_and_the_later_ones_and_says_why():
    made = options()
    assert decisions(made, options("--epochs", "20")) == [
        ("cohort", True, "same options as the run that made it"),
        ("bundle", False, f"--epochs changed: {demo.EPOCHS} → 20"),
        ("prediction", False, "made again because the bundle is new")]
    redo = decisions(made, options("--cases", "12", "--seed", "3"))
    assert [reuse for _, reuse, _ in redo] == [False, False, False]
    assert redo[0][2] == f"--cases changed: {demo.TRAINING_CASES} → 12; --seed changed: 0 → 3"
    for flag, value in (("--classes", "paper"), ("--skull-strip", "deepbet"), ("--new-patients", "3")):
        assert not decisions(made, options(flag, value))[0][1], flag
    assert decisions(made, options("--lr", "0.01"))[1][2] == f"--lr changed: {demo.LEARNING_RATE} → 0.01"
    assert decisions(made, options("--input-size", "48"))[1][2] == "--input-size changed: 40 → 48"
    assert decisions(made, options("--widen-factor", "1"))[1][2] == f"--widen-factor changed: {demo.WIDEN_FACTOR} → 1.0"
    assert decisions(made, options("--occlusion-stride", "2"))[2] == ("prediction", False, "--occlusion-stride changed: 4 → 2")
    assert [r for _, r, _ in decisions(made, made)] == [True, True, True]


def test_missing_outputs_or_no_record_are_made_again(tmp_path):
    made = options()
    missing = decisions(made, made, {"cohort": True, "bundle": False, "prediction": True})
    assert missing[1] == ("bundle", False, "not made yet") and not missing[2][1]
    older = decisions({}, made)  # a demo folder written before the manifest existed
    assert not older[0][1] and MANIFEST_NAME in older[0][2]
    assert read_manifest(tmp_path) == {}
    write_manifest(tmp_path, made, training_started=made["bundle"])
    assert read_manifest(tmp_path) == {"format": 1, "stages": made, "training_started": made["bundle"]}
    (tmp_path / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    assert read_manifest(tmp_path) == {}


def test_checkpoints_go_and_logs_stay(tmp_path):
    for fold in range(2):
        (tmp_path / f"fold{fold}").mkdir()
        (tmp_path / f"fold{fold}" / "checkpoint.safetensors").write_bytes(b"x" * 1000)
        (tmp_path / f"fold{fold}" / "log.csv").write_text("epoch\n", encoding="utf-8")
    assert demo.remove_checkpoints(tmp_path) == 2000
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["log.csv", "log.csv"]
    assert demo.remove_checkpoints(tmp_path) == 0


def test_new_patients_and_cross_validation_are_put_plainly():
    rows = [{"true_label": t, "predicted_label": p} for t, p in
            [("recurrence", "recurrence")] * 5 + [("recurrence", "rice"), ("rice", "rice"), ("rice", "rice"),
                                                 ("rice", "recurrence")] + [("rice", "")]]
    lines = demo.new_patients_summary(rows)
    assert lines[0] == "9 new patients (never seen in training): 7 right (78 %); recurrence 5 of 6, rice 2 of 3."
    assert "commoner answer would be right on 6 of 9" in lines[1]
    assert lines[2].startswith("  1 new patient(s) failed")
    assert demo.new_patients_summary([{"true_label": "rice", "predicted_label": ""}])[0].startswith("none of the 1")
    metrics = {"macro_f1": {"mean": 0.61, "sd": 0.12, "n": 5}, "accuracy": {"mean": 0.63, "sd": 0.1, "n": 5},
               "auc": {"mean": 0.7, "sd": 0.2, "n": 5}}
    cv = demo.cross_validation_summary(metrics, 19)
    assert cv[0] == ("cross-validation over 5 folds of the 19 training patients: macro F1 0.61 ± 0.12, "
                     "accuracy 0.63, AUC 0.70")
    assert "0.5 = guessing" in cv[1]
    assert demo.cross_validation_summary({}, 19) == []
