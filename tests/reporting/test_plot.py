from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from compress.errors import UsageError
from compress.reporting.plot import latency_quality_plot

POINTS = [
    {"name": "original", "latency_ms": 0.40, "quality": 0.994, "quality_name": "accuracy"},
    {"name": "pruned", "latency_ms": 0.18, "quality": 0.981, "quality_name": "accuracy"},
    {"name": "pruned+int8", "latency_ms": 0.09, "quality": 0.975, "quality_name": "accuracy"},
]


def test_plot_writes_a_png_and_no_temp_file(tmp_path: Path) -> None:
    out = latency_quality_plot(POINTS, tmp_path / "latency_quality.png")
    assert out == tmp_path / "latency_quality.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["latency_quality.png"]
    pixels = imread(out)
    assert pixels.shape[:2] == (480, 640)
    # Points, labels and axes were drawn: the image is not one flat colour.
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10


def test_plot_refuses_points_it_cannot_draw(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least one"):
        latency_quality_plot([], tmp_path / "p.png")
    with pytest.raises(UsageError, match="latency_ms"):
        latency_quality_plot([{"name": "a", "quality": 1.0, "quality_name": "accuracy"}], tmp_path / "p.png")
    mixed = [POINTS[0], {**POINTS[1], "quality_name": "cosine"}]
    with pytest.raises(UsageError, match="one quality measure"):
        latency_quality_plot(mixed, tmp_path / "p.png")
    assert list(tmp_path.iterdir()) == []


def test_kd_curve_plot_draws_loss_and_held_out_figure(tmp_path: Path) -> None:
    from compress.reporting.plot import kd_curve_plot
    from compress.train import FitPoint

    history = [FitPoint(0, None, 0.5), FitPoint(50, 0.9, 0.8), FitPoint(100, 0.3, 0.95)]
    out = kd_curve_plot(history, tmp_path / "kd_curve.png", "accuracy")
    assert [p.name for p in tmp_path.iterdir()] == ["kd_curve.png"]
    pixels = imread(out)
    assert pixels.shape[:2] == (480, 640)
    # Two coloured lines: blue (loss) and orange (held-out) pixels are both present.
    rgb = (pixels[..., :3] * 255).round().astype(int).reshape(-1, 3)
    assert any((rgb == (31, 119, 180)).all(axis=1)) and any((rgb == (255, 127, 14)).all(axis=1))
