"""Turn a PT2E Q/DQ graph (torch.onnx.export of a converted PT2E module) into the form onnxruntime
fuses, without changing a single computed value.

The dynamo exporter writes each quantize as QuantizeLinear -> Clip(type min, type max) ->
DequantizeLinear, and keeps the weights in float, quantized on every call. onnxruntime's QDQ
fusions look for QuantizeLinear -> DequantizeLinear, so on digits that graph ran 1.6x slower than
float. Here:
- a Clip right after a QuantizeLinear whose bounds are its integer type's whole range is removed
  (QuantizeLinear already saturates to that range: the Clip changes nothing);
- a QuantizeLinear of a constant (a weight) is computed once, as ONNX defines it (round half to
  even, add the zero point, saturate), and stored as the integer initializer it produces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def tidy_qdq(source: Path, target: Path) -> dict[str, int]:
    """Write the tidied `source` to `target`; returns how many Clips and weight quantizations went."""
    proto = onnx.load(str(source))
    graph = proto.graph
    values = _constants(graph)
    clips = _drop_saturating_clips(graph, values)
    weights = _fold_weight_quantization(graph, values)
    _drop_unused_initializers(graph)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(target))
    return {"clips_removed": clips, "weights_stored_as_integers": weights}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _drop_saturating_clips(graph: onnx.GraphProto, values: dict[str, np.ndarray]) -> int:
    quantized = {o for n in graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    bypass: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Clip" or node.input[0] not in quantized or len(node.input) < 3:
            continue
        low, high = values.get(node.input[1]), values.get(node.input[2])
        if low is None or high is None or low.dtype.kind not in "iu":
            continue
        info = np.iinfo(low.dtype)
        if int(low) == info.min and int(high) == info.max and node.output[0] not in {o.name for o in graph.output}:
            bypass[node.output[0]] = node.input[0]
    _remove(graph, lambda n: n.op_type == "Clip" and n.output[0] in bypass)
    for node in graph.node:
        node.input[:] = [bypass.get(i, i) for i in node.input]
    return len(bypass)


def _fold_weight_quantization(graph: onnx.GraphProto, values: dict[str, np.ndarray]) -> int:
    folded = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in values or node.input[1] not in values:
            continue
        if len(node.input) < 3 or node.input[2] not in values:
            continue  # without a zero point the output type is uint8 by default; PT2E always gives one
        weight, scale, zero = values[node.input[0]], values[node.input[1]], values[node.input[2]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        if scale.ndim == 1:
            shape[axis % weight.ndim] = -1
        info = np.iinfo(zero.dtype)
        integers = np.rint(weight / scale.reshape(shape)) + zero.astype(np.int64).reshape(shape)
        graph.initializer.append(numpy_helper.from_array(np.clip(integers, info.min, info.max).astype(zero.dtype), node.output[0]))
        folded.append(node.output[0])
    _remove(graph, lambda n: n.op_type == "QuantizeLinear" and n.output[0] in set(folded))
    return len(folded)


def _remove(graph: onnx.GraphProto, drop) -> None:
    kept = [n for n in graph.node if not drop(n)]
    del graph.node[:]
    graph.node.extend(kept)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
