"""Attention fusion before dynamic quantization: a BERT's self-attention becomes onnxruntime's
Attention, a SmoothQuant Mul on its input is taken out for the fusion and put back before the
fused node, and the float graph computes what it did."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from compress.onnx.export import export_onnx
from compress.onnx.outputs import onnx_outputs
from compress.onnx.session import open_session
from compress.quant.attention_fusion import attention_shape, fuse_attention, packed_layers
from compress.quant.smooth import attach


@pytest.fixture(scope="module")
def smoothed_bert(tmp_path_factory):
    from tiny_families import saved_family

    folder = tmp_path_factory.mktemp("fusion")
    model, data = saved_family("bert", folder)
    model = model.copy()
    g = torch.Generator().manual_seed(2)
    for at in ("encoder.encoder.layer.0.attention.self", "encoder.encoder.layer.1.intermediate"):
        hidden = model.module.get_submodule(at).query.in_features if at.endswith("self") else model.module.get_submodule(at).dense.in_features
        attach(model.module, at, hidden).inverse_scale.copy_(torch.rand(hidden, generator=g) + 0.5)
    return model, data, export_onnx(model, folder / "float.onnx").path


def test_attention_is_fused_with_the_smoothing_mul_before_it_and_the_same_outputs(smoothed_bert, tmp_path):
    model, data, source = smoothed_bert
    heads, hidden = attention_shape(model.module)
    assert (heads, hidden) == (model.module.encoder.config.num_attention_heads, model.module.encoder.config.hidden_size)
    target = tmp_path / "fused.onnx"
    assert fuse_attention(source, target, heads, hidden) == 2
    graph = onnx.load(str(target)).graph
    producers = {o: n for n in graph.node for o in n.output}
    attention = [n for n in graph.node if n.op_type == "Attention"]
    scaled = [producers[n.input[0]] for n in attention]
    # Layer 0's attention reads its input through the smoothing Mul; layer 1's reads the LayerNorm output.
    assert scaled[0].op_type == "Mul" and any("attention.self.smooth_input" in i for i in scaled[0].input)
    assert scaled[1].op_type == "LayerNormalization"
    ffn_mul = [n for n in graph.node if n.op_type == "Mul" and any("intermediate.smooth_input" in i for i in n.input)]
    assert len(ffn_mul) == 1
    reference, fused = onnx_outputs(open_session(source), data), onnx_outputs(open_session(target), data)
    assert float((reference - fused).abs().max()) < 1e-5
    # Each Attention's packed weight is the query, key and value weights ([in, out]) side by side.
    transposed = {name: m.weight.detach().t().contiguous().numpy() for name, m in model.module.named_modules()
                  if isinstance(m, nn.Linear) and ".attention.self." in name}
    packed = packed_layers(graph, transposed)
    assert sorted(names for _, names in packed.values()) == [
        [f"encoder.encoder.layer.{i}.attention.self.{p}" for p in ("query", "key", "value")] for i in (0, 1)]


def test_a_graph_without_bert_attention_fuses_nothing(tmp_path):
    from compress.model import Model, Source

    module = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    model = Model(module, (torch.randn(2, 8),), ("input",), "classification", Source("factory", "mlp"), "mlp")
    assert attention_shape(module) is None
    source = export_onnx(model, tmp_path / "mlp.onnx").path
    assert fuse_attention(source, tmp_path / "fused.onnx", 2, 8) == 0 and not (tmp_path / "fused.onnx").exists()
