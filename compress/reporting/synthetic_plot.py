"""Pictures of a synthetic set: the samples as an image grid, and how well the inversion matched
the teacher's BatchNorm statistics (per layer) and covered its classes. PNG on matplotlib's Agg
canvas, written atomically (see plot.py)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from compress.atomic import atomic_path


def sample_grid(images: torch.Tensor, labels: torch.Tensor, path: str | os.PathLike, per_class: int = 8) -> Path:
    """Up to `per_class` samples of each class, one row per class, each image scaled to its own
    range (the inputs live in a standardised space) and titled by the teacher's class."""
    classes = sorted(set(labels.tolist()))
    columns = max(1, min(per_class, max(int((labels == c).sum()) for c in classes)))
    figure = Figure(figsize=(1.1 * columns + 0.6, 1.1 * len(classes) + 0.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(classes), columns, squeeze=False)
    for row, cls in enumerate(classes):
        picked = images[labels == cls][:columns]
        for col in range(columns):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(str(cls), rotation=0, labelpad=10, fontsize=9)
            if col < len(picked):
                ax.imshow(_displayable(picked[col]), cmap="gray" if picked.shape[1] == 1 else None)
            else:
                ax.axis("off")
    figure.suptitle("synthetic samples by teacher class", fontsize=10)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def _displayable(image: torch.Tensor):
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low).clamp_min(1e-8)
    return scaled[0].numpy() if scaled.shape[0] == 1 else scaled[:3].permute(1, 2, 0).numpy()


def inversion_plot(layer_names: Sequence[str], errors: dict[str, Sequence[float]], class_counts: Sequence[int], path: str | os.PathLike) -> Path:
    """Left: per BN layer, the relative error of the batch statistics (series in `errors`, e.g.
    mean/var before and after), log scale. Right: how many samples the teacher puts in each class."""
    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, width_ratios=[2.2, 1])
    positions = range(len(layer_names))
    for label, values in errors.items():
        left.plot(positions, values, marker="o", markersize=3, label=label)
    left.set_yscale("log")
    left.set_xticks(list(positions), [_short(n) for n in layer_names], rotation=90, fontsize=7)
    left.set_ylabel("|batch stat - running stat| / |running stat|")
    left.set_title("BN-statistics error per layer")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    right.bar(range(len(class_counts)), class_counts, color="tab:blue")
    right.axhline(sum(class_counts) / max(1, len(class_counts)), color="gray", linestyle="--", linewidth=1, label="balanced")
    right.set_xticks(range(len(class_counts)), [str(c) for c in range(len(class_counts))] if len(class_counts) <= 20 else [])
    right.set_xlabel("teacher class")
    right.set_ylabel("samples")
    right.set_title("class coverage")
    right.legend(fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]
