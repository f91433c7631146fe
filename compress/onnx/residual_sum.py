"""Keep onnxruntime from fusing a residual Add into the LayerNormalization after it.

At ORT_ENABLE_EXTENDED and above, onnxruntime's SkipLayerNormFusion turns Add (+ a bias Add) +
LayerNormalization into one SkipLayerNormalization. On this project's CPU (onnxruntime 1.32, one
thread) that fused kernel ran 5-7x slower than the Add and LayerNormalization it replaced: 0.215
against 0.032 ms at MiniLM's shape [1, 128, 384], 1.76 against 0.37 ms at batch 8 (paired,
benchmarks/skip_layernorm_cost.py). In onnxruntime's dynamically quantized MiniLM the six fused
ones took 1.4 of 7.5 ms per call (its per-operator profile).

The fusion matches the op type "Add" only; `Sum` of two tensors is the same operation (ONNX Sum
broadcasts as Add does) and runs the same element-wise kernel, so writing the Add as Sum keeps the
pair apart without changing a computed value. Applied to the INT8 graphs compress writes (qat's
export, ptq), not to the FP32 export, so "quantize_dynamic on the same export" stays onnxruntime's
own result (benchmarks/README.md, "MiniLM INT8 faster than quantize_dynamic").
"""

from __future__ import annotations

from pathlib import Path

import onnx


def residual_adds_as_sum(graph: onnx.GraphProto) -> int:
    """Rewrite, in place, each two-input Add whose only reader is a LayerNormalization's data
    input as Sum (what SkipLayerNormFusion would fuse); returns how many."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.input) != 2 or node.output[0] in outputs:
            continue
        users = readers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "LayerNormalization" and users[0].input[0] == node.output[0]:
            node.op_type = "Sum"
            rewritten += 1
    return rewritten


def rewrite_file(path: Path) -> int:
    """`residual_adds_as_sum` on the ONNX file at `path`, saved back only when something changed
    (the caller writes `path` atomically: it is the temp file of an atomic_path)."""
    model = onnx.load(str(path))
    rewritten = residual_adds_as_sum(model.graph)
    if rewritten:
        onnx.save(model, str(path))
    return rewritten
