"""DICOM in, DICOM out: a DICOM cohort trains a tiny bundle; ``predict --dicom-out`` writes a Parametric Map, a
Segmentation and a TID 1500 SR that dciodvfy (dicom3tools) accepts and that say what ``prediction.json`` says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from RICENetLib.cli import main
from RICENetLib.cohort import load_cohort
from RICENetLib.dicom_export import SCHEME, DicomSources, dicom_sources, structured_report
from RICENetLib.preprocessing import PreprocessParameters
from dicom_data import DICOM_PREPROCESSING, dciodvfy
from training_data import tiny_architecture

PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
#: dciodvfy's messages about the local coding scheme (it knows only the registered ones): expected, not errors.
LOCAL_SCHEME_WARNING = f"Unrecognized defined term <{SCHEME}>"


@pytest.fixture(scope="module")
def trained_bundle(dicom_cohort, dicom_preprocessed, tmp_path_factory) -> Path:
    """Two folds of a narrow resnet18 trained for one epoch on the DICOM cohort's preprocessed cases."""
    import torch

    from RICENetTrainingLib.training import TrainingParameters, train_ensemble

    torch.set_num_threads(1)
    params = TrainingParameters(n_folds=2, epochs=1, batch_size=2, augment=False, device="cpu",
                                architecture=tiny_architecture())
    out = tmp_path_factory.mktemp("dicom_bundle") / "bundle"
    preprocessing = PreprocessParameters.from_dict(DICOM_PREPROCESSING).to_dict()
    train_ensemble(load_cohort(dicom_cohort), out, params, preprocessing=preprocessing,
                   load=lambda case: dicom_preprocessed[case.patient_id].stack(),
                   folds_file=out.parent / "folds.json")
    return out


@pytest.fixture(scope="module")
def exported(dicom_cohort, small_cohort, trained_bundle, tmp_path_factory):
    """``ricenet predict --dicom-out`` on the first case, with the heatmap and the lesion (drawn on the event MRI)."""
    case = load_cohort(dicom_cohort)[0]
    lesion = small_cohort.parent / case.patient_id / "truth" / "lesion_mask.nii.gz"
    root = tmp_path_factory.mktemp("dicom_out")
    args = ["predict", "--bundle", str(trained_bundle), "--postop", str(case.paths["postop"]), "--event",
            str(case.paths["event"]), "--dose", str(case.paths["dose"]), "--out", str(root / "result"),
            "--dicom-out", str(root / "dicom"), "--device", "cpu", "--occlusion", "quick", "--occlusion-mask", "16",
            "--occlusion-stride", "16", "--occlusion-precision", "float32", "--lesion", str(lesion),
            "--lesion-space", "event"]
    assert main(args) == 0
    data = json.loads((root / "result" / "prediction.json").read_text(encoding="utf-8"))
    return case, data, root


def test_every_dicom_output_is_valid(exported):
    _, _, root = exported
    files = sorted((root / "dicom").iterdir())
    assert [f.name for f in files] == ["heatmap.dcm", "regions.dcm", "report.dcm"]
    for path in files:
        errors, warnings = dciodvfy(path)
        assert not errors, f"{path.name}: {errors}"
        assert all(LOCAL_SCHEME_WARNING in w for w in warnings), f"{path.name}: {warnings}"


def _postop_slices(case) -> list:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(case.paths["postop"].iterdir())]
    return sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))


def _same_patient_and_study_new_series(ds, postop, case) -> None:
    assert ds.PatientID == postop.PatientID and ds.StudyInstanceUID == postop.StudyInstanceUID
    inputs = {pydicom.dcmread(next(case.paths[r].iterdir()), stop_before_pixels=True).SeriesInstanceUID
              for r in ("postop", "event")} | {pydicom.dcmread(case.paths["dose"], stop_before_pixels=True).SeriesInstanceUID}
    assert ds.SeriesInstanceUID not in inputs


def test_heatmap_parametric_map_matches_the_nifti_heatmap(exported):
    case, data, root = exported
    pm = hd.imread(root / "dicom" / "heatmap.dcm")
    assert pm.SOPClassUID == PARAMETRIC_MAP_STORAGE
    slices = _postop_slices(case)
    _same_patient_and_study_new_series(pm, slices[0], case)
    assert pm.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == slices[0].SeriesInstanceUID
    heatmap = sitk.ReadImage(str(root / "result" / "occlusion.nii.gz"))
    # highdicom orders the frames its own way: each frame is placed by its position, as a viewer places it.
    positions = np.array([f.PlanePositionSequence[0].ImagePositionPatient for f in pm.PerFrameFunctionalGroupsSequence],
                         dtype=float)
    order = np.argsort(positions[:, 2])
    assert np.allclose(positions[order], [[float(v) for v in s.ImagePositionPatient] for s in slices], atol=1e-3)
    assert np.allclose(positions[order[0]], heatmap.GetOrigin(), atol=1e-3)
    values = pm.pixel_array
    assert values.dtype == np.float32 and np.any(values != 0)
    assert np.allclose(values[order], sitk.GetArrayFromImage(heatmap), atol=1e-7)
    shared = pm.SharedFunctionalGroupsSequence[0]
    assert np.allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], heatmap.GetSpacing()[1::-1])
    mapping = shared.RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"  # UCUM: no unit (a probability difference)
    assert data["occlusion"]["target_class"] == data["label"]


