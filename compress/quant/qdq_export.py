"""INT8 ONNX from a fake-quantized model: export the float graph with the one export, then let
onnxruntime place Q/DQ (so it fuses them into integer kernels) with the learned steps given as
tensor overrides (research/methods.md 6.5, 6.7 option A).

The float graph carries the already fake-quantized weights (integers times their step), so
onnxruntime's int8 weights are exactly the learned grid, whatever the bit width: sub-8-bit grids
run as int8 kernels holding fewer levels. Activations get the learned step as a uint8 scale with
zero point 0 (non-negative inputs) or 128 (signed), the same grid as the torch model.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from compress.atomic import atomic_path
from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError
from compress.model import Model
from compress.onnx.export import export_onnx
from compress.onnx.outputs import check_shapes, graph_inputs
from compress.onnx.structure import load_structure
from compress.quant.attention_fusion import packed_layers
from compress.quant.calibration import DatasetReader
from compress.quant.embeddings import Int8Tables
from compress.quant.fake import DynamicQuantizer, OutputQuant, QuantLayer, TableQuant, output_quantizer, quant_layers, row_quantized
from compress.quant.ort import has_integer_inputs, op_summary, quiet, rewrite_int8


@dataclass(frozen=True)
class QuantizedExport:
    path: Path
    exporter: str
    opset: int
    bytes: int
    quantized_ops: dict[str, int]
    float_ops: dict[str, int]
    # Residual Adds written as Sum so that onnxruntime keeps them apart from their LayerNorm
    # (compress.onnx.residual_sum).
    adds_as_sum: int
    # Self-attention blocks fused into onnxruntime's Attention, quantized as QAttention
    # (compress.quant.attention_fusion).
    attention_fused: int
    # Embedding tables stored int8 with row scales (compress.quant.embeddings).
    tables: Int8Tables


# Largest output difference allowed between the float graph and its attention-fused copy,
# relative to the largest output magnitude when that exceeds 1 (the export pass's default tolerance).
FUSED_TOLERANCE = 1e-4


def float_twin(model: Model) -> tuple[Model, dict[str, QuantLayer]]:
    """The model with every QuantLayer replaced by its float layer holding the fake-quantized weight,
    every TableQuant by its embedding holding the rounded table, and every OutputQuant by the module
    it wraps."""
    module = copy.deepcopy(model.module)
    # Innermost first: a wrapped module inside another is named through the outer one's `inner`.
    for name in reversed([n for n, m in module.named_modules() if isinstance(m, OutputQuant)]):
        parent, _, attr = name.rpartition(".")
        holder = module.get_submodule(parent) if parent else module
        setattr(holder, attr, getattr(holder, attr).inner)
    # Embedding tables: the rounded table itself, which compress.quant.embeddings then stores as int8.
    for name in [n for n, m in module.named_modules() if isinstance(m, TableQuant)]:
        parent, _, attr = name.rpartition(".")
        holder = module.get_submodule(parent) if parent else module
        inner = getattr(holder, attr).inner
        with torch.no_grad():
            inner.weight.copy_(row_quantized(inner.weight))
        setattr(holder, attr, inner)
    layers = quant_layers(module)
    for name, layer in layers.items():
        inner = layer.inner
        with torch.no_grad():
            inner.weight.copy_(layer.weight_quant.quantized(inner.weight))
        parent, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, attr, inner)
    return model.replace(module=module), layers


def export_quantized(model: Model, path: Path, opset: int = 17, calibration: Dataset | None = None) -> QuantizedExport:
    """With `calibration` (the data QAT trained on), a graph with float inputs also gets Q/DQ on
    the operators between the layers (residual Adds, pooling), ranged on that data, so onnxruntime
    runs them in int8 as PTQ does; without it only the layers' inputs and weights are quantized.
    A model with dynamic activations (text encoders) goes through onnxruntime's dynamic quantizer
    instead: its learned weight steps as overrides, activation ranges computed per call."""
    from compress.quant.edits import FAKE_QUANT

    twin, layers = float_twin(model)
    dynamic = any(isinstance(layer.input_quant, DynamicQuantizer) for layer in layers.values())
    outputs = next((e.get("outputs") for e in reversed(model.edits) if e.get("kind") == FAKE_QUANT), None) or {}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".qat.") as scratch:
        exported = export_onnx(twin, Path(scratch) / "float.onnx", opset)
        source, attention = exported.path, 0
        if dynamic:
            source, attention = _fused_attention(twin, layers, exported.path, Path(scratch) / "fused.onnx")
        graph = onnx.load(str(source)).graph
        overrides, nodes = _overrides(graph, layers, dynamic)
        overrides |= _output_overrides(model.module, outputs)
        with atomic_path(path) as tmp, quiet():
            try:
                if dynamic:
                    _quantize_dynamic(source, tmp, overrides, nodes)
                else:
                    _quantize_static(exported.path, tmp, graph, overrides, nodes, model, calibration, bool(outputs))
            except UsageError:
                raise
            except Exception as exc:  # onnxruntime's quantizer raises untyped errors
                raise RunFailed(f"onnxruntime could not quantize with the learned scales: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
            # Tables qat rounded are on their grid; any other stays float (the torch model has it so).
            adds_as_sum, tables = rewrite_int8(tmp, round_tables=False)
            quantized, kept = op_summary(load_structure(tmp).graph)
    return QuantizedExport(path, exported.exporter, exported.opset, path.stat().st_size, quantized, kept, adds_as_sum, attention, tables)


def _fused_attention(twin: Model, layers: dict[str, QuantLayer], source: Path, target: Path) -> tuple[Path, int]:
    """`target` with the self-attention blocks fused (compress.quant.attention_fusion) when that
    fuses some, each fused block's query, key and value are all quantized layers (one QAttention
    holds the three), and the fused float graph computes what `source` does on the example inputs
    and parity's random probes (parity's tolerance); else `source` as it is."""
    from compress.onnx.outputs import onnx_outputs
    from compress.onnx.parity import probes
    from compress.onnx.session import open_session
    from compress.quant.attention_fusion import attention_shape, fuse_attention

    shape = attention_shape(twin.module)
    if shape is None:
        return source, 0
    with quiet():
        fused = fuse_attention(source, target, *shape)
    if not fused:
        return source, 0
    transposed = {name: layer.inner.weight.detach().t().contiguous().numpy() for name, layer in layers.items() if layer.inner.weight.dim() == 2}
    if len(packed_layers(onnx.load(str(target)).graph, transposed)) != fused:
        return source, 0
    plain, candidate = open_session(source), open_session(target)
    for data in [Dataset("example inputs", twin.example_inputs), *probes(twin, 0)]:  # probes: padded masks, two lengths
        reference, outputs = onnx_outputs(plain, data), onnx_outputs(candidate, data)
        if (reference - outputs).abs().max() > FUSED_TOLERANCE * max(1.0, float(reference.abs().max())):
            return source, 0
    return target, fused


def _quantize_static(source: Path, target: Path, graph: onnx.GraphProto, overrides: dict, nodes: list[str],
                     model: Model, calibration: Dataset | None, placed: bool) -> None:
    """`placed`: the torch model quantizes the tensors between its layers too (plan_outputs), so the
    whole graph is quantized, their learned steps overriding any calibration (a saved model
    exported in another run has no calibration data: its example inputs stand in)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    whole_graph = (calibration is not None or placed) and not has_integer_inputs(graph)
    data = calibration if whole_graph and calibration is not None else Dataset("example inputs", model.example_inputs)
    check_shapes(graph_inputs(graph), data)  # torch may take sizes the exported graph fixed
    reader = DatasetReader(data, [i.name for i in graph.input], 32)
    quantize_static(
        str(source), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=None if whole_graph else nodes,
        op_types_to_quantize=None if whole_graph else ["Conv", "Gemm", "MatMul"], calibrate_method=CalibrationMethod.MinMax,
        extra_options={"TensorQuantOverrides": overrides, "WeightSymmetric": True},
    )  # fmt: skip


