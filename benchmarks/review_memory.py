"""Benchmark: does review mode keep memory flat over a long list? (issue 24)

    python benchmarks/review_memory.py                         # 30 cases, 128³ volumes, 2 passes
    python benchmarks/review_memory.py --cases 30 --size 96 --passes 1

Makes a results folder in the layout ``ricenet predict --cohort`` writes: one
real prediction (the untrained tiny bundle, ``predict_case`` with an
occlusion map, on a synthetic case resampled to ``--size``³ voxels) is written
by the CLI's writer (``write_prediction``), then copied to ``--cases`` case
folders listed in a ``predictions.csv``. Every case points at the same three
input files: each show still reads them from disk into new volume nodes,
which is what would pile up. Then it walks the list on a slicer-core scene
with :class:`RICENetLib.review_scene.ReviewScene` (Next, ``--passes`` times
through), printing after every case the process's resident memory (RSS, from
/proc) and the scene's node count, and at the end the growth between the
first pass's 5th case and the last case.

Target: growth under one case's worth of voxels (3 inputs + heatmap), i.e. no
pile-up; the node count the same for every case.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_results(root: Path, cases: int, size: int) -> Path:
    """A results folder of ``cases`` copies of one real prediction on ``size``³ volumes."""
    import SimpleITK as sitk

    from RICENetLib.inference import predict_case
    from RICENetLib.prediction_outputs import write_prediction
    from RICENetLib.slicer_logic import untrained_bundle
    from RICENetLib.synthetic import generate_case

    case = generate_case("BENCH", "recurrence", seed=3, size=64)
    images = {}
    for name in ("postop", "event", "dose"):
        image = getattr(case, name)
        grid = sitk.Image([size] * 3, sitk.sitkFloat32)
        spacing = [s * n / size for s, n in zip(image.GetSpacing(), image.GetSize())]
        grid.SetSpacing(spacing)
        grid.SetOrigin(image.GetOrigin())
        grid.SetDirection(image.GetDirection())
        images[name] = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, 0.0)
        sitk.WriteImage(images[name], str(root / f"{name}.nrrd"))
    bundle = untrained_bundle(root / "bundle", n_folds=2, input_size=32, spacing_mm=6.0)
    prediction = predict_case(str(bundle), images["postop"], images["event"], images["dose"], occlusion="quick")
    results = root / "results"
    first = results / "CASE000"
    write_prediction(prediction, first, *(root / f"{m}.nrrd" for m in ("postop", "event", "dose")))
    ids = [f"CASE{i:03d}" for i in range(cases)]
    for case_id in ids[1:]:
        shutil.copytree(first, results / case_id)
    with open(results / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "predicted_label", "error"])
        writer.writerows([i, prediction.label, ""] for i in ids)
    return results


def walk(results: Path, passes: int) -> list[dict]:
    import slicer

    from RICENetLib.review import ReviewList
    from RICENetLib.review_scene import ReviewScene
    from RICENetLib.slicer_logic import ClassificationLogic, ClassificationSettings

    scene = slicer.vtkMRMLScene()
    for _ in range(3):
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        scene.AddNewNodeByClass("vtkMRMLSliceNode")
    view = ReviewScene(ClassificationLogic(scene))
    settings = ClassificationSettings()
    review = ReviewList.open(results)
    figures = []
    for round_ in range(passes):
        review.go(0)
        for index in range(len(review.cases)):
            case = review.current if index == 0 else review.next()
            start = time.perf_counter()
            shown = view.show(case, settings)
            if shown.error or shown.result is None:
                raise SystemExit(f"{case.case_id}: {shown.error or 'not shown from stored results'}")
            figures.append({"pass": round_ + 1, "case": case.case_id, "rss_mib": round(rss_mib(), 1),
                            "nodes": scene.GetNumberOfNodes(), "show_s": round(time.perf_counter() - start, 3)})
            print(f"pass {round_ + 1} {case.case_id}: RSS {figures[-1]['rss_mib']:7.1f} MiB, "
                  f"{figures[-1]['nodes']} nodes, shown in {figures[-1]['show_s']:.2f} s", flush=True)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--size", type=int, default=128, help="voxels along each axis of the three volumes")
    parser.add_argument("--passes", type=int, default=2, help="times through the list")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        results = make_results(Path(folder), args.cases, args.size)
        before = rss_mib()
        figures = walk(results, args.passes)
    case_mib = 4 * args.size ** 3 * 4 / 2 ** 20  # three float32 inputs and the float32 heatmap
    warm = figures[min(4, len(figures) - 1)]
    growth = figures[-1]["rss_mib"] - warm["rss_mib"]
    print(f"volumes {args.size}³ float32: one case's voxels {case_mib:.1f} MiB; RSS before the walk {before:.1f} MiB")
    print(f"RSS after case 5: {warm['rss_mib']:.1f} MiB, after case {len(figures)} ({args.passes} passes of "
          f"{args.cases}): {figures[-1]['rss_mib']:.1f} MiB; growth {growth:+.1f} MiB "
          f"({growth / case_mib:+.2f} cases' worth); node counts {sorted({f['nodes'] for f in figures})}")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "cases": args.cases, "passes": args.passes,
                                         "growth_mib": round(growth, 1), "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
