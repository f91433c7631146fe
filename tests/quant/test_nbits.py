"""Packed 4-bit MatMul weights (onnxruntime MatMulNBits) on a tiny real BERT."""

from __future__ import annotations

import onnx
import pytest

from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.metrics import cosine
from compress.onnx.export import export_onnx
from compress.onnx.outputs import onnx_outputs
from compress.onnx.session import open_session
from compress.predict import torch_outputs
from compress.quant.nbits import pack_4bit
from test_ort import _sentences, saved_bert


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return saved_bert(tmp_path_factory, hidden_size=64)


def test_every_linear_matmul_is_packed_to_4_bits_and_still_agrees(bert):
    model, path = bert
    packed = pack_4bit(path, path.with_name("bert.int4.onnx"), 16)
    ops = [n.op_type for n in onnx.load(str(packed.path)).graph.node]
    assert packed.layers == ops.count("MatMulNBits") == 12  # 2 layers x (Q, K, V, out, FFN in, FFN out)
    assert ops.count("MatMul") == 4  # QK^T and PV multiply activations: float
    # 4 bits a weight and one float scale per 16: (0.5 + 4/16) / 4 = 0.1875 of the float bytes
    assert packed.packed_weight_bytes == pytest.approx(0.1875 * packed.float_weight_bytes, rel=0.01)
    heldout = _sentences(64, 2)
    assert cosine(onnx_outputs(open_session(packed.path), heldout), torch_outputs(model, heldout)).mean() > 0.95


def test_the_embedding_table_goes_out_int8_per_row_at_the_graphs_opset(tmp_path_factory):
    model, path = saved_bert(tmp_path_factory, hidden_size=32, vocab_size=2048)
    packed = pack_4bit(path, path.with_name("bert.int4.onnx"), 16)
    assert packed.tables.tables == ("encoder.embeddings.word_embeddings.weight 2048 x 32",)
    proto = onnx.load(str(packed.path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17  # onnxruntime's own 4-bit Gather needs opset 21
    assert packed.bytes < path.stat().st_size - 2048 * 32 * 3
    heldout = _sentences(64, 2)
    assert cosine(onnx_outputs(open_session(packed.path), heldout), torch_outputs(model, heldout)).mean() > 0.95


def test_a_graph_without_linear_matmuls_is_refused(tmp_path):
    cnn = load("tiny_models:cnn")
    path = export_onnx(cnn, tmp_path / "cnn.onnx").path
    with pytest.raises(UsageError, match="no MatMul with a constant weight"):
        pack_4bit(path, tmp_path / "cnn.int4.onnx", 32)
    assert not (tmp_path / "cnn.int4.onnx").exists()