def _quantize_dynamic(source: Path, target: Path, overrides: dict, nodes: list[str]) -> None:
    """Only the quantized layers' MatMuls (and fused Attention nodes, their packed q/k/v), as
    `ptq`'s dynamic mode does (the attention-score MatMuls, Softmax and LayerNorm stay float). The
    embedding tables are left to compress.quant.embeddings (one scale per row, not per tensor)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: onnx's shape inference knows no type for the outputs of onnxruntime's
    # contrib operators (a fused Attention); they are float.
    quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                     op_types_to_quantize=["MatMul", "Gemm", "Attention"],
                     extra_options={"TensorQuantOverrides": overrides, "DefaultTensorType": onnx.TensorProto.FLOAT})


def layer_nodes(graph: onnx.GraphProto, layers: dict[str, QuantLayer]) -> dict[str, tuple[onnx.NodeProto, str, int]]:
    """Each layer's (node, weight value name, channel axis) in the graph. Conv and Gemm read the
    torch weight by its name (channels on axis 0); a Linear on 3-D inputs becomes MatMul with a
    transposed copy of the weight under a generated name ([in, out]: channels on axis 1), found by
    the bias the following Add reads (`<layer>.bias`), or by its values when there is no bias."""
    initializers = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = {}
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in initializers]
    for name, layer in layers.items():
        direct = [n for n in consumers.get(f"{name}.weight", []) if n.op_type in ("Conv", "Gemm") and n.input[1] == f"{name}.weight"]
        if direct:
            found[name] = (direct[0], f"{name}.weight", 0)
            continue
        by_bias = [n for n in matmuls if any(c.op_type == "Add" and f"{name}.bias" in c.input for c in consumers.get(n.output[0], []))]
        if not by_bias and layer.inner.weight.dim() == 2:  # a conv not found by name has no transposed copy
            transposed = layer.inner.weight.detach().t().contiguous().numpy()
            by_bias = [n for n in matmuls if _equal(initializers[n.input[1]], transposed)]
        if by_bias:
            found[name] = (by_bias[0], by_bias[0].input[1], 1)
    return found


def _equal(initializer: onnx.TensorProto, values: np.ndarray) -> bool:
    if tuple(initializer.dims) != values.shape:
        return False
    return bool(np.array_equal(onnx.numpy_helper.to_array(initializer), values))


def _overrides(graph: onnx.GraphProto, layers: dict[str, QuantLayer], dynamic: bool) -> tuple[dict[str, list[dict]], list[str]]:
    """TensorQuantOverrides keyed by ONNX value names: the learned weight steps per channel, and
    (static activations) the learned input step as a uint8 scale."""
    from onnxruntime.quantization import QuantType

    placed = layer_nodes(graph, layers)
    unplaced = {name: layer.inner.weight.detach().t().contiguous().numpy() for name, layer in layers.items()
                if name not in placed and layer.inner.weight.dim() == 2}
    packed = packed_layers(graph, unplaced) if unplaced else {}
    missing = [name for name in layers if name not in placed and not any(name in names for _, names in packed.values())]
    if missing:
        raise RunFailed(f"the exported graph has no Conv/Gemm/MatMul reading the weights of {', '.join(missing[:3])}; "
                        "their learned scales cannot be placed")
    overrides: dict[str, list[dict]] = {}
    for name, (node, weight, axis) in placed.items():
        layer = layers[name]
        act = layer.input_quant
        if not dynamic:
            overrides[node.input[0]] = [{
                "quant_type": QuantType.QUInt8,
                "scale": np.array(float(act.step.detach()), dtype=np.float32),
                "zero_point": np.array(128 if act.q_n else 0, dtype=np.uint8),
            }]
        overrides[weight] = _channel_steps(layer.weight_quant.step, axis)
    for weight, (_, names) in packed.items():  # q, k and v side by side: their steps too
        overrides[weight] = _channel_steps(torch.cat([layers[name].weight_quant.step for name in names]), 1)
    return overrides, [node.name for node, _, _ in placed.values()] + [node.name for node, _ in packed.values()]


def _channel_steps(step: torch.Tensor, axis: int) -> list[dict]:
    """A weight's learned per-channel steps as onnxruntime's per-channel overrides (symmetric int8)."""
    from onnxruntime.quantization import QuantType

    steps = step.detach().numpy().astype(np.float32)
    return [
        {"axis": axis, "quant_type": QuantType.QInt8, "scale": np.array(steps[0]), "zero_point": np.array(0, dtype=np.int8)},
        *({"scale": np.array(s), "zero_point": np.array(0, dtype=np.int8)} for s in steps[1:]),
    ]


def _output_overrides(module: torch.nn.Module, outputs: dict[str, dict]) -> dict[str, list[dict]]:
    """The learned steps of the quantizers on tensors between the layers (plan_outputs), as uint8
    scales with zero point 0 or 128, under each ONNX value name that tensor has."""
    from onnxruntime.quantization import QuantType

    overrides = {}
    for name, entry in outputs.items():
        quant = output_quantizer(module, name)
        override = {"quant_type": QuantType.QUInt8, "scale": np.array(float(quant.step.detach()), dtype=np.float32),
                    "zero_point": np.array(128 if quant.q_n else 0, dtype=np.uint8)}
        overrides.update({tensor: [override] for tensor in entry["tensors"]})
    return overrides


# The bar for the exported graph against the fake-quant torch model it came from.
LEAST_AGREEMENT, LEAST_COSINE = 0.995, 0.999
# Held-out inputs the INT8 graph is checked on (all of them up to this many). A 99.5% agreement bar
# on 64 inputs allows no flip at all, and a data-free student has near-tied images whose top-1 any
# 8-bit rounding decides: on digits:test, two images with top-two logits 0.003 apart flipped
# between torch and onnxruntime even when both compute the same quantized graph (benchmarks/README.md).
FIDELITY_SAMPLES = 1000


def verify(model: Model, path: Path, data: Dataset) -> dict[str, float]:
    """Fake-quant torch vs the INT8 ONNX on `data`: top-1 agreement (classifiers, >= 99.5%) or mean
    cosine (encoders, >= 0.999); below it the run fails with the figure. For classifiers, also how
    many inputs disagree and the largest gap between the torch model's top two logits among them
    (near zero: ties that rounding decides; large: a real difference)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException

    from compress.metrics import quality
    from compress.onnx.outputs import onnx_outputs
    from compress.onnx.session import open_session
    from compress.predict import torch_outputs

    session = open_session(path)
    check_shapes(session.get_inputs(), data)  # first: data of the wrong shape is the user's mistake
    try:
        exported = onnx_outputs(session, data)
    except (Fail, RuntimeException) as exc:  # a kernel refusing the learned scales at run time
        raise RunFailed(f"onnxruntime cannot run the INT8 graph {path.name} with the learned scales: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    reference = torch_outputs(model, data)
    figures = quality(model.task, exported, reference, None)
    metric, least = ("agreement", LEAST_AGREEMENT) if model.task == "classification" else ("cosine_mean", LEAST_COSINE)
    flips = ""
    if model.task == "classification":
        figures |= _disagreements(exported, reference)
        flips = (f" ({figures['disagreeing']} disagreeing inputs; the torch model's top-two logit gap on them is at most "
                 f"{figures['disagreeing_margin_max']:.3g})")
    if figures[metric] < least:
        raise RunFailed(f"the INT8 ONNX {path.name} has {metric} {figures[metric]:.4f} to the fake-quantized torch model "
                        f"on {len(data)} inputs of {data.name}, under the {least} required{flips}")
    return figures


def _disagreements(exported: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    flipped = exported.argmax(dim=1) != reference.argmax(dim=1)
    top2 = reference[flipped].topk(2, dim=1).values if reference.shape[1] > 1 else reference[flipped].new_zeros(0, 2)
    margins = top2[:, 0] - top2[:, 1]
    return {"disagreeing": int(flipped.sum()), "disagreeing_margin_max": round(float(margins.max()), 6) if len(margins) else 0.0}
