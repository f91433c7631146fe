from __future__ import annotations

from compress.loading.checkpoint import load
from compress.measure.profile import op_type_ms
from compress.onnx.export import export_onnx


def test_time_by_operator_type_of_a_real_graph(tmp_path):
    model = load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),))
    times = op_type_ms(export_onnx(model, tmp_path / "m.onnx").path, calls=5, warmup=1)
    assert "Conv" in times and all(ms >= 0 for ms in times.values())
    assert list(times.values()) == sorted(times.values(), reverse=True)
    assert not list(tmp_path.glob("*.json"))  # the profiler's file stays out of the folder
