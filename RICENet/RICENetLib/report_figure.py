"""The report's overview figure: slices through the heatmap's peak (and the lesion), read the right way round.

A reader must be able to tell from the picture alone where each slice lies,
which side is the patient's left, what the colours mean and how large the
heatmap's values are. So the figure:

- has one row of axial, coronal and sagittal slices per point of interest: the
  heatmap's peak, the lesion's centre (when a lesion mask was given), else the
  dose maximum, else the volume's centre;
- names each slice's position in patient coordinates (``S 20.0 mm``: 20 mm
  superior of the scanner's origin; L/R, A/P, S/I, the same in LPS and RAS);
- is drawn in the **radiological convention** (the patient's left on the
  image's right; anterior at the top of an axial slice, superior at the top of
  coronal and sagittal ones, anterior on the left of a sagittal one), with the
  four sides marked on every panel;
- has a colour bar in the heatmap's own units (drop in the predicted class's
  probability when a box is occluded) over its real range, and a legend for
  the isodose lines instead of labels on them.

Images are SimpleITK images, whose physical coordinates are LPS (x to the
patient's left, y to posterior, z to superior).

>>> row = SliceRow("heatmap peak", (30, 25, 10), (-20.0, 10.0, 20.0))
>>> row.positions()
{'axial': 'S 20.0 mm', 'coronal': 'P 10.0 mm', 'sagittal': 'R 20.0 mm'}
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

DEFAULT_ISODOSE_GY = (50.0, 60.0)
PLANES = ("axial", "coronal", "sagittal")
CONVENTION = "radiological"
#: Heatmap values under this fraction of its maximum are not drawn (the MRI shows through).
HEAT_SHOWN_FROM = 0.2
ISODOSE_COLOURS = ("#00e5ff", "#ffffff", "#ffea00", "#76ff03")
LESION_COLOUR = "#ff4081"  # dashed
DPI = 110
WIDTH_IN = 12.0
ROW_IN = 3.7
BOTTOM_IN = 0.8  # the convention's line and the legend
#: (top, bottom, left, right) side markers of each plane in the radiological display.
SIDES = {"axial": ("A", "P", "R", "L"), "coronal": ("S", "I", "R", "L"), "sagittal": ("S", "I", "A", "P")}


def _signed(value: float, positive: str, negative: str) -> str:
    return f"{positive if value >= 0 else negative} {abs(value):.1f} mm"


@dataclass(frozen=True)
class SliceRow:
    """One row of the figure: why this point, its voxel on the display grid (z, y, x) and its LPS point in mm."""

    reason: str
    index_zyx: tuple[int, int, int]
    point_lps: tuple[float, float, float]

    def positions(self) -> dict[str, str]:
        """Each plane's position: the axial slice's height, the coronal's depth, the sagittal's side."""
        x, y, z = self.point_lps
        return {"axial": _signed(z, "S", "I"), "coronal": _signed(y, "P", "A"), "sagittal": _signed(x, "L", "R")}

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "point_lps_mm": [round(v, 2) for v in self.point_lps],
                "positions": self.positions()}


@dataclass
class Overview:
    """The PNG and what it shows, for the HTML page's text (the same numbers as in the picture)."""

    png: bytes
    rows: list[SliceRow]
    heat_range: tuple[float, float] | None = None  # (min, max) of the heatmap on the display grid
    heat_shown_from: float | None = None  # value under which the heatmap is not drawn
    heat_label: str = ""
    isodose_gy: list[float] = field(default_factory=list)  # the levels drawn in at least one panel
    size_px: tuple[int, int] = (0, 0)  # (width, height)
    lesion_outlined: bool = False  # the lesion mask's outline is in at least one panel


def display_grid(reference: sitk.Image) -> sitk.Image:
    """``reference`` itself when it is axis-aligned, else the axis-aligned box around it at its finest spacing."""
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    if np.allclose(direction, np.eye(3), atol=1e-6):
        return reference
    corners = [reference.TransformContinuousIndexToPhysicalPoint([c * (n - 1) for c, n in zip(corner, reference.GetSize())])
               for corner in np.ndindex(2, 2, 2)]
    low, high = np.min(corners, axis=0), np.max(corners, axis=0)
    spacing = min(reference.GetSpacing())
    grid = sitk.Image([int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(low, high)], sitk.sitkFloat32)
    grid.SetSpacing([spacing] * 3)
    grid.SetOrigin(tuple(float(v) for v in low))
    return grid


def on_grid(image: sitk.Image, grid: sitk.Image, interpolator: int = sitk.sitkLinear) -> np.ndarray:
    """``image`` resampled onto ``grid`` (identity direction) as a (z, y, x) float array."""
    return sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32))


def _row(reason: str, grid: sitk.Image, index_zyx: Sequence[int]) -> SliceRow:
    zyx = tuple(int(v) for v in index_zyx)
    point = grid.TransformIndexToPhysicalPoint((zyx[2], zyx[1], zyx[0]))
    return SliceRow(reason, zyx, tuple(float(v) for v in point))  # type: ignore[arg-type]


