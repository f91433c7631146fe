"""What a model is made of: params, MACs, bytes and a layer table (torch), or the operator
counts of an ONNX graph."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from compress.errors import UsageError
from compress.metrics import mac_count, param_count, state_bytes
from compress.model import Model


@torch.no_grad()
def inspect_model(model: Model) -> dict[str, Any]:
    shapes: dict[str, list[int]] = {}
    leaves = {name: m for name, m in model.module.named_modules() if name and not list(m.children())}
    hooks = [m.register_forward_hook(_record(name, shapes)) for name, m in leaves.items()]
    try:
        model(*model.example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    layers = [{"name": name, "type": type(m).__name__, "params": param_count(m), "output_shape": shapes.get(name)} for name, m in leaves.items()]
    return {
        "name": model.name,
        "task": model.task,
        "inputs": {n: list(x.shape) for n, x in zip(model.input_names, model.example_inputs)},
        "params": param_count(model.module),
        "macs": mac_count(model.module, model.example_inputs),
        "bytes": state_bytes(model.module),
        "layers": layers,
    }


def _record(name: str, shapes: dict[str, list[int]]):
    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            shapes[name] = list(output.shape)

    return hook


def inspect_onnx(path: Path) -> dict[str, Any]:
    from compress.onnx.structure import load_structure  # onnx: when an ONNX file is inspected

    if not path.is_file():
        raise UsageError("ONNX file", path, "not found; check the path")
    try:
        proto = load_structure(path)
    except Exception as exc:  # onnx raises DecodeError and others for files that are not ONNX
        raise UsageError("ONNX file", path, f"is not a readable ONNX model ({type(exc).__name__}); export it again") from exc
    initializer_params = sum(math.prod(t.dims) for t in proto.graph.initializer)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": [i.name for i in proto.graph.input],
        "outputs": [o.name for o in proto.graph.output],
        "initializer_values": initializer_params,
        "nodes": len(proto.graph.node),
        "op_counts": dict(Counter(n.op_type for n in proto.graph.node).most_common()),
    }
