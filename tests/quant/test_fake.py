"""LSQ fake quantization, BatchNorm folding and the QDQ export of a fake-quantized model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.data.specs import Dataset
from compress.errors import RunFailed
from compress.loading.checkpoint import load
from compress.metrics import cosine, top1_agreement
from compress.onnx.outputs import onnx_outputs
from compress.onnx.session import open_session
from compress.predict import torch_outputs
from compress.quant.fake import LsqQuantizer, quant_layers, weight_levels, wrap
from compress.quant.fold import conv_bn_pairs, fold
from compress.quant.prepare import init_steps, probe, quantizable
from compress.quant.qdq_export import export_quantized, verify


@pytest.mark.parametrize("bits, levels", [("8", 127), ("4", 7), ("3", 3), ("2", 1), ("ternary", 1)])
def test_weight_grids_are_symmetric_and_export_as_int8(bits, levels):
    assert weight_levels(bits) == (levels, levels)
    quant = LsqQuantizer(levels, levels, channels=3)
    with torch.no_grad():
        quant.step.copy_(torch.tensor([0.1, 0.2, 0.5]))
    w = torch.randn(3, 16) * 2
    q = quant(w)
    integers = q / quant.step.view(-1, 1)
    assert torch.allclose(integers, integers.round(), atol=1e-5)
    assert integers.abs().max() <= levels
    assert torch.equal(quant.quantized(w), q.detach())


def test_lsq_trains_the_step_and_passes_gradients_inside_the_range():
    quant = LsqQuantizer(0, 255)
    x = torch.linspace(-1, 3, 101, requires_grad=True)
    with torch.no_grad():
        quant.step.fill_(0.01)
    quant(x).sum().backward()
    assert quant.step.grad is not None and quant.step.grad.abs() > 0
    assert x.grad[x.detach() < 0].eq(0).all() and x.grad[(x.detach() > 0) & (x.detach() < 2.5)].eq(1).all()


def test_folding_batchnorm_keeps_the_outputs():
    model = load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),))
    x = torch.randn(16, 1, 8, 8)
    before = model(x)
    pairs = conv_bn_pairs(model.module, model.example_inputs)
    assert pairs == [("stem.0", "stem.1"), ("block.0", "block.1")]
    fold(model.module, pairs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.module.modules())
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-4)


def _fake_quantized(bits: str):
    model = load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),))
    fold(model.module, conv_bn_pairs(model.module, model.example_inputs))
    layers = quantizable(model.module)
    calibration = Dataset("c", (torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)),))
    shared, signed, samples = probe(model.module, layers, list(calibration.batches(32)))
    wrap(model.module, layers, bits, shared, signed)
    init_steps(model.module, samples, "mse", bits)
    return model, layers, shared, signed


def test_layers_reading_one_tensor_share_its_quantizer():
    model, layers, shared, signed = _fake_quantized("8")
    assert layers == ["stem.0", "block.0", "head"]
    assert shared == {} and signed == {"stem.0": True, "block.0": False, "head": False}
    assert quant_layers(model.module)["stem.0"].input_quant.q_n == 128


@pytest.mark.parametrize("bits", ["8", "4", "ternary"])
def test_qdq_export_matches_the_fake_quant_model(tmp_path, bits):
    model, *_ = _fake_quantized(bits)
    exported = export_quantized(model, tmp_path / "q.onnx")
    assert exported.quantized_ops["Conv"] == 2 and exported.quantized_ops["Gemm"] == 1
    heldout = Dataset("h", (torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(2)),))
    expected, got = torch_outputs(model, heldout), onnx_outputs(open_session(exported.path), heldout)
    # Near-tied logits of a random tiny model, and onnxruntime feeding the residual add from the
    # conv input's DQ too, leave a few flips; digits holds the 99.5% bar in the export pass.
    assert top1_agreement(got, expected) >= 0.95
    assert cosine(got, expected).mean() > 0.99


def test_int8_check_fails_naming_the_disagreements(tmp_path):
    model, *_ = _fake_quantized("8")
    other, *_ = _fake_quantized("ternary")  # another grid: a different function
    with torch.no_grad():
        other.module.head.inner.weight.mul_(-1)
    exported = export_quantized(other, tmp_path / "other.onnx")
    heldout = Dataset("h", (torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(2)),))
    with pytest.raises(RunFailed, match=r"agreement 0\.\d+ .* on 100 inputs of h, under the 0\.995 required \(\d+ disagreeing inputs; "
                                        r"the torch model's top-two logit gap on them is at most [\d.]+\)"):
        verify(model, exported.path, heldout)
    assert verify(model, export_quantized(model, tmp_path / "q.onnx").path, Dataset("one", (heldout.inputs[0][:1],)))["disagreeing"] == 0


def test_dynamic_quantizer_is_onnxruntimes_dynamic_quantize_linear():
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from compress.quant.fake import DynamicQuantizer

    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])])
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    g = torch.Generator().manual_seed(0)
    for x in (torch.randn(8, 64, generator=g) * 3, torch.rand(4, 16, generator=g) + 1, -torch.rand(4, 16, generator=g)):
        expected = session.run(None, {"x": x.numpy()})[0]
        got = DynamicQuantizer()(x).numpy()
        assert np.abs(got - expected).max() <= 1e-6 * max(1.0, np.abs(expected).max())


class _ReadsItsLayers(nn.Module):
    """As transformers' ViT: the forward reads a wrapped layer's attributes, and a block and a
    module inside it both produce tensors onnxruntime quantizes."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.block[0].weight.dtype)
        return self.head(self.block(x) + x)


@pytest.mark.parametrize("order", [("block", "block.1"), ("block.1", "block")])
def test_output_quantizers_nest_and_wrapped_layers_read_through(order):
    from compress.model import Model
    from compress.quant.fake import OutputQuant, output_quantizer, wrap_outputs
    from compress.quant.qdq_export import float_twin

    torch.manual_seed(0)
    module = _ReadsItsLayers().eval()
    x = torch.randn(8, 4)
    before = module(x)
    wrap(module, ["block.0", "head"], "8", {}, {"block.0": True, "head": True})
    wrap_outputs(module, {name: {"owner": None, "signed": name == "block"} for name in order})
    assert isinstance(module.block, OutputQuant) and isinstance(module.block.inner[1], OutputQuant)
    for name in order:
        assert output_quantizer(module, name) is not None
    assert module.block[0].weight is module.block.inner[0].inner.weight  # attributes read through both wrappers
    module(x)  # the forward's own attribute reads work
    model = Model(module, (x[:1],), ("input",), "classification", None, "reads")
    twin, layers = float_twin(model)
    assert sorted(layers) == ["block.0", "head"] and not any(isinstance(m, OutputQuant) for m in twin.module.modules())
    assert twin.module(x).shape == before.shape
