"""Real slice rendering: Slicer's own slice-view displayable managers, offscreen (trame-slicer, VTK EGL).

The event MRI sits under the registration transform in the background, the
heatmap (reference space) in the foreground, the isodose lines on top; the
test reads the rendered pixels to check that heatmap colours cover the lesion
and nothing far from it.

Run as a script to (re)make the extension's screenshot, or the README's picture of review mode::

    python Testing/test_rendering.py --screenshot Resources/Screenshot01.png
    python Testing/test_rendering.py --review --screenshot docs/review_case.png
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer")
pytest.importorskip("trame_slicer")

from RICENetLib import mrml  # noqa: E402


@dataclass
class Rendered:
    rgb: np.ndarray  # (height, width, 3) uint8, row 0 at the top
    lesion_xy: tuple[float, float]  # lesion centre in pixels (column, row from the top)
    mm_per_pixel: float


class OffscreenSlicer:
    """One offscreen Slicer application with a single axial slice view."""

    def __init__(self, width: int = 384, height: int = 384):
        from trame_slicer.core import SlicerApp
        from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition

        self.app = SlicerApp()
        self.app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
        self.view = self.app.view_manager.create_view(ViewLayoutDefinition.axial_view())
        self.scene = self.app.scene
        self.size = (width, height)

    def close(self) -> None:
        """Empty the scene without rendering again (avoids VTK pipeline errors at exit)."""
        self.view.set_render_blocked(True)
        self.scene.Clear(True)

    @property
    def slice_node(self):
        return self.view._view_node

    def show_case(self, event: sitk.Image, event_to_reference: sitk.Transform, heatmap: sitk.Image,
                  dose: sitk.Image | None = None, levels=(50.0, 60.0), style: mrml.HeatmapStyle | None = None):
        """Put a case in the scene the way the module's logic does; returns (event, heatmap, isodose) nodes."""
        event_node = mrml.image_to_volume(event, self.scene, name="event T1c")
        key = event_node.GetID()
        mrml.update_registration_transform(self.scene, event_to_reference, moving=event_node, key=key)
        heatmap_node = mrml.update_heatmap(self.scene, heatmap, background=event_node, key=key, style=style)
        isodose = None
        if dose is not None:
            dose_node = mrml.image_to_volume(dose, self.scene, name="dose")
            isodose = mrml.update_isodose(self.scene, dose_node, levels, key=key)
        return event_node, heatmap_node, isodose

    def render(self, focus_lps) -> Rendered:
        """Render the axial slice through ``focus_lps`` (fitted to the background) and grab its pixels."""
        from vtkmodules.util.numpy_support import vtk_to_numpy
        from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

        window = self.view.render_window()
        window.SetSize(*self.size)  # before fitting, or the picture is off-centre
        self.view.fit_view_to_content()
        ras = (-focus_lps[0], -focus_lps[1], focus_lps[2])
        mrml.jump_slice_views(self.scene, ras)
        self.view.render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.ReadFrontBufferOff()
        grab.SetInputBufferTypeToRGB()
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        rgb = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)[::-1].copy()
        xy_to_ras = mrml.numpy_matrix(self.slice_node.GetXYToRAS())
        x, y, _, _ = np.linalg.solve(xy_to_ras, np.array([*ras, 1.0]))
        mm = float(np.linalg.norm(xy_to_ras[:3, 0]))
        return Rendered(rgb, (float(x), float(height - 1 - y)), mm)


def coloured(rgb: np.ndarray, minimum: int = 30) -> np.ndarray:
    """Pixels with colour (the MRI is grey: R = G = B)."""
    rgb = rgb.astype(np.int16)
    return (rgb.max(axis=2) - rgb.min(axis=2)) >= minimum


