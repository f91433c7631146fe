"""Residual Adds before a LayerNormalization become Sum: the same values, and onnxruntime's
SkipLayerNormFusion no longer turns the pair into its (here slower) SkipLayerNormalization."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compress.onnx.residual_sum import residual_adds_as_sum, rewrite_file

HIDDEN = 16


def _block(path) -> None:
    """x + r -> LayerNorm -> y, plus an Add that also feeds a graph output (left alone)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32), name) for name in ("gamma", "beta")]
    nodes = [
        helper.make_node("Add", ["x", "r"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12),
        helper.make_node("Add", ["y", "r"], ["z"]),
    ]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 8, HIDDEN])  # noqa: E731
    graph = helper.make_graph(nodes, "g", [value("x"), value("r")], [value("y"), value("z")], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _optimized(path, tmp_path) -> tuple[list[str], list[np.ndarray]]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    feeds = {name: rng.normal(size=(2, 8, HIDDEN)).astype(np.float32) for name in ("x", "r")}
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    return ops, session.run(None, feeds)


def test_the_add_before_a_layernorm_becomes_sum_and_onnxruntime_keeps_the_pair_apart(tmp_path):
    plain, rewritten = tmp_path / "plain.onnx", tmp_path / "rewritten.onnx"
    _block(plain)
    _block(rewritten)
    assert rewrite_file(rewritten) == 1
    assert [n.op_type for n in onnx.load(str(rewritten)).graph.node] == ["Sum", "LayerNormalization", "Add"]
    fused_ops, fused_out = _optimized(plain, tmp_path)
    kept_ops, kept_out = _optimized(rewritten, tmp_path)
    assert "SkipLayerNormalization" in fused_ops  # what the rewrite prevents
    assert "SkipLayerNormalization" not in kept_ops and "LayerNormalization" in kept_ops
    for a, b in zip(fused_out, kept_out):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_an_add_with_other_readers_or_a_graph_output_stays_an_add(tmp_path):
    path = tmp_path / "block.onnx"
    _block(path)
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Relu", ["sum"], ["relu"]))  # a second reader of the residual sum
    assert residual_adds_as_sum(model.graph) == 0
    assert [n.op_type for n in model.graph.node] == ["Add", "LayerNormalization", "Add", "Relu"]
