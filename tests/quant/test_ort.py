"""onnxruntime PTQ on tiny real graphs: what is quantized, with which types, and that it still runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import transformers
from torch import nn

from compress.data.specs import Dataset
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.metrics import cosine, top1_agreement
from compress.model import Model, Source
from compress.onnx.export import export_onnx
from compress.onnx.outputs import onnx_outputs
from compress.onnx.session import open_session
from compress.predict import torch_outputs
from compress.quant.calibration import DatasetReader, real_length
from compress.quant.ort import has_integer_inputs, quantize_onnx, weight_nodes


def _images(n: int, seed: int, scale: float = 1.0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(f"random{seed}", (scale * torch.randn(n, 1, 8, 8, generator=g),))


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    model = load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),))
    path = export_onnx(model, tmp_path_factory.mktemp("cnn") / "model.onnx").path
    return model, path


def _initializers(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}


def test_static_qdq_of_a_cnn_runs_in_onnxruntime_and_agrees(cnn_onnx):
    model, path = cnn_onnx
    out = quantize_onnx(path, path.with_name("model.int8.onnx"), _images(64, 1), "auto", "uint8", 16)
    assert out.mode == "static" and out.calibration_rows == 64
    assert out.quantized_ops["Conv"] == 2 and out.quantized_ops["Gemm"] == 1 and out.float_ops == {}
    heldout = _images(128, 2)
    expected, got = torch_outputs(model, heldout), onnx_outputs(open_session(out.path), heldout)
    assert cosine(got, expected).mean() > 0.99
    assert top1_agreement(got, expected) >= 0.95


def test_relative_paths_are_preprocessed_too(cnn_onnx, tmp_path, monkeypatch):
    """Preprocessing runs in a scratch folder: a relative source once fell back to no preprocessing and failed."""
    _, path = cnn_onnx
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "model.onnx").write_bytes(path.read_bytes())
    monkeypatch.chdir(tmp_path)
    out = quantize_onnx(Path("runs/model.onnx"), Path("runs/model.int8.onnx"), _images(32, 1), "static", "uint8", 16)
    assert out.preprocess == "full" and out.quantized_ops["Conv"] == 2


def test_activations_are_uint8_and_weights_int8_per_output_channel(cnn_onnx):
    _, path = cnn_onnx
    graph = onnx.load(str(quantize_onnx(path, path.with_name("u8.onnx"), _images(32, 1), "static", "uint8", 16).path)).graph
    values = _initializers(graph)
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    weights = [n for n in dq if n.input[0] in values and values[n.input[0]].dtype == np.int8]
    activations = [n for n in dq if n.input[0] not in values]
    assert weights and activations
    for node in weights:  # symmetric, one scale per output channel of the 8-wide convs
        assert values[node.input[1]].shape[0] in (8, 10) and not values[node.input[2]].any()
    assert {values[n.input[2]].dtype for n in activations} == {np.dtype(np.uint8)}
    signed = quantize_onnx(path, path.with_name("s8.onnx"), _images(32, 1), "static", "int8", 16).path
    signed_values = _initializers(onnx.load(str(signed)).graph)
    assert {np.dtype(np.int8)} == {signed_values[n.input[2]].dtype for n in onnx.load(str(signed)).graph.node if n.op_type == "QuantizeLinear"}


def test_calibration_sets_the_ranges(cnn_onnx):
    """Ranges from far too small inputs saturate on real ones, so every output looks alike:
    calibration data is really used."""
    model, path = cnn_onnx
    narrow = quantize_onnx(path, path.with_name("narrow.onnx"), _images(64, 1, scale=1e-3), "static", "uint8", 16).path
    heldout = _images(128, 2)
    got, expected = onnx_outputs(open_session(narrow), heldout), torch_outputs(model, heldout)
    assert got.std(dim=0).mean() < 0.1 * expected.std(dim=0).mean()


class Elementwise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2 + 1


def test_a_graph_without_weights_is_refused(tmp_path):
    module = Elementwise()
    model = Model(module, (torch.randn(1, 4),), ("input",), "embedding", Source("factory", "x"), "elementwise")
    path = export_onnx(model, tmp_path / "m.onnx").path
    with pytest.raises(UsageError, match="nothing to quantize"):
        quantize_onnx(path, tmp_path / "q.onnx", Dataset("d", (torch.randn(4, 4),)), "static", "uint8", 4)
    assert not (tmp_path / "q.onnx").exists()


def test_text_batches_are_cut_to_their_longest_sentence():
    ids = torch.arange(24).reshape(3, 8)
    mask = torch.tensor([[1] * 3 + [0] * 5, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6])
    data = Dataset("t", (ids, mask))
    assert real_length(data.inputs, ["input_ids", "attention_mask"]) == 5
    reader = DatasetReader(data, ["input_ids", "attention_mask"], batch_size=2)
    shapes = [tuple(feed["input_ids"].shape) for feed in iter(reader.get_next, None)]
    assert shapes == [(2, 5), (1, 2)]
    assert real_length(_images(2, 0).inputs, ["input"]) is None


def test_text_calibration_is_sorted_by_length_before_it_is_cut():
    """Text with a known mask (every text:... spec) is batched longest first, as reference outputs
    and parity are, so each batch carries little padding; every row is still fed once."""
    lengths = [2, 5, 3, 5]
    ids = torch.arange(1, 25).reshape(4, 6)
    mask = (torch.arange(6)[None] < torch.tensor(lengths)[:, None]).long()
    reader = DatasetReader(Dataset("t", (ids * mask, mask), mask_input=1), ["input_ids", "attention_mask"], batch_size=2)
    feeds = list(iter(reader.get_next, None))
    assert [tuple(f["input_ids"].shape) for f in feeds] == [(2, 5), (2, 3)]  # in file order: (2, 5), (2, 5)
    fed = sorted(tuple(row[row != 0].tolist()) for f in feeds for row in torch.from_numpy(f["input_ids"]))
    assert fed == sorted(tuple(row[row != 0].tolist()) for row in ids * mask)


def saved_bert(tmp_path_factory, hidden_size: int, vocab_size: int = 50) -> tuple:
    """A seeded 2-layer BERT (FFN twice the hidden width) saved, loaded by compress and exported:
    the model and its ONNX path."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=2 * hidden_size, max_position_embeddings=32)
    folder = tmp_path_factory.mktemp("bert") / "bert"
    transformers.BertModel(config).save_pretrained(folder)
    model = load(str(folder), seq_len=16)
    return model, export_onnx(model, folder.parent / "bert.onnx").path


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return saved_bert(tmp_path_factory, hidden_size=32)


