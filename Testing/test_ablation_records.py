"""benchmarks/ablation_records.py: the ablation table read back from committed per-fold logs."""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path

import pytest

from RICENetTrainingLib.ablation import COMBINATIONS, combination_name

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation_records.py"
FIELDS = ["fold", "epoch", "val_macro_f1", "val_auc", "kept"]


def _script():
    spec = importlib.util.spec_from_file_location("ablation_records", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_log(path: Path, fold: int, f1s: list[float], epochs: list[int] | None = None) -> None:
    best = -1.0
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for epoch, f1 in zip(epochs or range(1, len(f1s) + 1), f1s):
            writer.writerow({"fold": fold, "epoch": epoch, "val_macro_f1": f1, "val_auc": f1 + 0.01, "kept": f1 > best})
            best = max(best, f1)


def _record(root: Path, name: str, fold: int, logs: dict[str, list[float]], folds_text: str = '{"seed": 0}') -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "folds.json").write_text(folds_text)
    for combo, f1s in logs.items():
        _write_log(folder / f"{combo}.csv", fold, f1s)
    return folder


def _row(output: str, combo: tuple[str, ...]) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(f"| {combination_name(combo)} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_mean_and_sd_over_folds_kept_and_last_epochs(tmp_path, capsys):
    a = _record(tmp_path, "a-ablation-fold0", 0, {"event": [0.5, 0.9, 0.8, 0.7]})
    b = _record(tmp_path, "b-ablation-fold1", 1, {"event": [0.6, 0.7, 1.0, 0.9]})
    _script().main(["--last-epochs", "2", str(a), str(b)])
    out = capsys.readouterr().out
    # Kept epoch: 0.9 (fold 0) and 1.0 (fold 1); last 2 epochs: 0.75 and 0.95; AUC 0.01 above each.
    assert _row(out, ("event",)) == ["MRI event only", "0, 1", "0.950 ± 0.071", "0.850 ± 0.141", "0.860 ± 0.141"]
    assert _row(out, ("dose",))[1:] == ["none", "—", "—", "—"]


def test_refuses_folders_with_different_folds(tmp_path):
    a = _record(tmp_path, "a", 0, {"event": [0.5]})
    b = _record(tmp_path, "b", 1, {"event": [0.5]}, folds_text='{"seed": 1}')
    with pytest.raises(SystemExit, match="different folds.json"):
        _script().main([str(a), str(b)])


def test_refuses_a_fold_recorded_twice(tmp_path):
    a = _record(tmp_path, "a", 2, {"postop": [0.5]})
    b = _record(tmp_path, "b", 2, {"postop": [0.6]})
    with pytest.raises(SystemExit, match="fold 2 of postop is recorded twice"):
        _script().main([str(a), str(b)])


def test_refuses_a_log_with_a_repeated_epoch(tmp_path):
    folder = _record(tmp_path, "a", 0, {})
    _write_log(folder / "event.csv", 0, [0.5, 0.6, 0.6, 0.7], epochs=[1, 2, 2, 3])
    with pytest.raises(SystemExit, match=r"event\.csv: the training log should hold epochs 1 to 4 once each"):
        _script().main([str(folder)])


def test_refuses_a_folder_without_folds(tmp_path):
    folder = _record(tmp_path, "a", 0, {"event": [0.5]})
    (folder / "folds.json").unlink()
    with pytest.raises(SystemExit, match="No folds.json"):
        _script().main([str(folder)])


def test_the_committed_records_read_back(tmp_path, capsys):
    """Every committed fold's logs pass the checks, and every row of the table has all five folds:
    the docs' five-fold ablation table is read from these files."""
    records = sorted((SCRIPT.parent / "records").glob("*ablation-fold*"))
    if not records:
        pytest.fail("no ablation records committed under benchmarks/records")
    _script().main([])
    out = capsys.readouterr().out
    for combo in COMBINATIONS:
        assert _row(out, combo)[1].split(", ") == ["0", "1", "2", "3", "4"], combo
    # A copy of one folder under a second name is refused: the same fold twice.
    shutil.copytree(records[0], tmp_path / "copy")
    with pytest.raises(SystemExit, match="recorded twice"):
        _script().main([str(records[0]), str(tmp_path / "copy")])
