"""Embedding tables stored as int8 with one scale per row, in an INT8 ONNX graph.

A text encoder's word-embedding table is most of its file: MiniLM's 30,522 x 384 floats are 47 of
the 59 MB of its INT8 graph when they stay float. onnxruntime's `quantize_dynamic` stores the table as
int8 with one scale for the whole tensor, whose step is set by the largest value of all (1.05 in
MiniLM, while the median row's largest is 0.18: a 6x coarser grid than that row needs). A Gather
reads whole rows, so each row can carry its own scale at no cost:

    Gather(table, ids)  ->  Mul(Cast(Gather(table_int8, ids), float), Gather(row_scales, ids))

Only standard ONNX operators at the graph's opset, so any runtime runs it (onnxruntime's own
4-bit Gather raises the graph to opset 21). `qat` rounds the tables on this grid in the
torch model (compress.quant.fake.TableQuant), so the exported float graph already holds values on
it and this rewrite only changes how they are stored: a table whose values are not on their row
grid is left float, and the INT8 graph computes what the fake-quantized torch model does. `ptq`
rounds the float tables here (`round_float`) in place of onnxruntime's per-tensor Gather.
Measured on MiniLM (benchmarks/README.md, "Embedding tables in int8"): qat W8A8 58.6 -> 23.0 MB
at held-out cosine 0.99771 -> 0.99774; `ptq`'s dynamic INT8, whose only difference from
onnxruntime's `quantize_dynamic` is the table's grid, 0.99307 against its 0.99277.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Tables under 64 Ki values (256 KB in float) are left alone: nothing to gain, and BERT's
# token-type table (2 rows) would only gain nodes. The torch side (qat) picks tables by this too.
MIN_VALUES = 1 << 16


@dataclass(frozen=True)
class Int8Tables:
    tables: tuple[str, ...]  # initializer names, "name rows x width"
    float_bytes: int
    int8_bytes: int  # the int8 tables and their float32 row scales


def _table_gathers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Float32 rank-2 initializers of at least MIN_VALUES that only Gathers on axis 0 read, with
    those Gathers (a table any other node reads too stays float)."""
    initializers = {i.name: i for i in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    # A table that is also a graph input (older exporters list initializers as inputs, overridable)
    # or output keeps its float name and type.
    exposed = {o.name for o in graph.output} | {i.name for i in graph.input}
    found = {}
    for name, init in initializers.items():
        if init.data_type != TensorProto.FLOAT or len(init.dims) != 2 or int(np.prod(init.dims)) < MIN_VALUES or name in exposed:
            continue
        users = readers.get(name, [])
        if users and all(_row_gather(node, name) for node in users):
            found[name] = users
    return found


def _row_gather(node: onnx.NodeProto, table: str) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return node.op_type == "Gather" and node.domain in ("", "ai.onnx") and node.input[0] == table and axis == 0


def row_quantize(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: (int8 values, float32 scales [rows, 1]); an all-zero row gets scale 1."""
    largest = np.abs(table).max(axis=1, keepdims=True)
    scales = np.where(largest > 0, largest / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(table / scales), -127, 127).astype(np.int8), scales


# How far (relative to its row's largest value) a stored value may move: float32 rounding of the
# recomputed scale, about 1e-7; a table off its grid moves by up to half a step, 1/254.
ON_GRID = 1e-5


def on_grid(table: np.ndarray, quantized: np.ndarray, scales: np.ndarray) -> bool:
    """Whether int8 `quantized` times `scales` gives back `table` to float32 rounding."""
    largest = np.abs(table).max(axis=1, keepdims=True)
    return bool(np.all(np.abs(quantized.astype(np.float32) * scales - table) <= ON_GRID * largest))


def int8_tables(graph: onnx.GraphProto, round_float: bool = False) -> Int8Tables:
    """Rewrite, in place, every embedding table (see `_table_gathers`) whose values are on their
    per-row int8 grid as int8 with row scales, and each Gather reading it as Gather -> Cast -> Mul
    by the gathered scales; the Gather's output name is kept, so every reader is unchanged.
    `round_float`: round the other tables onto their grid too (`ptq`, which has no fake-quantized
    torch model to match and checks the result against the float model instead)."""
    tables = _table_gathers(graph)
    initializers = {i.name: i for i in graph.initializer}
    replaced: dict[int, list[onnx.NodeProto]] = {}
    names, float_bytes, int8_bytes = [], 0, 0
    for name, gathers in tables.items():
        values = numpy_helper.to_array(initializers[name])
        quantized, scales = row_quantize(values)
        if not round_float and not on_grid(values, quantized, scales):
            continue
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([numpy_helper.from_array(quantized, f"{name}_int8"), numpy_helper.from_array(scales, f"{name}_row_scale")])
        names.append(f"{name} {values.shape[0]} x {values.shape[1]}")
        float_bytes += values.nbytes
        int8_bytes += quantized.nbytes + scales.nbytes
        for node in gathers:
            out, ids, stem = node.output[0], node.input[1], node.name or out
            replaced[id(node)] = [
                helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_int8"], name=f"{stem}_int8"),
                helper.make_node("Gather", [f"{name}_row_scale", ids], [f"{out}_row_scale"], name=f"{stem}_row_scale"),
                helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], name=f"{stem}_cast", to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{out}_float", f"{out}_row_scale"], [out], name=f"{stem}_dequantize"),
            ]
    if replaced:
        nodes = [new for node in graph.node for new in replaced.get(id(node), [node])]
        del graph.node[:]
        graph.node.extend(nodes)
    return Int8Tables(tuple(names), float_bytes, int8_bytes)


def table_summary(tables: Int8Tables) -> str:
    """The report's line: which tables are int8 per row and the bytes they went from and to."""
    if not tables.tables:
        return "none"
    return f"{', '.join(tables.tables)}: int8, one scale per row ({tables.float_bytes:,} -> {tables.int8_bytes:,} bytes)"
