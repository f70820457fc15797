"""Output-folder checks: a probe that leaves nothing behind, and replacement only of a command's own files."""

from __future__ import annotations

import pytest

from RICENetLib.output_folder import OutputError, check_replaceable, check_writable, writing


def test_probe_of_a_new_folder_leaves_nothing_behind(tmp_path):
    check_writable(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "result.json").write_text("{}")
    check_writable(tmp_path / "kept")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["result.json"]


def test_replaceable_only_with_overwrite_and_only_own_files(tmp_path):
    own = {"prediction.json", "report.html"}.__contains__
    check_replaceable(tmp_path / "new", own, overwrite=False, command="predict")  # nothing there: fine
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "prediction.json").write_text("{}")
    with pytest.raises(OutputError, match="add --overwrite"):
        check_replaceable(tmp_path / "old", own, overwrite=False, command="predict")
    check_replaceable(tmp_path / "old", own, overwrite=True, command="predict")
    for name in ("a", "b", "c", "d", "e"):
        (tmp_path / "old" / name).write_text("mine")
    with pytest.raises(OutputError, match=r"holds a, b, c and 2 more, which ricenet predict did not write"):
        check_replaceable(tmp_path / "old", own, overwrite=True, command="predict")


def test_writing_names_the_folder_of_an_os_error(tmp_path):
    with pytest.raises(OutputError, match=f"Could not write {tmp_path}: No space left on device."):
        with writing(tmp_path):
            raise OSError(28, "No space left on device")
    with pytest.raises(KeyError):  # not an operating-system error: untouched
        with writing(tmp_path):
            raise KeyError("bug")


def test_demo_checks_its_out_first(tmp_path, capsys):
    from RICENetLib.cli import main

    (tmp_path / "file").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "file" / "demo")]) == 2
    assert f"--out {tmp_path / 'file' / 'demo'} cannot be made: {tmp_path / 'file'} is a file" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
