"""The latency-vs-quality plot: one annotated point per model, PNG, written atomically.

The figure is drawn on matplotlib's Agg canvas directly, without pyplot, so no global backend or
figure registry is touched by a library call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from compress.atomic import atomic_path
from compress.errors import UsageError

POINT_KEYS = ("name", "latency_ms", "quality", "quality_name")


def latency_quality_plot(points: Sequence[dict[str, Any]], path: str | os.PathLike, latency_label: str = "latency (ms)") -> Path:
    """Plot each point's `quality` against its `latency_ms`, labelled with its `name`; one quality
    measure per plot (`quality_name` is the y label). The latency axis starts at zero, so a small
    difference looks small."""
    _check_points(points)
    figure = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    latencies = [float(p["latency_ms"]) for p in points]
    qualities = [float(p["quality"]) for p in points]
    axes.scatter(latencies, qualities, color="tab:blue", zorder=2)
    for index, (point, x, y) in enumerate(zip(points, latencies, qualities)):
        # Alternate labels above and below, so models that measure the same stay readable.
        offset = (5, 5) if index % 2 == 0 else (5, -14)
        axes.annotate(str(point["name"]), (x, y), xytext=offset, textcoords="offset points", fontsize=9)
    axes.set_xlabel(latency_label)
    axes.set_ylabel(points[0]["quality_name"])
    axes.set_title(f"{points[0]['quality_name']} vs latency")
    axes.grid(True, alpha=0.3, zorder=0)
    # Room on the right so the last label is not clipped.
    axes.margins(x=0.15, y=0.1)
    axes.set_xlim(left=0, right=max(latencies) * 1.2)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def _check_points(points: Sequence[dict[str, Any]]) -> None:
    if not points:
        raise UsageError("plot points", "none", "give at least one model with a latency and a quality")
    for point in points:
        missing = [key for key in POINT_KEYS if key not in point]
        if missing:
            raise UsageError("plot point", point, f"add {', '.join(missing)}")
    names = sorted({str(p["quality_name"]) for p in points})
    if len(names) > 1:
        raise UsageError("plot quality names", names, "plot one quality measure at a time")


def latency_batch_plot(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """p50 latency per item against batch size: one line per (model, threads), from bench rows."""
    figure = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for model, threads in dict.fromkeys((r["model"], r["threads"]) for r in rows):
        line = sorted((r["batch"], r["p50_ms"] / r["batch"]) for r in rows if (r["model"], r["threads"]) == (model, threads))
        axes.plot([b for b, _ in line], [ms for _, ms in line], marker="o", label=f"{model}, {threads} thread(s)")
    axes.set_xscale("log", base=2)
    batches = sorted({r["batch"] for r in rows})
    axes.set_xticks(batches, [str(b) for b in batches])
    axes.set_ylim(bottom=0)
    axes.set_xlabel("batch size")
    axes.set_ylabel("p50 latency per item (ms)")
    axes.set_title("onnxruntime latency per item")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def kd_curve_plot(history: Sequence[Any], path: str | os.PathLike, metric_name: str | None) -> Path:
    """The training loss (left axis, log scale) and the held-out figure (right axis) against the
    step, from `fit`'s history points (`step`, `loss`, `metric`)."""
    figure = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes = figure.add_subplot()
    losses = [(p.step, p.loss) for p in history if p.loss is not None]
    loss_axes.plot([s for s, _ in losses], [v for _, v in losses], color="tab:blue", marker=".", label="training loss")
    if losses and min(v for _, v in losses) > 0:
        loss_axes.set_yscale("log")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("training loss (mean since the previous point)", color="tab:blue")
    loss_axes.grid(True, alpha=0.3)
    metrics = [(p.step, p.metric) for p in history if p.metric is not None]
    if metrics and metric_name:
        metric_axes = loss_axes.twinx()
        metric_axes.plot([s for s, _ in metrics], [v for _, v in metrics], color="tab:orange", marker="o", label=f"held-out {metric_name}")
        metric_axes.set_ylabel(f"held-out {metric_name}", color="tab:orange")
    loss_axes.set_title("distillation: loss and held-out quality per step")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)
