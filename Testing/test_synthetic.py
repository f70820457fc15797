"""The synthetic cohort: valid, deterministic, with truth that matches the images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk

from RICENetLib.cli import main
from RICENetLib.cohort import load_cohort
from RICENetLib.errors import InputError
from RICENetLib.image_io import read_image
from RICENetLib.synthetic import generate_case, write_cohort


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synth_cli_writes_a_valid_deterministic_cohort(tmp_path, capsys):
    args = ["synth", "--cases", "10", "--size", "32", "--seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == 10 and summary["labels"] == {"recurrence": 6, "rice": 4}
    cases = load_cohort(tmp_path / "a" / "cohort.csv")
    assert len(cases) == 10
    for case in cases:
        grids = [read_image(case.paths[m]) for m in ("postop", "event", "dose")]
        assert len({(g.GetSize(), g.GetSpacing(), g.GetOrigin()) for g in grids}) == 3, "three different grids"
        truth_dir = case.paths["postop"].parent / "truth"
        truth = json.loads((truth_dir / "truth.json").read_text(encoding="utf-8"))
        assert truth["written_label"] == case.label
        assert truth["prescription_gy"] in (60.0, 40.05)
        for name in ("brain_mask.nii.gz", "lesion_mask.nii.gz", "event_from_reference.tfm"):
            assert (truth_dir / name).exists()
    assert (tmp_path / "a" / "NOTICE-MNI-ICBM152.txt").read_text(encoding="utf-8").startswith("The synthetic anatomy")
    # the same files again, made by two worker processes
    assert main(args + ["--workers", "2", "--out", str(tmp_path / "b")]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert main(["synth", "--cases", "2", "--size", "32", "--seed", "4", "--out", str(tmp_path / "c")]) == 0
    assert _digest(tmp_path / "c")["SYN001/event.nii.gz"] != _digest(tmp_path / "a")["SYN001/event.nii.gz"]


def test_synth_refuses_to_overwrite(tmp_path, capsys):
    assert main(["synth", "--cases", "1", "--size", "32", "--out", str(tmp_path)]) == 0
    assert main(["synth", "--cases", "1", "--size", "32", "--out", str(tmp_path)]) == 2
    assert "already holds a cohort" in capsys.readouterr().err


def _world_to_index(image: sitk.Image, point) -> np.ndarray:
    return np.array(image.TransformPhysicalPointToContinuousIndex([float(v) for v in point]))


def test_truth_transform_maps_the_lesion_between_scans(small_case):
    """The lesion centre in post-op space maps through event_from_reference onto the event lesion."""
    truth = small_case.truth
    mapped = small_case.event_from_reference.TransformPoint(truth["lesion_centre_postop_mm"])
    assert np.allclose(mapped, truth["lesion_centre_event_mm"], atol=1e-6)
    lesion = sitk.GetArrayFromImage(small_case.lesion_mask)
    assert lesion.sum() > 0
    zyx = np.argwhere(lesion).mean(0)
    centroid = small_case.lesion_mask.TransformContinuousIndexToPhysicalPoint(zyx[::-1].tolist())
    assert np.linalg.norm(np.subtract(centroid, truth["lesion_centre_event_mm"])) < 15.0
    # The event image is brighter on the lesion's enhancing voxels than on the brain on average.
    event = sitk.GetArrayFromImage(small_case.event).astype(float)
    assert event[lesion > 0].max() > np.median(event[event > 0])


def test_poses_and_dose_are_realistic(small_case):
    truth = small_case.truth
    assert 3.0 <= truth["relative_rotation_deg"] <= 12.0 + 1e-6
    assert 3.0 <= truth["relative_translation_mm"] <= 15.0 + 1e-6
    dose = sitk.GetArrayFromImage(small_case.dose)
    assert dose.max() == pytest.approx(truth["prescription_gy"], rel=0.1)
    assert (dose > 0.95 * truth["prescription_gy"]).mean() < 0.25, "high dose is local, not everywhere"
    assert min(small_case.dose.GetSpacing()) > max(small_case.postop.GetSpacing()), "dose grid is coarser"
    brain = sitk.GetArrayFromImage(small_case.brain_mask)
    assert 0.1 < brain.mean() < 0.5
    postop = sitk.GetArrayFromImage(small_case.postop).astype(float)
    assert (postop[brain == 0] > 0.5 * np.percentile(postop[brain > 0], 90)).sum() > 0, "a bright scalp outside the brain"


def test_class_rule_lesion_placement():
    """RICE lesions sit in the high-dose region away from the wall; typical recurrences on the wall."""
    for seed in range(8):
        for label in ("rice", "recurrence"):
            truth = generate_case("X", label, seed=seed, size=32).truth
            variant, wall = truth["lesion_variant"], truth["lesion_distance_to_cavity_wall_mm"]
            assert variant.startswith(label)
            if label == "rice":
                assert truth["lesion_dose_fraction_at_centre"] > 0.85
            if variant == "recurrence-wall":
                assert 0 < wall < 4
            elif variant == "rice-white-matter":
                assert wall > 6
            elif variant == "recurrence-distant":
                assert 8 < wall < 25


def test_label_noise_flips_some_labels():
    flipped = [generate_case("X", "rice", seed=s, size=24, label_noise=0.5).label for s in range(12)]
    assert 0 < flipped.count("recurrence") < 12


def test_bad_arguments():
    with pytest.raises(InputError, match="worker processes"):
        write_cohort("unused", cases=2, workers=0)
    with pytest.raises(InputError, match="unknown label"):
        generate_case("X", "necrosis", seed=0, size=32)
    with pytest.raises(InputError, match="too small"):
        generate_case("X", "rice", seed=0, size=8)


def test_distinct_classes_skull_stripped_and_the_lesion_distance(tmp_path):
    """The demo's easier cohort: typical lesions only, larger recurrences, 60 Gy plans, brain-only MRIs; and the
    distance from a post-op point to the lesion, through the case's true transform."""
    from RICENetLib.synthetic import write_case
    from RICENetLib.synthetic_truth import hottest_points, lesion_distance_mm, read_truth

    volumes = {}
    for label in ("recurrence", "rice"):
        case = generate_case("X", label, seed=4, size=40, classes="distinct", skull_stripped=True)
        assert case.truth["lesion_variant"] in ("recurrence-wall", "rice-white-matter")
        assert case.truth["prescription_gy"] == 60.0 and case.truth["classes"] == "distinct"
        brain = sitk.GetArrayFromImage(case.brain_mask) > 0
        postop = sitk.GetArrayFromImage(case.postop)
        assert postop[~brain].max() == 0 and postop[brain].mean() > 0
        volumes[label] = float(sitk.GetArrayFromImage(case.lesion_mask).sum())
        if label == "recurrence":  # the same case with its skull: only the voxels outside the brain differ
            with_skull = generate_case("X", label, seed=4, size=40, classes="distinct")
            assert sitk.GetArrayFromImage(with_skull.postop)[~brain].max() > 0
            assert with_skull.truth["lesion_centres_anatomy_mm"] == case.truth["lesion_centres_anatomy_mm"]
    assert volumes["recurrence"] > 3 * volumes["rice"]

    write_case(case, tmp_path / "X")
    centre = read_truth(tmp_path / "X")["lesion_centre_postop_mm"]
    assert lesion_distance_mm([centre], tmp_path / "X") == 0.0
    far = np.array(centre) + [0.0, 0.0, 40.0]
    assert 30.0 < lesion_distance_mm([far], tmp_path / "X") <= 40.0
    assert lesion_distance_mm([far, centre], tmp_path / "X") == 0.0  # the nearest of the points counts
    heat = sitk.Image(case.postop.GetSize(), sitk.sitkFloat32)
    heat.CopyInformation(case.postop)
    index = heat.TransformPhysicalPointToIndex(far.tolist())
    heat[index] = 0.3
    peak = hottest_points(heat)
    assert len(peak) == 1 and np.linalg.norm(peak[0] - far) < max(heat.GetSpacing())
    with pytest.raises(InputError, match="flat"):
        hottest_points(heat * 0)
    with pytest.raises(InputError, match="not a synthetic case"):
        lesion_distance_mm(centre, tmp_path)
    with pytest.raises(InputError, match="class setting 'easy' is unknown"):
        generate_case("X", "rice", seed=0, size=32, classes="easy")
