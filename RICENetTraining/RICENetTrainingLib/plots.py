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
