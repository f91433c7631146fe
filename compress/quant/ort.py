"""onnxruntime post-training quantization of an exported float graph.

Choices, each measured on this project's CPU (benchmarks/README.md, "ptq"):
- Weights int8, symmetric, per output channel; static activations uint8 (U8S8): onnxruntime's
  default int8 activations (S8S8) ran 1.7x slower than float on digits, U8S8 1.9x faster.
- Graphs with float inputs (CNNs): static QDQ over onnxruntime's default operator list, calibrated
  with MinMax, so Conv, Add, pooling and Gemm fuse into integer kernels.
- Graphs with integer inputs (token ids, attention mask: text encoders): only the nodes that hold
  weights (MatMul/Gemm/Conv with a constant weight) are quantized, so the attention-mask path,
  Softmax and LayerNorm stay float; `auto` then picks dynamic quantization of those MatMuls, which
  was both more faithful and faster than static on MiniLM. Embedding tables go out as int8 with one
  scale per row (compress.quant.embeddings), not onnxruntime's one scale per table.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx

from compress.atomic import atomic_path
from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError
from compress.onnx.residual_sum import residual_adds_as_sum
from compress.onnx.structure import load_structure
from compress.quant.calibration import DatasetReader
from compress.quant.embeddings import Int8Tables, int8_tables
from compress.quant.options import Activations, Mode
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
INTEGER_OPS = ("MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DynamicQuantizeMatMul", "QGemm", "QAttention")
# Operators that move or reshape data without arithmetic: neither quantized nor "left in float".
LAYOUT_OPS = frozenset({
    "Shape", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Slice", "Gather", "Constant",
    "ConstantOfShape", "Cast", "Expand", "Range", "Equal", "Where", "And", "GreaterOrEqual", "Identity",
})


@dataclass(frozen=True)
class OrtQuantized:
    path: Path
    mode: str
    activations: str
    preprocess: str
    calibration_rows: int
    quantized_ops: dict[str, int]
    float_ops: dict[str, int]
    bytes: int
    # Residual Adds written as Sum so that onnxruntime keeps them apart from their LayerNorm
    # (compress.onnx.residual_sum).
    adds_as_sum: int
    # Embedding tables stored int8 with row scales (compress.quant.embeddings).
    tables: Int8Tables


def weight_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes that hold weights: Conv/Gemm/MatMul with a constant second input, Gather of a table."""
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n for n in graph.node
        if (n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in constants)
        or (n.op_type == "Gather" and n.input[0] in constants)
    ]  # fmt: skip


def has_integer_inputs(graph: onnx.GraphProto) -> bool:
    """Token ids and attention masks arrive as integer inputs: a text model."""
    return any(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT for i in graph.input)


def choose_mode(mode: Mode, graph: onnx.GraphProto) -> Literal["static", "dynamic"]:
    if mode != "auto":
        return mode
    return "dynamic" if has_integer_inputs(graph) else "static"