def _sentences(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (n, 16), generator=g)
    lengths = torch.randint(4, 17, (n,), generator=g)
    mask = (torch.arange(16)[None] < lengths[:, None]).long()
    return Dataset("sentences", (ids * mask, mask))


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_text_encoders_quantize_only_weight_nodes_and_keep_the_mask_path_float(bert, mode):
    model, path = bert
    graph = onnx.load(str(path)).graph
    assert has_integer_inputs(graph)
    out = quantize_onnx(path, path.with_name(f"bert.{mode}.onnx"), _sentences(32, 1), mode, "uint8", 8)
    # 2 layers x 6 Linear MatMuls; QK^T and PV (two activations) stay float, as do Softmax and LayerNorm.
    linear = sum(n.op_type == "MatMul" for n in weight_nodes(graph))
    assert linear == 12
    assert out.quantized_ops.get("MatMul", 0) + out.quantized_ops.get("MatMulInteger", 0) == 12
    assert {"Softmax", "LayerNormalization"} <= set(out.float_ops)
    # Each LayerNorm's residual Add (embeddings, attention output, FFN output of both layers) is a Sum,
    # so onnxruntime does not fuse it into its slower SkipLayerNormalization (compress.onnx.residual_sum).
    assert out.adds_as_sum == out.float_ops["LayerNormalization"] == 5 and out.float_ops["Sum"] == 5
    heldout = _sentences(64, 2)
    assert cosine(onnx_outputs(open_session(out.path), heldout), torch_outputs(model, heldout)).mean() > 0.98


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_text_embedding_tables_go_out_int8_with_a_scale_per_row(tmp_path_factory, mode):
    # 2,048 x 32: large enough to be stored int8 (compress.quant.embeddings.MIN_VALUES); the
    # 32 x 32 position table stays float.
    model, path = saved_bert(tmp_path_factory, hidden_size=32, vocab_size=2048)
    out = quantize_onnx(path, path.with_name(f"bert.{mode}.onnx"), _sentences(32, 1), mode, "uint8", 8)
    assert out.tables.tables == ("encoder.embeddings.word_embeddings.weight 2048 x 32",)
    stored = _initializers(onnx.load(str(out.path)).graph)
    assert stored["encoder.embeddings.word_embeddings.weight_int8"].dtype == np.int8
    assert stored["encoder.embeddings.word_embeddings.weight_row_scale"].shape == (2048, 1)
    # Nothing else of the table: no float copy, no onnxruntime per-tensor quantization of its Gather.
    assert {n for n in stored if n.startswith("encoder.embeddings.word_embeddings")} == {
        "encoder.embeddings.word_embeddings.weight_int8", "encoder.embeddings.word_embeddings.weight_row_scale"}
    heldout = _sentences(64, 2)
    assert cosine(onnx_outputs(open_session(out.path), heldout), torch_outputs(model, heldout)).mean() > 0.98
