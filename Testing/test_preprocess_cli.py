"""``ricenet preprocess``: one case, a cohort, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.cli import main
from RICENetLib.image_io import write_image
from RICENetLib.preprocessing import PreprocessResult
from RICENetLib.synthetic import generate_case, write_case, write_cohort

FAST = ["--skull-strip", "none", "--spacing", "4", "--input-size", "48"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_case(generate_case("CLI", "recurrence", seed=4, size=56), tmp_path_factory.mktemp("cli") / "CLI")


def _single(files, out, *extra):
    return ["preprocess", "--postop", str(files["postop"]), "--event", str(files["event"]),
            "--dose", str(files["dose"]), "--out", str(out), *FAST, *extra]


def test_one_case_writes_the_documented_files(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_single(files, out)) == 0
    assert {p.name for p in out.iterdir()} == {"postop.nii.gz", "event.nii.gz", "dose.nii.gz", "brain_mask.nii.gz",
                                              "event_to_reference.tfm", "preprocess.json"}
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and "registration" in summary
    record = json.loads((out / "preprocess.json").read_text(encoding="utf-8"))
    assert record["parameters"]["skull_strip"] == "none" and record["parameters"]["input_size"] == 48
    assert sitk.ReadImage(str(out / "dose.nii.gz")).GetSize() == (48, 48, 48)
    truth = sitk.ReadTransform(str(files["postop"].parent / "truth" / "event_from_reference.tfm"))
    found = sitk.ReadTransform(str(out / "event_to_reference.tfm"))
    centre = np.array(record["model_geometry"]["origin"]) + 96.0
    assert np.linalg.norm(np.subtract(found.TransformPoint(tuple(centre)), truth.TransformPoint(tuple(centre)))) < 2.0
    assert main(_single(files, out)) == 2  # exists: refused
    assert "add --overwrite" in capsys.readouterr().err
    assert main(_single(files, out, "--overwrite")) == 0


def test_dose_unit_option(files, tmp_path, capsys):
    dose = sitk.ReadImage(str(files["dose"])) * 100.0
    files = dict(files, dose=write_image(dose, tmp_path / "dose_cgy.nii.gz"))
    assert main(_single(files, tmp_path / "a")) == 2
    assert "looks like cGy" in capsys.readouterr().err
    assert main(_single(files, tmp_path / "b", "--dose-unit", "cGy")) == 0
    loaded = PreprocessResult.load(tmp_path / "b")
    assert loaded.info["dose"]["unit_of_input"] == "cGy"


def test_input_size_as_three_numbers(files, tmp_path):
    out = tmp_path / "c"
    assert main(_single(files, out, "--input-size", "40,48,44")) == 0
    assert sitk.ReadImage(str(out / "postop.nii.gz")).GetSize() == (44, 48, 40)


def test_cohort_with_progress_resume_and_failures(tmp_path, capsys):
    csv = write_cohort(tmp_path / "cohort", cases=2, seed=3, size=48)
    out = tmp_path / "pre"
    assert main(["preprocess", "--cohort", str(csv), "--out", str(out), *FAST]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preprocessed"] == 2 and report["failed"] == []
    assert (out / "SYN001" / "preprocess.json").exists() and (out / "SYN002" / "event.nii.gz").exists()
    assert main(["preprocess", "--cohort", str(csv), "--out", str(out), *FAST]) == 0
    assert json.loads(capsys.readouterr().out)["already_done"] == 2
    # a broken dose in one case: that case fails, the other is done, the exit status says so
    broken = tmp_path / "cohort" / "SYN002" / "dose.nii.gz"
    write_image(sitk.ReadImage(str(broken)) * 100.0, broken)
    assert main(["preprocess", "--cohort", str(csv), "--out", str(tmp_path / "pre2"), *FAST]) == 2
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["preprocessed"] == 1 and report["failed"][0]["patient_id"] == "SYN002"
    assert "SYN002" in captured.err and "cGy" in captured.err


def test_argument_errors(files, tmp_path, capsys):
    assert main(["preprocess", "--postop", str(files["postop"]), "--out", str(tmp_path / "x")]) == 2
    assert "Missing --event, --dose" in capsys.readouterr().err
    assert main(["preprocess", "--cohort", "c.csv", "--postop", "p", "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["preprocess", "--input-size", "12,13", "--out", "x"])


def _escaping_cohort(tmp_path, files, patient: str):
    """A cohort table of one case whose patient_id tries to leave --out."""
    table = tmp_path / "escape.csv"
    table.write_text("patient_id,label,postop,event,dose\n"
                     f"{patient},rice,{files['postop']},{files['event']},{files['dose']}\n", encoding="utf-8")
    return table


@pytest.mark.parametrize("patient", ["../outside", "/ABSOLUTE"])
def test_cohort_id_cannot_write_outside_out(files, tmp_path, capsys, patient):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("mine")
    patient = patient.replace("/ABSOLUTE", str(tmp_path / "outside"))
    code = main(["preprocess", "--cohort", str(_escaping_cohort(tmp_path, files, patient)), "--out",
                 str(tmp_path / "out"), *FAST, "--overwrite"])
    assert code == 2 and f"line 2: patient_id '{patient}' is not usable as a folder name" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "outside").iterdir()] == ["keep.txt"] and not (tmp_path / "out").exists()


def test_cohort_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    csv = write_cohort(tmp_path / "cohort", cases=2, seed=3, size=48)
    out = tmp_path / "pre"
    (out / "SYN002").mkdir(parents=True)
    (out / "SYN002" / "notes.txt").write_text("a user's file")
    for extra in ([], ["--overwrite"]):  # without --overwrite: not ours; with it: still not ours
        assert main(["preprocess", "--cohort", str(csv), "--out", str(out), *FAST, *extra]) == 2
        error = capsys.readouterr().err
        assert str(out / "SYN002") in error and ("add --overwrite" in error if not extra else "notes.txt" in error)
        assert (out / "SYN002" / "notes.txt").read_text() == "a user's file"
        assert sorted(p.name for p in out.iterdir()) == ["SYN002"], "refused before any case was preprocessed"


def test_overwrite_replaces_only_a_folder_of_its_own_outputs(files, tmp_path, capsys):
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.docx").write_bytes(b"years of work")
    assert main(_single(files, out, "--overwrite")) == 2
    error = capsys.readouterr().err
    assert "holds thesis.docx, which ricenet preprocess did not write" in error and error.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["thesis.docx"]


@pytest.mark.parametrize("where, message", [
    ("file", "is a file, not a folder"),
    ("under_file", "cannot be made: {parent} is a file, not a folder"),
    ("/proc/ricenet-test-out", "cannot be written: No such file or directory"),
])
def test_unwritable_out_is_refused_before_the_work(files, tmp_path, capsys, monkeypatch, where, message):
    import RICENetLib.preprocessing as preprocessing

    monkeypatch.setattr(preprocessing, "preprocess_case", lambda *a, **k: pytest.fail("work began"))
    (tmp_path / "file").write_text("x")
    out = {"file": tmp_path / "file", "under_file": tmp_path / "file" / "out"}.get(where, where)
    assert main(_single(files, out)) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"ricenet preprocess: error: --out {out} ") and error.count("\n") == 1
    assert message.format(parent=tmp_path / "file") in error
