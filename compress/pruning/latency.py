"""A per-layer onnxruntime latency table, so pruning removes channels where they cost time.

MACs are a poor proxy for CPU latency: at batch 1 the wide late layers of a ResNet are bound by
reading their weights, the early ones by their activations, and each runs at its own speed per
MAC (NetAdapt, Yang et al. 2018, and HALP, Shen et al. 2022, measure instead of counting). The
table is measured, not modelled: the dense model is exported by the one export, run through the
one timer with onnxruntime's per-node profiler on, and every conv and linear layer gets its median
kernel time. A channel group's cost is the time a removed channel saves (each touched layer's time
divided by its width on the touched side) per MAC it saves: channels whose MACs run slowest go
first, so at equal MACs the pruned model runs faster.

onnxruntime's NCHWc layout pass (the one that makes convs fast here) renames the kernels it
rewrites after their output tensors, so a kernel is matched to its layer by its weight and input
shapes, ties broken by the module scope in its name. The table is built once per model
and machine (the key holds the layer shapes, the onnxruntime version, the CPU, batch and threads)
and cached in the run folder as `latency_table.json`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.atomic import write_text

TABLE_FILE = "latency_table.json"
WARMUP, ITERS = 5, 20


def layer_widths(module: nn.Module) -> dict[str, tuple[int, int]]:
    """(input, output) width of every conv and linear layer."""
    widths = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = (m.in_channels, m.out_channels)
        elif isinstance(m, nn.Linear):
            widths[name] = (m.in_features, m.out_features)
    return widths


def layer_table(model, folder: Path, batch: int, threads: int, log: Callable[[str], None]) -> dict[str, float]:
    """Median onnxruntime kernel ms per conv / linear layer of `model` (a compress Model). Read
    from `folder/latency_table.json` when measured for the same layers, machine and settings."""
    import onnxruntime as ort

    from compress.measure.bench import cpu_info

    widths = layer_widths(model.module)
    shapes = [list(x.shape[1:]) for x in model.example_inputs]
    key = hashlib.sha256(json.dumps([sorted(widths.items()), shapes, ort.__version__, cpu_info(), batch, threads]).encode()).hexdigest()[:16]
    path = folder / TABLE_FILE
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            log(f"prune: latency table from {path}")
            return cached["layers_ms"]
    log(f"prune: measuring the onnxruntime latency of {len(widths)} layers (batch {batch}, {threads} thread(s))")
    table = _profile(model, widths, batch, threads)
    write_text(path, json.dumps({"key": key, "batch": batch, "threads": threads, "layers_ms": table}, indent=1) + "\n")
    return table


def layer_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Multiply-accumulates per example of every conv and linear layer, from one forward pass."""
    macs: dict[str, float] = {}

    def record(name: str, layer: nn.Module):
        def hook(_m, _args, out):
            per_output = layer.in_channels // layer.groups * int(np.prod(layer.kernel_size)) if isinstance(layer, nn.modules.conv._ConvNd) else layer.in_features
            macs[name] = macs.get(name, 0.0) + out.numel() / out.shape[0] * per_output
        return hook

    hooks = [m.register_forward_hook(record(n, m)) for n, m in module.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with torch.no_grad():
            module.eval()(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return macs


def channel_cost(pruner, folder: Path, batch: int, threads: int, log: Callable[[str], None]) -> dict[str, float] | None:
    """Per channel group: onnxruntime time per MAC of what removing one of its channels saves
    (ms saved per channel / MACs saved per channel, summed over the layers it touches), relative
    to the mean over groups. Ranking by score / cost removes first the channels whose MACs run
    slowest, so at the same MACs the model runs faster. Transformer pruners get none (every head
    of a layer costs the same): None."""
    if pruner.kind != "channels":
        return None
    widths = layer_widths(pruner.work.module)
    macs = layer_macs(pruner.work.module, pruner.work.example_inputs)
    table = layer_table(pruner.work, folder, batch, threads, log)
    cost = {}
    for group in pruner.groups:
        saved_ms = saved_macs = 0.0
        for touched in group.touches:
            name, _, rest = touched.partition(" (")
            if name in table and name in macs:
                width = max(widths[name][1 if rest.endswith("out)") else 0], 1)
                saved_ms += table[name] / width
                saved_macs += macs[name] / width
        cost[group.name] = saved_ms / saved_macs if saved_macs > 0 else 0.0
    positive = [c for c in cost.values() if c > 0]
    mean = float(np.mean(positive)) if positive else 1.0
    # A group whose layers showed no measurable time still costs a little, so its score stays finite.
    return {name: max(c, 0.05 * mean) / mean for name, c in cost.items()}


def _profile(model, widths: dict[str, tuple[int, int]], batch: int, threads: int) -> dict[str, float]:
    from compress.measure.bench import time_session
    from compress.measure.feeds import make_feeds
    from compress.onnx.export import export_onnx
    from compress.onnx.session import open_session

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "dense.onnx").path
        session = open_session(path, threads, profile_prefix=str(Path(tmp) / "profile"))
        feeds = make_feeds(session, path, batch, model.source.seq_len, seed=0)
        time_session(session, feeds, WARMUP, ITERS)
        events = json.loads(Path(session.end_profiling()).read_text())
    # The median over runs per node: warm-up allocations and a busy machine's spikes drop out.
    times: dict[str, list[float]] = defaultdict(list)
    shapes: dict[str, list[list[int]]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["args"].get("op_name") in LAYER_OPS:
            node = event["name"][: -len("_kernel_time")]
            times[node].append(event["dur"] / 1000)
            shapes[node] = [next(iter(t.values())) for t in event["args"].get("input_type_shape", [])]
    signatures = _signatures(model)
    table: dict[str, float] = {}
    for node in times:
        layer = _layer_of(node, shapes[node], signatures, taken=set(table))
        if layer is not None:
            table[layer] = float(np.median(times[node]))
    return table


# Kernels that run a conv or linear layer (fused with its BN, activation or residual add).
LAYER_OPS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "FusedGemm")


def _signatures(model) -> dict[str, tuple]:
    """Per conv / linear layer: (sorted weight shape, input shape without the batch), from one
    forward pass: what a profiled kernel's input shapes identify it by."""
    found: dict[str, tuple] = {}

    def record(name: str, layer: nn.Module):
        def hook(_m, args, _out):
            found[name] = (tuple(sorted(layer.weight.shape)), tuple(args[0].shape[1:]))
        return hook

    layers = [(n, m) for n, m in model.module.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    hooks = [m.register_forward_hook(record(n, m)) for n, m in layers]
    try:
        with torch.no_grad():
            model.module.eval()(*model.example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return found


def _layer_of(node: str, input_shapes: list[list[int]], signatures: dict[str, tuple], taken: set[str]) -> str | None:
    """The layer a profiled kernel ran: same weight and input shapes; among equals, the one whose
    name shares the longest prefix with the node's scope (the exporter names nodes by module
    scope, "/layer1/layer1.2/relu1/Relu_output_0_nchwc"), not yet taken by another kernel."""
    if len(input_shapes) < 2:
        return None
    weight, data = tuple(sorted(input_shapes[1])), tuple(input_shapes[0][1:])
    candidates = [name for name, (w, x) in signatures.items() if w == weight and x == data and name not in taken]
    if not candidates:
        return None
    scope = ".".join(node.split("/")[1:-1]).split(".")
    return max(candidates, key=lambda name: _overlap(scope, name.split(".")))


def _overlap(scope: list[str], name: list[str]) -> int:
    """How many leading segments of `name` line up with the scope, wherever they start in it (the
    exporter repeats prefixes: "layer1/layer1.2/conv2")."""
    best = 0
    for start in range(len(scope)):
        n = 0
        while n < len(name) and start + n < len(scope) and scope[start + n] == name[n]:
            n += 1
        best = max(best, n)
    return best
