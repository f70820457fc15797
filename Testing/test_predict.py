"""``ricenet predict`` end to end: a real (tiny) bundle, a synthetic case, every output file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RICENetLib.bundle import BundleFold, write_bundle
from RICENetLib.cli import main
from RICENetLib.cohort import Case, write_cohort_csv
from RICENetLib.inference import predict_case
from RICENetLib.model import build_network, default_architecture
from RICENetLib.preprocessing import PreprocessParameters
from RICENetLib.report_figure import peak_index
from RICENetLib.synthetic import generate_case, write_case


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """Two untrained folds at 32³ / 6 mm: enough to exercise every code path quickly."""
    architecture = default_architecture(3)
    folds = []
    for index in range(2):
        torch.manual_seed(index)
        network = build_network(architecture)
        folds.append(BundleFold(index, ("A", "B"), ("C",), {"macro_f1": 0.5}, state_dict=network.state_dict()))
    preprocessing = PreprocessParameters(spacing_mm=6.0, input_size=32, skull_strip="none").to_dict()
    return write_bundle(tmp_path_factory.mktemp("bundle") / "tiny", folds, modalities=("postop", "event", "dose"),
                        architecture=architecture, input_size=(32, 32, 32), preprocessing=preprocessing, seed=0)


@pytest.fixture(scope="module")
def case_paths(tmp_path_factory) -> dict[str, Path]:
    case = generate_case("P1", "rice", seed=2, size=48)
    return write_case(case, tmp_path_factory.mktemp("case") / "P1")


def test_predict_cli_writes_every_output(tiny_bundle, case_paths, tmp_path, capsys):
    out = tmp_path / "result"
    args = ["predict", "--bundle", str(tiny_bundle), "--postop", str(case_paths["postop"]), "--event",
            str(case_paths["event"]), "--dose", str(case_paths["dose"]), "--out", str(out), "--device", "cpu"]
    assert main(args + ["--occlusion", "quick", "--per-modality", "--occlusion-mask", "16", "--occlusion-stride", "16",
                        "--occlusion-precision", "float32", "--case-id", "P1"]) == 0
    assert "of 2 folds, mean p =" in capsys.readouterr().out
    prediction = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
    assert prediction["label"] in ("recurrence", "rice")
    assert set(prediction["probabilities"]) == {"recurrence", "rice"}
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction["agreement"] in ("1/2", "2/2") and len(prediction["folds"]) == 2
    assert prediction["bundle_id"].startswith("ricenet-postop+event+dose-")
    assert prediction["occlusion"]["forward_passes"] > 0
    assert prediction["occlusion"]["precision"] == "float32"  # float16 on a CPU: test_occlusion_precision.py, tiny
    assert prediction["occlusion"]["mask_size"] in (16, [16, 16, 16]) and prediction["occlusion"]["stride"] in (16, [16, 16, 16])
    heatmap = sitk.ReadImage(str(out / "occlusion.nii.gz"))
    postop = sitk.ReadImage(str(case_paths["postop"]))
    assert heatmap.GetSize() == postop.GetSize()
    assert np.allclose(heatmap.GetOrigin(), postop.GetOrigin(), atol=1e-3)
    assert np.any(sitk.GetArrayViewFromImage(heatmap) != 0)
    for modality in ("postop", "event", "dose"):
        assert sitk.ReadImage(str(out / f"occlusion_{modality}.nii.gz")).GetSize() == postop.GetSize()
    assert (out / "overview.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert prediction["verdict"] in page
    # The report's slices go through the written heatmap's peak, named in mm; its range is the map's own.
    assert prediction["case_id"] == "P1" and "<th>Case</th><td>P1</td>" in page
    values = sitk.GetArrayFromImage(heatmap)
    first = prediction["overview"]["slices"][0]
    peak_lps = heatmap.TransformIndexToPhysicalPoint([int(v) for v in peak_index(values)[::-1]])
    assert first["reason"] == "heatmap peak" and first["point_lps_mm"] == pytest.approx(peak_lps, abs=0.01)
    assert first["positions"]["axial"] in page
    assert prediction["overview"]["heatmap_range"] == pytest.approx([values.min(), values.max()], rel=1e-4)
    # An existing result is never overwritten by accident, and nothing is half-written.
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert json.loads((out / "prediction.json").read_text(encoding="utf-8")) == prediction
    assert main(args + ["--overwrite"]) == 0
    assert not (out / "occlusion.nii.gz").exists(), "a run without --occlusion leaves no stale heatmap"
    assert main(args + ["--per-modality", "--overwrite"]) == 2
    assert "--per-modality need(s) --occlusion" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folders left behind"


def test_prediction_is_deterministic(tiny_bundle, case_paths):
    a = predict_case(tiny_bundle, case_paths["postop"], case_paths["event"], case_paths["dose"], device="cpu")
    b = predict_case(tiny_bundle, case_paths["postop"], case_paths["event"], case_paths["dose"], device="cpu")
    assert a.to_dict()["folds"] == b.to_dict()["folds"]
    assert a.event_to_reference is not None and a.reference is not None


def test_cohort_batch_mode(tiny_bundle, case_paths, tmp_path, capsys):
    cohort = write_cohort_csv(tmp_path / "cohort.csv", [Case("P1", "rice", case_paths), Case("P2", None, case_paths)])
    assert main(["predict", "--bundle", str(tiny_bundle), "--cohort", str(cohort), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv", encoding="utf-8")))
    assert [r["patient_id"] for r in rows] == ["P1", "P2"]
    assert rows[0]["true_label"] == "rice" and rows[1]["true_label"] == ""
    correct = int(rows[0]["predicted_label"] == "rice")  # the summary scores the labelled case only
    assert f"(1 of 2 cases labelled): {correct} correct (accuracy {correct:.3f})" in capsys.readouterr().out
    assert (tmp_path / "out" / "P2" / "report.html").exists()


def test_bad_invocations_get_clear_messages(tiny_bundle, case_paths, tmp_path, capsys):
    assert main(["predict", "--bundle", str(tmp_path / "nope"), "--postop", "a", "--event", "b", "--dose", "c",
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", "--bundle", str(tiny_bundle), "--postop", str(case_paths["postop"]),
                 "--out", str(tmp_path / "o")]) == 2
    assert "Give --postop, --event and --dose" in capsys.readouterr().err
    assert main(["predict", "--bundle", str(tiny_bundle), "--postop", str(case_paths["postop"]), "--event",
                 str(case_paths["event"]), "--dose", str(case_paths["dose"]), "--out", str(tmp_path / "o"),
                 "--occlusion", "ultra"]) == 2
    assert "Unknown occlusion preset 'ultra'" in capsys.readouterr().err
    assert main(["predict", "--bundle", str(tiny_bundle), "--cohort", str(tmp_path / "cohort.csv"), "--case-id", "P1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--case-id is for one case" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, warned", [(set(), True), ({"avx2", "avx512_fp16"}, False)])
def test_float16_on_a_cpu_without_native_support_is_warned_about(tiny_bundle, tmp_path, caplog, capsys, monkeypatch,
                                                                 flags, warned):
    """Emulated float16 is ~100x slower than float32: said before the work (which fails here on a missing file)."""
    import RICENetLib.cpu_half_precision as cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    assert main(["predict", "--bundle", str(tiny_bundle), "--postop", str(tmp_path / "none.nii.gz"), "--event", "e",
                 "--dose", "d", "--out", str(tmp_path / "o"), "--device", "cpu", "--occlusion", "quick",
                 "--occlusion-precision", "float16"]) == 2
    assert ("float16 on the CPU: this CPU has no native float16 arithmetic (AVX-512 FP16 or AMX-FP16)" in caplog.text) is warned
    assert "does not exist" in capsys.readouterr().err


def _single(bundle, case_paths, out) -> list[str]:
    return ["predict", "--bundle", str(bundle), "--postop", str(case_paths["postop"]), "--event",
            str(case_paths["event"]), "--dose", str(case_paths["dose"]), "--out", str(out), "--device", "cpu"]


@pytest.mark.parametrize("where, message", [
    ("file", "is a file, not a folder"),
    ("under_file", "cannot be made: {parent} is a file, not a folder"),
    ("/proc/ricenet-test-out", "cannot be written: No such file or directory"),
    ("full", "already exists and is not empty; choose another or add --overwrite"),
    ("foreign", "holds notes.txt, which ricenet predict did not write"),
])
def test_out_is_checked_before_the_work(tiny_bundle, case_paths, tmp_path, capsys, monkeypatch, where, message):
    """Minutes of preprocessing and occlusion must not end in 'cannot write': --out is probed first."""
    import RICENetLib.inference as inference

    monkeypatch.setattr(inference, "predict_case", lambda *a, **k: pytest.fail("work began"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "prediction.json").write_text("{}")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("a user's file")
    out = {"file": tmp_path / "file", "under_file": tmp_path / "file" / "out", "full": tmp_path / "full",
           "foreign": tmp_path / "foreign"}.get(where, where)
    extra = ["--overwrite"] if where == "foreign" else []
    assert main(_single(tiny_bundle, case_paths, out) + extra) == 2
    error = capsys.readouterr().err
    assert error.startswith("ricenet predict: error: ") and str(out) in error and error.count("\n") == 1
    assert message.format(parent=tmp_path / "file") in error
    assert (tmp_path / "foreign" / "notes.txt").exists() and (tmp_path / "full" / "prediction.json").exists()


def test_cohort_goes_on_past_a_failing_case(tiny_bundle, case_paths, tmp_path, capsys):
    """One bad case must not cost the others their results nor the table its rows."""
    broken = dict(case_paths, dose=tmp_path / "dose_cgy.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(case_paths["dose"])) * 100.0, str(broken["dose"]))
    cohort = write_cohort_csv(tmp_path / "cohort.csv", [Case("BAD", "rice", broken), Case("GOOD", None, case_paths)])
    out = tmp_path / "out"
    assert main(["predict", "--bundle", str(tiny_bundle), "--cohort", str(cohort), "--out", str(out),
                 "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    rows = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    assert [r["patient_id"] for r in rows] == ["BAD", "GOOD"]
    assert "looks like cGy" in rows[0]["error"] and rows[0]["predicted_label"] == ""
    assert rows[1]["error"] == "" and rows[1]["predicted_label"] in ("recurrence", "rice")
    assert (out / "GOOD" / "prediction.json").exists() and not (out / "BAD").exists()
    assert "1 of 2 cases failed (BAD)" in captured.err and "1 of 2 cases classified" in captured.out


def test_full_disk_while_writing_is_one_line_and_leaves_nothing(tiny_bundle, case_paths, tmp_path):
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk: the writes fail with an OSError mid-file."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))

    out = tmp_path / "out"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "RICENetLib.cli", *_single(tiny_bundle, case_paths, out)[:-2],
                           "--device", "cpu"], preexec_fn=limit, env=env, capture_output=True, encoding="utf-8", timeout=600)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"ricenet predict: error: Could not write {out}: File too large." and "Traceback" not in done.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