def test_regions_segmentation_matches_the_dose_figures(exported):
    case, data, root = exported
    seg = hd.seg.segread(root / "dicom" / "regions.dcm")
    slices = _postop_slices(case)
    _same_patient_and_study_new_series(seg, slices[0], case)
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    levels = data["dose_overlap"]["levels"]
    assert labels == [f"{100 * lv['level']:g} % isodose ({lv['dose_gy']:.1f} Gy)" for lv in levels] + ["lesion"]
    masks = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in slices])
    assert masks.shape == (len(slices), slices[0].Rows, slices[0].Columns, len(labels))
    ml = np.prod([float(v) for v in slices[0].PixelSpacing]) * float(slices[0].SliceThickness) / 1000.0
    # The regions where the dose is: the RTDOSE resampled onto the post-op grid by SimpleITK alone.
    postop, rtdose = sitk.ReadImage([str(p) for p in sorted(case.paths["postop"].iterdir())]), pydicom.dcmread(case.paths["dose"])
    dose = sitk.GetImageFromArray(rtdose.pixel_array.astype(np.float32) * float(rtdose.DoseGridScaling))
    dose.SetOrigin([float(v) for v in rtdose.ImagePositionPatient])
    dose.SetSpacing([float(rtdose.PixelSpacing[1]), float(rtdose.PixelSpacing[0]), float(rtdose.GridFrameOffsetVector[1])])
    gy = sitk.GetArrayFromImage(sitk.Resample(dose, postop, sitk.Transform(), sitk.sitkLinear, 0.0))
    for k, level in enumerate(levels):
        assert masks[..., k].sum() * ml == pytest.approx(level["volume_ml"], rel=1e-4)
        expected = gy >= level["dose_gy"] - 1e-3
        assert np.mean(masks[..., k].astype(bool) != expected) < 1e-3 and expected.any()
    assert masks[..., -1].sum() * ml == pytest.approx(data["dose_overlap"]["lesion"]["volume_ml"], rel=1e-4)
    assert masks[..., -1].sum() > 0


def _code(sequence) -> str:
    """A code sequence's value (highdicom reads codes back as CodedConcept, pydicom as a plain item)."""
    code = sequence[0]
    return str(getattr(code, "value", None) or code.CodeValue)


def _numbers(item, group: str = "", out: dict | None = None) -> dict:
    """(tracking identifier, concept code) -> value for every NUM item; CODE items' values as their codes."""
    out = {} if out is None else out
    for child in getattr(item, "ContentSequence", []):
        name = _code(child.ConceptNameCodeSequence) if "ConceptNameCodeSequence" in child else ""
        if child.ValueType == "TEXT" and name == "112039":  # Tracking Identifier
            group = child.TextValue
        if child.ValueType == "NUM":
            out[(group, name)] = float(child.MeasuredValueSequence[0].NumericValue)
        elif child.ValueType == "CODE":
            out[(group, name)] = _code(child.ConceptCodeSequence)
        elif child.ValueType == "TEXT":
            out[(group, name, child.TextValue)] = child.TextValue
        _numbers(child, group, out)
    return out


def test_report_says_what_prediction_json_says(exported, trained_bundle):
    case, data, root = exported
    sr = hd.sr.srread(root / "dicom" / "report.dcm")
    slices = _postop_slices(case)
    _same_patient_and_study_new_series(sr, slices[0], case)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    items = _numbers(sr)
    for name, p in data["probabilities"].items():
        assert items[("ensemble", f"p-{name}")] == pytest.approx(p, abs=1e-9)
    recurrence = codes.SCT.RecurrenceOfTumor.value
    assert items[("ensemble", "verdict")] == (recurrence if data["label"] == "recurrence" else data["label"])
    assert items[("ensemble", "votes")] == data["votes"][data["label"]]
    for fold in data["folds"]:
        for name, p in fold["probabilities"].items():
            assert items[(f"fold {fold['fold']}", f"p-{name}")] == pytest.approx(p, abs=1e-9)
    for gate in data["quality"]["gates"]:
        assert items[("quality gates", f"gate-{gate['name']}-state")] == f"state-{gate['state']}"
        if gate["value"] is not None:
            assert items[("quality gates", f"gate-{gate['name']}")] == pytest.approx(gate["value"], rel=1e-9)
    texts = {key[2] for key in items if len(key) == 3}
    bundle = json.loads((trained_bundle / "bundle.json").read_text(encoding="utf-8"))
    assert data["bundle_sha256"] == bundle["bundle_sha256"] and f"bundle_sha256={bundle['bundle_sha256']}" in texts
    assert f"bundle_id={data['bundle_id']}" in texts
    # The evaluated series are the evidence: the post-op study's in Current Requested Procedure Evidence, the event's.
    referenced = {s.SeriesInstanceUID for e in (*sr.CurrentRequestedProcedureEvidenceSequence,
                                                *getattr(sr, "PertinentOtherEvidenceSequence", []))
                  for s in e.ReferencedSeriesSequence}
    sources = dicom_sources(case.paths["postop"], case.paths["event"], case.paths["dose"])
    assert referenced == {sources.postop[0].SeriesInstanceUID, sources.event[0].SeriesInstanceUID,
                          sources.dose.SeriesInstanceUID}