def peak_index(heat: np.ndarray) -> tuple[int, int, int]:
    """The heatmap's maximum (z, y, x); on a plateau (one occlusion box's value) its voxel nearest the plateau's centre,
    not its first corner."""
    from .dose_overlap import central_voxel

    return central_voxel(heat >= float(heat.max()) * (1 - 1e-4))  # type: ignore[return-value]


def choose_slices(grid: sitk.Image, heat: np.ndarray | None, gy: np.ndarray | None,
                  lesion_centre_lps: Sequence[float] | None = None) -> list[SliceRow]:
    """The rows to draw: through the heatmap's peak and the lesion's centre; else the dose maximum or the centre."""
    rows: list[SliceRow] = []
    if heat is not None and np.any(heat > 0):
        rows.append(_row("heatmap peak", grid, peak_index(heat)))
    if lesion_centre_lps is not None:
        index = grid.TransformPhysicalPointToContinuousIndex([float(v) for v in lesion_centre_lps])
        size = grid.GetSize()
        xyz = [int(np.clip(round(i), 0, n - 1)) for i, n in zip(index, size)]
        lesion = _row("lesion centre", grid, xyz[::-1])
        if not rows or rows[0].index_zyx != lesion.index_zyx:
            rows.append(lesion)
    if not rows and gy is not None and np.any(gy > 0):
        rows.append(_row("dose maximum", grid, np.unravel_index(int(np.argmax(gy)), gy.shape)))
    if not rows:
        rows.append(_row("volume centre", grid, [n // 2 for n in grid.GetSize()[::-1]]))
    return rows


def planes(volume: np.ndarray, index_zyx: Sequence[int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of an LPS (z, y, x) array, in the radiological display (row 0 at the top)."""
    z, y, x = index_zyx
    return [volume[z], np.flipud(volume[:, y, :]), np.flipud(volume[:, :, x])]


def _marker(volume_shape: Sequence[int], index_zyx: Sequence[int]) -> list[tuple[int, int]]:
    """(column, row) of the chosen point in each displayed plane."""
    z, y, x = index_zyx
    nz = volume_shape[0]
    return [(x, y), (x, nz - 1 - z), (y, nz - 1 - z)]


def _aspects(grid: sitk.Image) -> list[float]:
    """Row spacing over column spacing of each displayed plane, so a millimetre is as long both ways."""
    sx, sy, sz = grid.GetSpacing()
    return [sy / sx, sz / sx, sz / sy]


def figure_size_px(n_rows: int) -> tuple[int, int]:
    """The PNG's (width, height): a title band, one band per row, a legend band."""
    return int(round(WIDTH_IN * DPI)), int(round((1.0 + ROW_IN * n_rows + BOTTOM_IN) * DPI))


def overview(
    event: sitk.Image,
    reference: sitk.Image,
    heatmap: sitk.Image | None = None,
    dose: sitk.Image | None = None,
    isodose_gy: Sequence[float] = DEFAULT_ISODOSE_GY,
    title: str = "",
    lesion_centre_lps: Sequence[float] | None = None,
    heat_label: str = "the predicted class",
    lesion: sitk.Image | None = None,
) -> Overview:
    """The figure of a prediction; ``event`` must already lie on ``reference`` (the post-op grid).

    ``lesion`` (a mask in the reference frame) is outlined; ``lesion_centre_lps`` (default: its voxel nearest
    its centroid) gives the lesion's row.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    grid = display_grid(reference)
    mri = on_grid(event, grid)
    heat = on_grid(heatmap, grid) if heatmap is not None else None
    gy = on_grid(dose, grid) if dose is not None else None
    outline = on_grid(lesion, grid, sitk.sitkNearestNeighbor) if lesion is not None else None
    if outline is not None and lesion_centre_lps is None and outline.any():
        from .dose_overlap import central_voxel

        lesion_centre_lps = grid.TransformIndexToPhysicalPoint([int(v) for v in central_voxel(outline > 0)[::-1]])
    rows = choose_slices(grid, heat, gy, lesion_centre_lps)
    low, high = np.percentile(mri[mri > 0], [1, 99.5]) if np.any(mri > 0) else (0.0, 1.0)
    has_heat = heat is not None and float(heat.max()) > 0
    heat_max = float(heat.max()) if has_heat else 1.0
    drawn_levels: set[float] = set()
    drawn_lesion = False
    levels_all = sorted(float(v) for v in isodose_gy)
    colours = dict(zip(levels_all, ISODOSE_COLOURS * 4))

    width, height = figure_size_px(len(rows))
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="black")
    top = 1 - 1.0 / (height / DPI)
    bottom = BOTTOM_IN / (height / DPI)
    spec = fig.add_gridspec(len(rows), 4, width_ratios=[1, 1, 1, 0.045], left=0.01, right=0.9, top=top,
                            bottom=bottom, wspace=0.04, hspace=0.16)
    image = None
    aspects = _aspects(grid)
    for r, row in enumerate(rows):
        positions = row.positions()
        markers = _marker(mri.shape, row.index_zyx)
        for c, name in enumerate(PLANES):
            ax = fig.add_subplot(spec[r, c])
            ax.set_facecolor("black")
            ax.imshow(planes(mri, row.index_zyx)[c], cmap="gray", vmin=low, vmax=high, interpolation="bilinear",
                      aspect=aspects[c])
            if has_heat:
                plane = planes(heat, row.index_zyx)[c]
                image = ax.imshow(np.ma.masked_less_equal(plane, HEAT_SHOWN_FROM * heat_max), cmap="inferno", vmin=0,
                                  vmax=heat_max, alpha=0.7, interpolation="bilinear", aspect=aspects[c])
            if gy is not None:
                plane = planes(gy, row.index_zyx)[c]
                levels = [v for v in levels_all if plane.min() < v < plane.max()]
                if levels:
                    ax.contour(plane, levels=levels, colors=[colours[v] for v in levels], linewidths=1.0)
                    drawn_levels.update(levels)
            if outline is not None:
                plane = planes(outline, row.index_zyx)[c]
                if plane.min() < 0.5 < plane.max():
                    ax.contour(plane, levels=[0.5], colors=[LESION_COLOUR], linewidths=1.3, linestyles="dashed")
                    drawn_lesion = True
            ax.plot(*markers[c], marker="+", color="#00ff88", markersize=12, markeredgewidth=1.4)
            n_rows, n_cols = planes(mri, row.index_zyx)[c].shape
            top_side, bottom_side, left_side, right_side = SIDES[name]
            style = dict(color="#ffd54f", fontsize=10, fontweight="bold")  # inside the image's own edges
            ax.text(n_cols / 2, 0.5, top_side, ha="center", va="top", **style)
            ax.text(n_cols / 2, n_rows - 1.5, bottom_side, ha="center", va="bottom", **style)
            ax.text(0.5, n_rows / 2, left_side, ha="left", va="center", **style)
            ax.text(n_cols - 1.5, n_rows / 2, right_side, ha="right", va="center", **style)
            ax.set_title(f"{row.reason} · {name} · {positions[name]}", color="white", fontsize=9.5, pad=3)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    if image is not None:
        bar_ax = fig.add_subplot(spec[:, 3])
        bar = fig.colorbar(image, cax=bar_ax)
        bar.ax.tick_params(colors="white", labelsize=8)
        bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
        bar.set_label(f"drop in p({heat_label}) when occluded", color="white", fontsize=9.5)
        bar.ax.set_title(f"max\n{heat_max:.2g}\n= {100 * heat_max:.2g} pp", color="white", fontsize=8.5)
        bar.ax.axhline(HEAT_SHOWN_FROM * heat_max, color="#00ff88", linewidth=1.0)
        bar.outline.set_edgecolor("white")
    handles = [Line2D([], [], color=colours[v], linewidth=1.6, label=f"{v:g} Gy isodose") for v in sorted(drawn_levels)]
    missing = [v for v in levels_all if v not in drawn_levels]
    if missing and gy is not None:
        handles.append(Line2D([], [], linestyle="none",
                              label=f"isodose {', '.join(f'{v:g}' for v in missing)} Gy: not in these slices"))
    if drawn_lesion:
        handles.append(Line2D([], [], color=LESION_COLOUR, linewidth=1.3, linestyle="dashed", label="lesion mask"))
    handles.append(Line2D([], [], color="#00ff88", marker="+", linestyle="none", markersize=10, label="slice point"))
    if image is not None:
        handles.append(Line2D([], [], color="#00ff88", linewidth=1.0, label="heatmap drawn from (colour bar)"))
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.005, 0.0), ncol=len(handles), frameon=False,
               labelcolor="white", fontsize=9)
    fig.text(0.01, 0.5 * BOTTOM_IN / (height / DPI), "Radiological convention: the patient's left on the image's "
             "right. Slice positions in patient coordinates (mm; S/I, A/P, L/R of the scanner's origin).",
             color="#bbbbbb", fontsize=8.5, va="bottom")
    if title:
        fig.text(0.5, 1 - 0.12 / (height / DPI), "\n".join(textwrap.wrap(title, 125)[:3]), color="white", fontsize=10.5,
                 ha="center", va="top")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="black")
    plt.close(fig)
    heat_range = (float(heat.min()), float(heat.max())) if heat is not None else None
    return Overview(buffer.getvalue(), rows, heat_range, HEAT_SHOWN_FROM * heat_max if has_heat else None, heat_label,
                    sorted(drawn_levels), (width, height), drawn_lesion)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
