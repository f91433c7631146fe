"""BERT self-attention fused into onnxruntime's Attention operator before dynamic quantization, so
that `quantize_dynamic` makes one QAttention of it: the query, key and value projections as one
integer MatMul on one dynamically quantized input, and the scores, mask, Softmax and context in
one CPU kernel instead of 3 MatMuls, 4 Transposes, Softmax and the mask Add.

Only the attention fusion of onnxruntime's transformer optimizer (onnxruntime.transformers,
model_type "bert") is used: its SkipLayerNormalization and BiasGelu fusions made MiniLM's INT8
graph slower on this CPU (benchmarks/README.md, "MiniLM INT8 faster than quantize_dynamic").

The optimizer matches q/k/v MatMuls that read the LayerNorm output itself, so a SmoothQuant Mul
(compress.quant.smooth) in between hides the attention from it: each smoothing Mul is taken out
before the fusion and put back after it, before the node that now reads that tensor (Attention or
MatMul), computing the same values as before.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compress.quant.smooth import ATTRIBUTE

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class _Smoothing:
    data: str  # the tensor the Mul scaled
    scale: onnx.TensorProto  # its 1/s initializer


def attention_shape(module) -> tuple[int, int] | None:
    """(heads, hidden size) of a Hugging Face encoder inside `module`; None without one."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
        if isinstance(heads, int) and isinstance(hidden, int):
            return heads, hidden
    return None


def fuse_attention(source: Path, target: Path, heads: int, hidden: int) -> int:
    """Write `source` with its self-attention blocks fused to `target`; returns how many were fused
    (0: nothing written). A block the optimizer could only fuse with unequal q/k/v sizes (a pruned
    model) counts as none: onnxruntime has no QAttention for it and would leave it in float."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(source))
    smoothing = list(_take_out_smoothing(model.graph))
    options = FusionOptions("bert")
    for other in ("enable_skip_layer_norm", "enable_bias_skip_layer_norm", "enable_bias_gelu", "enable_embed_layer_norm",
                  "enable_gelu", "enable_layer_norm"):
        setattr(options, other, False)
    try:
        optimized = optimize_model(model, "bert", num_heads=heads, hidden_size=hidden, optimization_options=options, opt_level=0)
    except Exception:  # noqa: BLE001 - a graph the optimizer cannot walk is only left unfused
        return 0
    fused = optimized.model
    attention = [n for n in fused.graph.node if n.op_type == "Attention"]
    if not attention or any(a.name == "qkv_hidden_sizes" for n in attention for a in n.attribute):
        return 0
    if not _put_back_smoothing(fused.graph, smoothing):
        return 0
    if not any(o.domain == MS_DOMAIN for o in fused.opset_import):
        fused.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(fused, str(target))
    return len(attention)


def _take_out_smoothing(graph: onnx.GraphProto) -> Iterator[_Smoothing]:
    scales = {i.name: i for i in graph.initializer if f".{ATTRIBUTE}." in i.name}
    for mul in [n for n in graph.node if n.op_type == "Mul" and any(i in scales for i in n.input)]:
        data = next(i for i in mul.input if i not in scales)
        for node in graph.node:
            node.input[:] = [data if i == mul.output[0] else i for i in node.input]
        graph.node.remove(mul)
        yield _Smoothing(data, copy.deepcopy(scales[next(i for i in mul.input if i in scales)]))


def _put_back_smoothing(graph: onnx.GraphProto, smoothing: list[_Smoothing]) -> bool:
    """Each Mul before the Attention or MatMul nodes that read its tensor as their first input
    (the readers it had; the residual path reads the tensor unscaled, as before); False when a
    tensor has no such reader left (the fusion changed what the scale applied to)."""
    present = {i.name for i in graph.initializer}
    for item in smoothing:
        if item.scale.name not in present:  # the optimizer drops initializers nobody read
            graph.initializer.append(item.scale)
        readers = [n for n in graph.node if n.op_type in ("Attention", "MatMul") and n.input and n.input[0] == item.data]
        if not readers:
            return False
        scaled = f"{item.data}_smoothed"  # not the attribute's name: that marks the scale initializers
        for node in readers:
            node.input[0] = scaled
        first = min(list(graph.node).index(n) for n in readers)
        graph.node.insert(first, helper.make_node("Mul", [item.data, item.scale.name], [scaled], name=f"{scaled}_Mul"))
    return True


def packed_layers(graph: onnx.GraphProto, transposed: dict[str, np.ndarray]) -> dict[str, tuple[onnx.NodeProto, list[str]]]:
    """Each Attention node's packed weight name -> (node, the layers whose [in, out] weights it
    holds side by side, in order), found by value (`transposed`: layer name -> [in, out] weight)."""
    initializers = {i.name: i for i in graph.initializer}
    found = {}
    for node in (n for n in graph.node if n.op_type == "Attention" and n.input[1] in initializers):
        parts = np.split(numpy_helper.to_array(initializers[node.input[1]]), 3, axis=1)
        names = [next((name for name, w in transposed.items() if w.shape == p.shape and np.array_equal(w, p)), None) for p in parts]
        if all(names):
            found[node.input[1]] = (node, names)
    return found
