"""Training curves as PNG: loss and macro F1 per epoch, training and validation, one figure per fold."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from RICENetLib.atomic import atomic_path


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str,
                 selected_epoch: int | None = None) -> Path:
    """Write ``path`` (PNG, atomically): loss on the left, macro F1 on the right, the kept epoch marked."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state (safe inside Slicer)

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    loss_axes, f1_axes = figure.subplots(1, 2)
    for axes, key, label in ((loss_axes, "loss", "cross-entropy loss"), (f1_axes, "macro_f1", "macro F1")):
        axes.plot(epochs, [row.get(f"train_{key}") for row in history], label="training (augmented)", color="tab:blue")
        axes.plot(epochs, [row.get(f"val_{key}") for row in history], label="validation", color="tab:orange")
        if selected_epoch is not None:
            axes.axvline(selected_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept (epoch {selected_epoch})")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    f1_axes.set_ylim(-0.02, 1.02)
    f1_axes.legend(loc="lower right", fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_reliability(raw: Sequence[dict[str, Any]], calibrated: Sequence[dict[str, Any]] | None,
                     calibration: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``path`` (PNG, atomically): the reliability diagram of the out-of-fold probabilities, before and after.

    ``raw`` and ``calibrated``: :func:`RICENetLib.calibration.reliability_bins`
    rows; the diagonal is perfect calibration and each point is labelled with
    its number of patients, since a bin of two patients says little.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5), dpi=100)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    series = [(raw, "raw", "tab:orange", calibration["ece_before"], calibration["brier_before"])]
    if calibrated is not None:
        series.append((calibrated, f"calibrated (T = {calibration['temperature']:.2f})", "tab:blue",
                       calibration["ece_after"], calibration["brier_after"]))
    for rows, name, colour, ece, brier in series:
        x, y = [r["confidence"] for r in rows], [r["accuracy"] for r in rows]
        axes.plot(x, y, marker="o", color=colour, label=f"{name}: ECE {ece:.3f}, Brier {brier:.3f}")
        for row in rows:
            axes.annotate(str(row["n"]), (row["confidence"], row["accuracy"]), textcoords="offset points",
                          xytext=(4, 4), fontsize="x-small", color=colour)
    axes.set_xlim(0.45 if all(r["low"] >= 0.4 for r in raw) else 0.0, 1.0)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("confidence (top probability)")
    axes.set_ylabel("accuracy")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    axes.set_title(f"Out-of-fold reliability, {calibration['n_patients']} patients")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
