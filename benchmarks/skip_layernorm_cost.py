"""What onnxruntime's SkipLayerNormalization costs against the Add + LayerNormalization it fuses:
two one-block graphs, x + r -> LayerNormalization, one with the Add (onnxruntime fuses it into
SkipLayerNormalization at ORT_ENABLE_EXTENDED and above, as `compress bench` opens every graph)
and one with the Add written as Sum (compress.onnx.residual_sum: left apart). Time them with one
paired `compress bench`.

Usage: .venv/bin/python benchmarks/skip_layernorm_cost.py OUT_PREFIX [HIDDEN [SEQ]]
(writes OUT_PREFIX_skip.onnx and OUT_PREFIX_sum.onnx; defaults: MiniLM's 384 and 128)
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.onnx.residual_sum import residual_adds_as_sum


def block(hidden: int, seq: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), name) for name in ("gamma", "beta")]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", seq, hidden])  # noqa: E731
    nodes = [helper.make_node("Add", ["x", "r"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    graph = helper.make_graph(nodes, "residual_layernorm", [value("x"), value("r")], [value("y")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    prefix = sys.argv[1]
    hidden, seq = (int(a) for a in (sys.argv[2:4] + ["384", "128"][len(sys.argv[2:4]):]))
    model = block(hidden, seq)
    onnx.save(model, f"{prefix}_skip.onnx")
    residual_adds_as_sum(model.graph)
    onnx.save(model, f"{prefix}_sum.onnx")
    print(f"{prefix}_skip.onnx (fused by onnxruntime), {prefix}_sum.onnx (kept apart); hidden {hidden}, sequence {seq}")


if __name__ == "__main__":
    main()
