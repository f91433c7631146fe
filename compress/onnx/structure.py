"""An ONNX file's structure without its weights.

`onnx.load` reads every initializer's values into Python (90 MB for MiniLM, and the same again
while protobuf parses them) even where only the opset, the nodes or the tables' shapes are
read. `load_structure` walks the protobuf wire format over a memory map instead and copies
everything but the initializers' values, so the pages that hold the weights are never read.
Field numbers are those of onnx/onnx.proto (ModelProto, GraphProto, TensorProto).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
# TensorProto's value fields: float_data, int32_data, string_data, int64_data, raw_data,
# double_data, uint64_data. Kept: dims, data_type, name, doc_string, external data references.
TENSOR_VALUES = frozenset({4, 5, 6, 7, 9, 10, 11})
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def load_structure(path: str | Path) -> onnx.ModelProto:
    """The model in `path` with every graph initializer's values left out (dims, type and name
    kept); protobuf's DecodeError for a file that is not ONNX, like `onnx.load`."""
    with open(path, "rb") as handle:
        if not handle.seek(0, 2):
            return onnx.ModelProto()  # an empty file parses as an empty model, as with onnx.load
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return onnx.ModelProto.FromString(bytes(_without(buffer, 0, len(buffer), _model_field)))


def _model_field(buffer: mmap.mmap, field: int, wire: int, start: int, body: int, end: int) -> bytes:
    if field == MODEL_GRAPH and wire == LENGTH_DELIMITED:
        return _embedded(field, _without(buffer, body, end, _graph_field))
    return buffer[start:end]


def _graph_field(buffer: mmap.mmap, field: int, wire: int, start: int, body: int, end: int) -> bytes:
    if field == GRAPH_INITIALIZER and wire == LENGTH_DELIMITED:
        return _embedded(field, _without(buffer, body, end, _tensor_field))
    return buffer[start:end]


def _tensor_field(buffer: mmap.mmap, field: int, wire: int, start: int, body: int, end: int) -> bytes:
    return b"" if field in TENSOR_VALUES else buffer[start:end]


def _without(buffer: mmap.mmap, start: int, end: int, keep) -> bytearray:
    """The message in buffer[start:end] again, each field passed through `keep` (which returns
    the bytes to write for it: the field as it was, rewritten, or nothing)."""
    out = bytearray()
    for field, wire, field_start, body, field_end in _fields(buffer, start, end):
        out += keep(buffer, field, wire, field_start, body, field_end)
    return out


def _fields(buffer: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, where the field starts, where its value starts, where it ends)."""
    position = start
    while position < end:
        key, body = _varint(buffer, position)
        field, wire = key >> 3, key & 7
        if wire == VARINT:
            after = _varint(buffer, body)[1]
        elif wire == FIXED64:
            after = body + 8
        elif wire == FIXED32:
            after = body + 4
        elif wire == LENGTH_DELIMITED:
            length, body = _varint(buffer, body)
            after = body + length
        else:  # groups (3, 4) are not in onnx.proto; anything else is not protobuf
            raise DecodeError(f"wire type {wire} at byte {position}")
        if after > end:
            raise DecodeError(f"field {field} runs past its message at byte {position}")
        yield field, wire, position, body, after
        position = after


def _varint(buffer: mmap.mmap, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise DecodeError(f"truncated varint at byte {position}")
        byte = buffer[position]
        value |= (byte & 0x7F) << shift
        position += 1
        shift += 7
        if not byte & 0x80:
            return value, position


def _embedded(field: int, message: bytearray) -> bytes:
    return bytes(_encode_varint(field << 3 | LENGTH_DELIMITED) + _encode_varint(len(message))) + message


def _encode_varint(value: int) -> bytearray:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return out
