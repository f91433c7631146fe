from __future__ import annotations

import onnx
import pytest
from google.protobuf.message import DecodeError

from compress.loading.checkpoint import load
from compress.onnx.export import export_onnx
from compress.onnx.structure import TENSOR_VALUES, load_structure


def test_structure_is_the_model_without_the_initializers_values(tmp_path):
    path = export_onnx(load("digits"), tmp_path / "digits.onnx").path
    full = onnx.load(str(path))
    skimmed = load_structure(path)
    names = {f.number: f.name for f in onnx.TensorProto.DESCRIPTOR.fields}
    for tensor in full.graph.initializer:
        assert tensor.raw_data or tensor.float_data  # there were values to leave out
        for number in TENSOR_VALUES:
            tensor.ClearField(names[number])
    assert skimmed == full  # nodes, inputs, opsets, dims, types and names all kept
    assert skimmed.ByteSize() < path.stat().st_size / 20


@pytest.mark.parametrize("content", [b"not an onnx file at all", b"\x0a\xff\xff\xff\xff\x0f"])
def test_a_file_that_is_not_protobuf_raises_decode_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(DecodeError):
        load_structure(path)