def quantize_onnx(
    source: Path, target: Path, calibration: Dataset | None, mode: Mode, activations: Activations, batch_size: int,
    keep_float: tuple[str, ...] = (),
) -> OrtQuantized:
    """Quantize `source` into `target` (written atomically); `calibration` feeds static ranges.
    Nodes of the operator types in `keep_float` stay float (compress.quant.slow_ops)."""
    graph = load_structure(source).graph
    weights = weight_nodes(graph)
    if not any(n.op_type in WEIGHT_OPS for n in weights):
        raise UsageError("model", source, "has no Conv, Gemm or MatMul with constant weights, so there is nothing to quantize; give a model with such layers")
    chosen = choose_mode(mode, graph)
    text = has_integer_inputs(graph)
    # Absolute: preprocessing runs in the scratch folder, where a relative path would point elsewhere.
    source = Path(source).resolve()
    with atomic_path(target) as tmp, tempfile.TemporaryDirectory(dir=target.parent, prefix=".ptq.") as scratch, quiet():
        pre = (Path(scratch) / "preprocessed.onnx").resolve()
        # A failed symbolic shape inference leaves its temp files in the working directory.
        with contextlib.chdir(scratch):
            preprocess = _preprocess(source, pre)
        # Names from the preprocessed graph: quant_pre_process may rename or fuse nodes.
        prepared = onnx.load(str(pre), load_external_data=False).graph
        kept = [n.name for n in prepared.node if n.op_type in keep_float]
        # Embedding Gathers are left to compress.quant.embeddings (one scale per row, not per tensor).
        chosen_nodes = [n.name for n in weight_nodes(prepared) if n.op_type not in keep_float and n.op_type != "Gather"]
        try:
            if chosen == "static":
                if calibration is None:
                    raise UsageError("ptq data", "none", "static quantization needs calibration data; give --data")
                reader = DatasetReader(calibration, [i.name for i in graph.input], batch_size)
                _static(pre, tmp, reader, activations, chosen_nodes if text else None, kept)
                rows = reader.rows
            else:
                _dynamic(pre, tmp, chosen_nodes)
                rows = 0
        except UsageError:
            raise
        except Exception as exc:  # onnxruntime's quantizer raises untyped errors from deep inside
            raise RunFailed(f"onnxruntime {chosen} quantization of {source} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        adds_as_sum, tables = rewrite_int8(tmp, round_tables=True)
        quantized, kept = op_summary(load_structure(tmp).graph)
    return OrtQuantized(target, chosen, activations if chosen == "static" else "uint8, dynamic per call",
                        preprocess, rows, quantized, kept, target.stat().st_size, adds_as_sum, tables)


def _preprocess(source: Path, out: Path) -> str:
    """onnxruntime's quant_pre_process (shape inference + graph optimisation) where it works.
    MiniLM's symbolic shape inference fails on its position-id broadcast; the rest still helps."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for label, kwargs in (("full", {}), ("without symbolic shapes", {"skip_symbolic_shape": True})):
        try:
            quant_pre_process(str(source), str(out), **kwargs)
            return label
        except Exception:  # noqa: BLE001 - any failure here only means the next, plainer preprocessing
            continue
    out.write_bytes(source.read_bytes())
    return "skipped (onnxruntime could not preprocess the graph)"


def _static(source: Path, target: Path, reader: DatasetReader, activations: Activations, nodes: list[str] | None, excluded: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(source), str(target), reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        nodes_to_exclude=excluded,
        op_types_to_quantize=list(WEIGHT_OPS) if nodes is not None else None,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )  # fmt: skip


def _dynamic(source: Path, target: Path, nodes: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8,
                     nodes_to_quantize=nodes, op_types_to_quantize=["MatMul"])


def rewrite_int8(path: Path, round_tables: bool) -> tuple[int, Int8Tables]:
    """The rewrites every INT8 graph compress writes gets, in one load and one save of the file at
    `path` (the temp file of an atomic_path): residual Adds written as Sum
    (compress.onnx.residual_sum) and embedding tables stored int8 per row
    (compress.quant.embeddings; `round_tables` as its `round_float`). Returns how many Adds, and the tables."""
    model = onnx.load(str(path))
    adds = residual_adds_as_sum(model.graph)
    tables = int8_tables(model.graph, round_float=round_tables)
    if adds or tables.tables:
        onnx.save(model, str(path))
    return adds, tables


def op_summary(graph: onnx.GraphProto) -> tuple[dict[str, int], dict[str, int]]:
    """Arithmetic nodes by type that run on integers and those left in float. onnxruntime runs a
    node on integers when it is an integer kernel, or when it is a QDQ unit: its inputs come from
    DequantizeLinear (every input that is not a constant) and its output goes to a QuantizeLinear (through a Relu or Clip, which the
    quantization absorbs), or it is a MatMul reading a dequantized weight (fused to
    MatMulIntegerToFloat). A node fed by DequantizeLinear whose output stays float runs in float."""
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def requantized(node: onnx.NodeProto, depth: int = 0) -> bool:
        for user in (u for o in node.output for u in consumers.get(o, [])):
            if user.op_type == "QuantizeLinear" or (depth == 0 and user.op_type in ("Relu", "Clip") and requantized(user, 1)):
                return True
        return False

    quantized: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    def fed(node: onnx.NodeProto) -> bool:
        return any(i in dequantized for i in node.input) and all(i in dequantized or i in constants for i in node.input if i)

    absorbed = {id(u) for n in graph.node if n.op_type in WEIGHT_OPS and fed(n)
                for o in n.output for u in consumers.get(o, []) if u.op_type in ("Relu", "Clip") and requantized(u, 1)}
    for node in graph.node:
        if node.op_type in QDQ_OPS or id(node) in absorbed:
            continue
        if node.op_type in INTEGER_OPS or (fed(node) and (requantized(node) or node.op_type == "MatMul")):
            quantized[node.op_type] += 1
        elif node.op_type not in LAYOUT_OPS:
            kept[node.op_type] += 1
    return dict(sorted(quantized.items())), dict(sorted(kept.items()))


@contextlib.contextmanager
def quiet():
    """onnxruntime's quantizer prints progress to stdout and logs warnings; stdout is for results."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
