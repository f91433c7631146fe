"""The PT2E Q/DQ tidy: a graph shaped as torch.onnx.export(dynamo=True) writes a converted PT2E
module (weights quantized on every call, Q -> Clip -> DQ) computes the same values after it, with
the weight stored as int8 and no Clip left, so onnxruntime fuses it into an integer kernel."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compress.quant.qdq_tidy import tidy_qdq


def _pt2e_like_conv(path, clip_low: int = -128) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    w_scale = (np.abs(weight).reshape(8, -1).max(axis=1) / 127).astype(np.float32)
    inits = [
        numpy_helper.from_array(weight, "w"), numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(8, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(clip_low, np.int8), "lo"), numpy_helper.from_array(np.array(127, np.int8), "hi"),
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"), numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(0, np.uint8), "u_lo"), numpy_helper.from_array(np.array(255, np.uint8), "u_hi"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["wq"], axis=0),
        helper.make_node("Clip", ["wq", "lo", "hi"], ["wq_clip"]),
        helper.make_node("DequantizeLinear", ["wq_clip", "w_scale", "w_zero"], ["wdq"], axis=0),
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("Clip", ["xq", "u_lo", "u_hi"], ["xq_clip"]),
        helper.make_node("DequantizeLinear", ["xq_clip", "x_scale", "x_zero"], ["xdq"]),
        helper.make_node("Conv", ["xdq", "wdq"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 6, 6])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_tidy_keeps_every_value_and_leaves_the_form_onnxruntime_fuses(tmp_path):
    _pt2e_like_conv(tmp_path / "pt2e.onnx")
    counts = tidy_qdq(tmp_path / "pt2e.onnx", tmp_path / "tidy.onnx")
    assert counts == {"clips_removed": 2, "weights_stored_as_integers": 1}
    graph = onnx.load(str(tmp_path / "tidy.onnx")).graph
    assert [n.op_type for n in graph.node] == ["DequantizeLinear", "QuantizeLinear", "DequantizeLinear", "Conv"]
    stored = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    assert stored["wq"].dtype == np.int8 and "w" not in stored  # the float weight is gone
    x = np.random.default_rng(1).normal(size=(3, 4, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(_run(tmp_path / "tidy.onnx", x), _run(tmp_path / "pt2e.onnx", x))


def test_a_clip_narrower_than_its_type_is_kept(tmp_path):
    """Clip(-127, 127) on int8 changes -128: removing it would change values."""
    _pt2e_like_conv(tmp_path / "pt2e.onnx", clip_low=-127)
    counts = tidy_qdq(tmp_path / "pt2e.onnx", tmp_path / "tidy.onnx")
    assert counts["clips_removed"] == 1  # only the activation's full-range Clip
    assert sum(n.op_type == "Clip" for n in onnx.load(str(tmp_path / "tidy.onnx")).graph.node) == 1
