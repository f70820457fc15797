"""Cohort tables: valid tables load; every kind of bad table names the file and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from RICENetLib.cohort import load_cohort, write_cohort_csv
from RICENetLib.errors import InputError


@pytest.fixture()
def images(tmp_path) -> Path:
    for patient in ("P1", "P2"):
        for modality in ("postop", "event", "dose"):
            (tmp_path / patient).mkdir(exist_ok=True)
            (tmp_path / patient / f"{modality}.nii.gz").write_bytes(b"x")
    return tmp_path


def _table(folder: Path, text: str) -> Path:
    path = folder / "cohort.csv"
    path.write_text(text)
    return path


GOOD = "patient_id,label,postop,event,dose\nP1,recurrence,P1/postop.nii.gz,P1/event.nii.gz,P1/dose.nii.gz\nP2,RICE,P2/postop.nii.gz,P2/event.nii.gz,P2/dose.nii.gz\n"


def test_valid_table_resolves_paths_relative_to_the_csv(images):
    cases = load_cohort(_table(images, GOOD))
    assert [c.patient_id for c in cases] == ["P1", "P2"]
    assert [c.label for c in cases] == ["recurrence", "rice"]
    assert cases[1].paths["dose"] == (images / "P2" / "dose.nii.gz").resolve()
    assert [c.label_index for c in cases] == [0, 1]


@pytest.mark.parametrize(
    "text, message",
    [
        ("patient_id,label,postop,event\nP1,rice,P1/postop.nii.gz,P1/event.nii.gz\n", "lacks the column"),
        (GOOD.replace("RICE", "necrosis"), "unknown label 'necrosis'"),
        (GOOD.replace("P2,RICE", "P1,RICE"), "patient P1 appears more than once"),
        (GOOD.replace("P2/dose.nii.gz", "P2/missing.nii.gz"), "missing.nii.gz does not exist"),
        (GOOD.replace(",P2/event.nii.gz", ","), "no event image"),
        ("patient_id,label,postop,event,dose\n", "lists no patients"),
    ],
)
def test_bad_tables(images, text, message):
    path = _table(images, text)
    with pytest.raises(InputError, match=message) as error:
        load_cohort(path)
    assert str(path) in str(error.value)


def test_line_number_in_message(images):
    path = _table(images, GOOD.replace("RICE", "unknown"))
    with pytest.raises(InputError, match="line 3"):
        load_cohort(path)


def test_missing_cohort(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_cohort(tmp_path / "nope.csv")


def test_folder_per_patient(images):
    (images / "P1" / "label.txt").write_text("recurrence\n")
    (images / "P2" / "label.txt").write_text("rice")
    cases = load_cohort(images)
    assert {c.patient_id: c.label for c in cases} == {"P1": "recurrence", "P2": "rice"}
    (images / "P2" / "label.txt").unlink()
    with pytest.raises(InputError, match="P2: no label.txt"):
        load_cohort(images)
    assert load_cohort(images, require_labels=False)[1].label is None
    (images / "P1" / "dose.nrrd").write_bytes(b"x")
    with pytest.raises(InputError, match="several dose images"):
        load_cohort(images, require_labels=False)


def test_written_table_reloads(images, tmp_path):
    cases = load_cohort(_table(images, GOOD))
    out = write_cohort_csv(tmp_path / "elsewhere" / "copy.csv", cases)
    assert "../P1/postop.nii.gz" in out.read_text(encoding="utf-8")
    assert load_cohort(out) == cases


@pytest.mark.parametrize("patient", ["../escape", "/tmp/abs", ".", "..", ".hidden", "a/b", "a\\b", "P 1", "NUL",
                                     "com1.txt", "x" * 65, "é1"])
def test_patient_ids_that_are_not_safe_folder_names_are_refused(images, patient):
    """An id names OUT/<patient_id>/: '../x' or an absolute path would write (and replace) outside --out."""
    path = _table(images, GOOD.replace("P2,RICE", f"{patient},RICE"))
    with pytest.raises(InputError, match="line 3: patient_id '.*' is not usable as a folder name") as error:
        load_cohort(path)
    assert patient in str(error.value) and str(path) in str(error.value)


def test_patient_ids_differing_only_in_case_are_refused(images):
    """On macOS and Windows P1/ and p1/ are one folder: the second case would replace the first one's outputs."""
    with pytest.raises(InputError, match="patients P1 and p1 differ only in upper/lower case"):
        load_cohort(_table(images, GOOD.replace("P2,RICE", "p1,RICE")))
    (images / "p2").mkdir()
    for modality in ("postop", "event", "dose"):
        (images / "p2" / f"{modality}.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="Cohort folder .*patients P2 and p2 differ only"):
        load_cohort(images, require_labels=False)


def test_folder_cohort_sub_folder_names_are_checked(images):
    (images / "P 3").mkdir()
    with pytest.raises(InputError, match="sub-folder P 3: patient_id 'P 3' is not usable as a folder name"):
        load_cohort(images, require_labels=False)