def cyan_or_green(rgb: np.ndarray) -> np.ndarray:
    """Isodose outline pixels (cyan and green segments), not heatmap colours (red-dominant)."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return (g > 150) & (r < 120) & (g - r > 80)


def lesion_heatmap(case) -> sitk.Image:
    """A heatmap in reference space peaking on the lesion: what a good occlusion map looks like.

    (A stand-in for the engine's occlusion output, which has its own tests; here
    the question is only whether a map in reference space lands on the lesion
    on screen.)
    """
    lesion = sitk.Cast(case.lesion_mask, sitk.sitkFloat32)
    in_reference = sitk.Resample(lesion, case.postop, case.event_from_reference, sitk.sitkLinear, 0.0)
    smooth = sitk.SmoothingRecursiveGaussian(in_reference, 3.0)
    return smooth / float(sitk.GetArrayViewFromImage(smooth).max())


def distances_px(shape, centre_xy) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.hypot(cols - centre_xy[0], rows - centre_xy[1])


@pytest.fixture(scope="module")
def rendered_case(small_case):
    viewer = OffscreenSlicer()
    heatmap = lesion_heatmap(small_case)
    prescription = small_case.truth["prescription_gy"]
    levels = (0.8 * prescription, 0.95 * prescription)
    event_node, heatmap_node, isodose = viewer.show_case(small_case.event, small_case.event_from_reference, heatmap,
                                                          small_case.dose, levels=levels)
    focus = np.array(small_case.truth["lesion_centre_postop_mm"])
    yield viewer, focus, heatmap_node, isodose
    viewer.close()


def test_heatmap_colours_cover_the_lesion_and_nothing_far_away(rendered_case, tmp_path):
    viewer, focus, heatmap_node, isodose = rendered_case
    isodose.GetDisplayNode().SetVisibility(False)
    try:
        shot = viewer.render(focus)
    finally:
        isodose.GetDisplayNode().SetVisibility(True)
    from PIL import Image

    Image.fromarray(shot.rgb).save(tmp_path / "heatmap.png")
    colour = coloured(shot.rgb)
    distance_mm = distances_px(colour.shape, shot.lesion_xy) * shot.mm_per_pixel
    assert colour.sum() > 30, "no heatmap colours in the slice through the lesion"
    cx, cy = (int(round(v)) for v in shot.lesion_xy)
    assert colour[cy - 2 : cy + 3, cx - 2 : cx + 3].all(), "the lesion centre is not coloured"
    assert np.median(distance_mm[colour]) < 12.0
    assert not colour[distance_mm > 35.0].any(), "heatmap colours far from the lesion"
    # The MRI itself is visible around the heatmap (it is an overlay, not a replacement).
    grey = (~colour) & (distance_mm < 60.0) & (shot.rgb.max(axis=2) > 60)
    assert grey.sum() > 500


def test_without_the_heatmap_the_slice_is_grey(rendered_case):
    viewer, focus, heatmap_node, isodose = rendered_case
    composites = [viewer.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(viewer.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    assert composites and all(c.GetForegroundVolumeID() == heatmap_node.GetID() for c in composites)
    isodose.GetDisplayNode().SetVisibility(False)
    for composite in composites:
        composite.SetForegroundVolumeID(None)
    try:
        shot = viewer.render(focus)
    finally:
        for composite in composites:
            composite.SetForegroundVolumeID(heatmap_node.GetID())
        isodose.GetDisplayNode().SetVisibility(True)
    assert coloured(shot.rgb).sum() == 0
    assert (shot.rgb.max(axis=2) > 60).sum() > 5000  # the event MRI is there


def test_isodose_outlines_are_drawn(rendered_case):
    viewer, focus, heatmap_node, isodose = rendered_case
    shot = viewer.render(focus)
    outline = cyan_or_green(shot.rgb)
    assert outline.sum() > 40
    # Lines, not filled areas.
    assert outline.sum() < 0.05 * outline.size


# --------------------------------------------------------------------------- review mode


def review_results(folder: Path, case, bundle: str | Path, ids=("CASE1", "CASE2")) -> Path:
    """A results folder as ``ricenet predict --cohort`` writes it, for ``case`` under each of ``ids``.

    The prediction is the engine's (``predict_case`` with ``bundle``, no occlusion); its heatmap is the
    lesion stand-in of :func:`lesion_heatmap` (an untrained bundle's map would show nothing), and its
    registration the generator's ground truth, so the picture shows where the map lands, not what a model
    learnt. Written by the CLI's own writer.
    """
    import csv
    import shutil

    from RICENetLib.inference import predict_case
    from RICENetLib.prediction_outputs import write_prediction

    inputs = {}
    for name in ("postop", "event", "dose"):
        inputs[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(getattr(case, name), str(inputs[name]))
    prediction = predict_case(str(bundle), case.postop, case.event, case.dose)
    prediction.occlusion, prediction.event_to_reference = lesion_heatmap(case), case.event_from_reference
    results = folder / "results"
    write_prediction(prediction, results / ids[0], inputs["postop"], inputs["event"], inputs["dose"])
    for case_id in ids[1:]:
        shutil.copytree(results / ids[0], results / case_id)
    with open(results / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["patient_id", "error"]] + [[i, ""] for i in ids])
    return results


def show_in_review(viewer: "OffscreenSlicer", results: Path, position: int, levels: str = "50, 60"):
    """Open the list and show case ``position`` as the module's review mode does (stored results)."""
    from RICENetLib.review import ReviewList
    from RICENetLib.review_scene import ReviewScene
    from RICENetLib.slicer_logic import ClassificationLogic, ClassificationSettings

    if not hasattr(viewer, "review_scene"):
        viewer.review_scene = ReviewScene(ClassificationLogic(viewer.scene))
    review = ReviewList.open(results)
    settings = ClassificationSettings(isodose_levels=levels, heatmap_threshold=0.2, heatmap_opacity=0.65)
    return viewer.review_scene.show(review.go(position), settings)


def test_a_case_in_review_renders_its_stored_heatmap_and_replaces_the_last(small_case, tmp_path):
    from RICENetLib.slicer_logic import untrained_bundle

    bundle = untrained_bundle(tmp_path / "bundle", n_folds=2, input_size=32, spacing_mm=6.0)
    results = review_results(tmp_path, small_case, bundle)
    prescription = small_case.truth["prescription_gy"]
    levels = f"{0.8 * prescription:g}, {0.95 * prescription:g}"
    viewer = OffscreenSlicer()
    try:
        counts = []
        for position in (0, 1, 0):
            shown = show_in_review(viewer, results, position, levels)
            assert shown.result is not None and not shown.error
            counts.append(viewer.scene.GetNumberOfNodes())
        shot = viewer.render(np.array(small_case.truth["lesion_centre_postop_mm"]))
    finally:
        viewer.close()
    assert len(set(counts)) == 1, counts
    colour = coloured(shot.rgb) & ~cyan_or_green(shot.rgb)
    cx, cy = (int(round(v)) for v in shot.lesion_xy)
    assert colour[cy - 2 : cy + 3, cx - 2 : cx + 3].all(), "the stored heatmap is not on the lesion"
    assert cyan_or_green(shot.rgb).sum() > 40  # the isodose lines of the reloaded dose


def make_review_screenshot(path: Path, bundle: str | None = None, size=(900, 700)) -> Path:
    """The README's picture of a case in review: the second case of a two-case results folder, shown from
    its stored results (see :func:`review_results`) after the first, on a 1 mm synthetic head."""
    import tempfile

    from PIL import Image

    from RICENetLib.slicer_logic import untrained_bundle
    from RICENetLib.synthetic import generate_case

    case = None
    for attempt in range(40):  # as make_screenshot: a 60 Gy plan, the lesion in the high-dose region
        case = generate_case("Review", "recurrence", seed=7 + attempt, spacing_mm=1.0)
        if case.truth["prescription_gy"] == 60.0 and case.truth["lesion_dose_fraction_at_centre"] > 0.6:
            break
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        bundle = bundle or untrained_bundle(folder / "bundle", n_folds=2, input_size=32, spacing_mm=6.0)
        results = review_results(folder, case, bundle, ids=("P001", "P002"))
        viewer = OffscreenSlicer(*size)
        show_in_review(viewer, results, 0)
        show_in_review(viewer, results, 1)
        shot = viewer.render(np.array(case.truth["lesion_centre_postop_mm"]))
        viewer.close()
    Image.fromarray(shot.rgb).save(path, optimize=True)
    return path


# --------------------------------------------------------------------------- screenshot


def make_screenshot(path: Path, *, spacing_mm: float = 1.0, seed: int = 7, label: str = "recurrence",
                    bundle: str | None = None, occlusion: str = "standard", size=(900, 700)) -> Path:
    """Render the extension's screenshot: a synthetic case, heatmap over the event MRI, 50/60 Gy lines.

    With ``bundle`` (a trained model bundle) the heatmap and the registration
    come from the engine (``predict_case`` with occlusion); without, the map is
    the lesion stand-in of :func:`lesion_heatmap` and the registration the
    generator's ground truth.
    """
    from PIL import Image

    from RICENetLib.synthetic import generate_case

    case = None
    for attempt in range(40):  # a 60 Gy plan with the lesion in the slice through the high-dose region
        case = generate_case("Screenshot", label, seed=seed + attempt, spacing_mm=spacing_mm)
        if case.truth["prescription_gy"] == 60.0 and case.truth["lesion_dose_fraction_at_centre"] > 0.6:
            break
    heatmap, registration = lesion_heatmap(case), case.event_from_reference
    if bundle:
        from RICENetLib.inference import predict_case

        prediction = predict_case(bundle, case.postop, case.event, case.dose, occlusion=occlusion)
        heatmap, registration = prediction.occlusion, prediction.event_to_reference
        print(prediction.to_dict()["label"], prediction.agreement)
    viewer = OffscreenSlicer(*size)
    viewer.show_case(case.event, registration, heatmap, case.dose, levels=(50.0, 60.0),
                     style=mrml.HeatmapStyle(threshold=0.2, opacity=0.65))
    shot = viewer.render(np.array(case.truth["lesion_centre_postop_mm"]))
    viewer.close()
    Image.fromarray(shot.rgb).save(path, optimize=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG to write")
    parser.add_argument("--review", action="store_true",
                        help="the README's picture of a case in review mode (stored results) instead")
    parser.add_argument("--bundle", help="a trained model bundle: use its occlusion map (default: a lesion stand-in)")
    parser.add_argument("--occlusion", default="standard", help="occlusion preset with --bundle (quick, standard, fine)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--spacing", type=float, default=1.0)
    args = parser.parse_args(argv)
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    if args.review:
        print(make_review_screenshot(args.screenshot, bundle=args.bundle))
        return 0
    print(make_screenshot(args.screenshot, spacing_mm=args.spacing, seed=args.seed, bundle=args.bundle,
                          occlusion=args.occlusion))
    return 0


if __name__ == "__main__":
    sys.exit(main())