def test_calibrated_probability_goes_into_the_report(exported):
    case, data, _ = exported
    sources = dicom_sources(case.paths["postop"], case.paths["event"], case.paths["dose"])
    calibrated = {"recurrence": 0.625, "rice": 0.375}
    items = _numbers(structured_report({**data, "calibrated_probability": calibrated}, DicomSources(
        sources.postop, sources.event, sources.dose), "1.2.826.0.1.3680043.8.498.5"))
    assert items[("ensemble", "calibrated-p-recurrence")] == 0.625 and items[("ensemble", "calibrated-p-rice")] == 0.375


def test_dicom_out_refuses_nifti_inputs_before_the_work(small_cohort, trained_bundle, tmp_path, capsys):
    case = load_cohort(small_cohort)[0]
    code = main(["predict", "--bundle", str(trained_bundle), "--postop", str(case.paths["postop"]), "--event",
                 str(case.paths["event"]), "--dose", str(case.paths["dose"]), "--out", str(tmp_path / "result"),
                 "--dicom-out", str(tmp_path / "dicom"), "--device", "cpu"])
    assert code == 2
    error = capsys.readouterr().err
    assert "--dicom-out needs DICOM inputs" in error and str(case.paths["postop"]) in error
    assert not (tmp_path / "result").exists() and not (tmp_path / "dicom").exists()  # refused before the work


def test_slicer_logic_exports_dicom_for_volumes_loaded_from_dicom(dicom_cohort, trained_bundle, tmp_path):
    """The module's *Export to DICOM* on slicer-core: volumes as Slicer's DICOM module loads them."""
    import slicer

    from RICENetLib import mrml
    from RICENetLib.errors import InputError
    from RICENetLib.image_io import read_image
    from RICENetLib.slicer_logic import ClassificationLogic, ClassificationSettings

    case = load_cohort(dicom_cohort)[1]
    scene = slicer.vtkMRMLScene()
    database: dict[str, str] = {}  # SOP Instance UID -> file, as slicer.dicomDatabase.fileForInstance answers
    nodes = {}
    for role in ("postop", "event", "dose"):
        nodes[role] = mrml.image_to_volume(read_image(case.paths[role]), scene, name=f"{case.patient_id} {role}")
        files = sorted(case.paths[role].iterdir()) if case.paths[role].is_dir() else [case.paths[role]]
        uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
        database.update(zip(uids, map(str, files)))
        nodes[role].SetAttribute(mrml.DICOM_INSTANCES_ATTRIBUTE, " ".join(uids))
    logic = ClassificationLogic(scene)
    # No heatmap here (the CLI test checks the Parametric Map): the same writer, and occlusion is the slow part.
    settings = ClassificationSettings(bundle=str(trained_bundle), skull_strip="none", occlusion="none", device="cpu")
    job = logic.prepare(nodes["postop"], nodes["event"], nodes["dose"], settings)
    prediction = logic.compute(job)
    paths = logic.export_dicom(job, prediction, tmp_path / "dicom", database.get)
    assert sorted(paths) == ["regions", "report"]  # no heatmap, no Parametric Map
    seg = hd.seg.segread(paths["regions"])
    assert seg.PatientID == case.patient_id and seg.FrameOfReferenceUID == pydicom.dcmread(
        case.paths["dose"], stop_before_pixels=True).FrameOfReferenceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence][-1].startswith("95 % isodose")
    items = _numbers(hd.sr.srread(paths["report"]))
    assert items[("ensemble", f"p-{prediction.label}")] == pytest.approx(prediction.probabilities[prediction.label])
    # A volume that did not come from the DICOM database cannot give the results a patient and a study.
    nodes["event"].RemoveAttribute(mrml.DICOM_INSTANCES_ATTRIBUTE)
    with pytest.raises(InputError, match="event MRI .* was not loaded from Slicer's DICOM database"):
        logic.export_dicom(job, prediction, tmp_path / "again", database.get)
    assert not (tmp_path / "again").exists()


def test_dicom_out_replaces_only_its_own_files(exported, trained_bundle, tmp_path, capsys):
    case, _, root = exported
    dicom = shutil.copytree(root / "dicom", tmp_path / "dicom")
    args = ["predict", "--bundle", str(trained_bundle), "--postop", str(case.paths["postop"]), "--event",
            str(case.paths["event"]), "--dose", str(case.paths["dose"]), "--out", str(tmp_path / "result"),
            "--dicom-out", str(dicom), "--device", "cpu"]
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    (dicom / "mine.txt").write_text("a user's file", encoding="utf-8")
    assert main(args + ["--overwrite"]) == 2 and "did not write" in capsys.readouterr().err
    assert (dicom / "mine.txt").exists() and not (tmp_path / "result").exists()  # refused before the work
