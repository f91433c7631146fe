"""Packed 4-bit weights for MatMul layers (Linear layers of text models) with onnxruntime's
MatMulNBits kernel (`onnxruntime.quantization.matmul_nbits_quantizer`).

Each MatMul whose weight is a constant gets its weight quantized symmetrically in blocks of
`block_size` input rows, two values to a byte, with one float scale per block; the kernel
dequantizes on the fly and multiplies in float (accuracy level unset: on this project's CPU the
int8-compute level 4 ran slower, benchmarks/README.md). Embedding tables go out as int8 with one
scale per row (compress.quant.embeddings; onnxruntime's own 4-bit Gather raises the graph to opset
21, which breaks the exported ReduceL2). Everything else stays float32: attention's
activation-by-activation MatMuls, LayerNorm and Softmax. onnxruntime has no 4-bit Conv or Gemm
kernel, so a graph without such a MatMul is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper

from compress.atomic import atomic_path
from compress.errors import RunFailed, UsageError
from compress.quant.embeddings import Int8Tables, int8_tables
from compress.quant.ort import quiet, weight_nodes

KERNEL = "MatMulNBits"


@dataclass(frozen=True)
class Packed:
    path: Path
    layers: int  # MatMuls now MatMulNBits
    packed_weight_bytes: int  # their 4-bit weights, scales included
    float_weight_bytes: int  # the same weights as float32 before
    bytes: int  # the whole file
    tables: Int8Tables  # embedding tables stored int8 per row (compress.quant.embeddings)


def pack_4bit(source: Path, target: Path, block_size: int) -> Packed:
    """`source` with every constant-weight MatMul as a 4-bit MatMulNBits, written atomically to `target`."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    proto = onnx.load(str(source))
    values = {i.name: i for i in proto.graph.initializer}
    matmuls = [n for n in weight_nodes(proto.graph) if n.op_type == "MatMul" and n.input[1] in values]
    if not matmuls:
        raise UsageError("ptq option weight-bits", "4", f"{source.name} has no MatMul with a constant weight (a Linear layer of a text model), "
                         "and onnxruntime has no 4-bit Conv or Gemm kernel; use --weight-bits 8, or qat --bits 4 for a 4-bit grid inside INT8")
    float_bytes = sum(numpy_helper.to_array(values[n.input[1]]).nbytes for n in matmuls)
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, quant_format=QuantFormat.QOperator, op_types_to_quantize=("MatMul",))
    try:
        with quiet(), _quiet_quantizer():
            quantizer = MatMulNBitsQuantizer(proto, algo_config=config)
            quantizer.process()
    except Exception as exc:  # onnxruntime's quantizer raises untyped errors from deep inside
        raise RunFailed(f"onnxruntime could not pack {source.name} to 4-bit: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    packed = quantizer.model.model
    kernels = [n for n in packed.graph.node if n.op_type == KERNEL]
    inits = {i.name: i for i in packed.graph.initializer}
    packed_bytes = sum(len(inits[name].raw_data) or numpy_helper.to_array(inits[name]).nbytes
                       for n in kernels for name in n.input[1:] if name in inits)
    tables = int8_tables(packed.graph, round_float=True)
    with atomic_path(target) as tmp:
        onnx.save(packed, str(tmp))
    return Packed(target, len(kernels), packed_bytes, float_bytes, target.stat().st_size, tables)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The 4-bit quantizer logs each node through its own logger (with a handler of its own)."""
    import logging

    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
