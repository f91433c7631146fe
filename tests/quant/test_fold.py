"""BatchNorm folding finds its conv -> BN pairs by running the model, so it covers models torch.fx
cannot trace (transformers'), and leaves alone every pair whose folding would change the outputs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cli_checks import one_line_error
from compress.cli.main import cli
from compress.quant.fold import conv_bn_pairs, fold
from tiny_families import saved_family


def _randomize_statistics(module: nn.Module) -> None:
    """Running statistics and affine terms far from the identity, so a wrong fold shows."""
    g = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(m.num_features, generator=g))
                m.bias.data.copy_(torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize("family", ["resnet", "mobilenet_v2", "efficientnet"])
def test_transformers_cnns_fold_every_batchnorm_and_keep_their_outputs(tmp_path, family):
    model, images = saved_family(family, tmp_path)
    _randomize_statistics(model.module)
    x = images.inputs[0]
    before = model(x)
    pairs = conv_bn_pairs(model.module, model.example_inputs)
    batchnorms = [name for name, m in model.module.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(bn for _, bn in pairs) == sorted(batchnorms)  # fx could trace none of these
    fold(model.module, pairs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.module.modules())
    torch.testing.assert_close(model(x), before, atol=1e-4, rtol=1e-4)


class _Unfoldable(nn.Module):
    """Four conv -> BN pairs that must not fold: the conv's output also feeds the head; the conv's
    output changed in place before the BN reads it; one BN called twice; one conv called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.shared_out, self.shared_bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.inplace, self.inplace_bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.twice, self.twice_bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.again, self.again_bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.plain, self.plain_bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.shared_out(x)
        y = self.shared_bn(a) + a
        b = self.inplace(x)
        b.mul_(2)
        y = y + self.inplace_bn(b)
        y = y + self.twice_bn(self.twice(x)) + self.twice_bn(self.twice(x) * 3)
        y = y + self.again_bn(self.again(x)) + self.again(x)
        return (y + self.plain_bn(self.plain(x))).mean(dim=(2, 3))


def test_pairs_whose_folding_would_change_the_outputs_are_left_alone():
    torch.manual_seed(0)
    module = _Unfoldable().eval()
    _randomize_statistics(module)
    x = torch.randn(2, 3, 4, 4)
    before = module(x)
    pairs = conv_bn_pairs(module, (x,))
    assert pairs == [("plain", "plain_bn")]  # without affine terms, still folded
    fold(module, pairs)
    torch.testing.assert_close(module(x), before, atol=1e-5, rtol=1e-5)
    assert module.training is False


def test_transformers_resnet_qat_int8_export_end_to_end(runner, tmp_path):
    """The bug this fixes: no BatchNorm folded in transformers' ResNet, so the INT8 export, which
    found no conv reading the trained weights, failed the run."""
    saved_family("resnet", tmp_path)
    g = torch.Generator().manual_seed(0)
    for name, count in (("train", 16), ("heldout", 24)):
        save_file({"pixel_values": torch.randn(count, 3, 224, 224, generator=g)}, tmp_path / f"{name}.safetensors")
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--model", str(tmp_path / "resnet"), "--out", str(out), "--data", f"tensors:{tmp_path / 'heldout.safetensors'}",
                                 "qat", "--bits", "8", "--steps", "2", "--batch-size", "8",
                                 "--data", f"tensors:{tmp_path / 'train.safetensors'}", "export"])
    assert result.exit_code == 0, result.stderr
    assert "8 BatchNorms folded" in result.stderr
    assert (out / "model.onnx").exists()


def test_calibration_data_the_int8_graph_cannot_take_is_one_line(runner, tmp_path):
    """Data of another image size runs in torch (the ResNet pools globally) but not in the exported
    graph, whose image size is fixed: refused as the float export refuses it, not as a failed run."""
    saved_family("resnet", tmp_path)
    save_file({"pixel_values": torch.randn(8, 3, 64, 64)}, tmp_path / "small.safetensors")
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--model", str(tmp_path / "resnet"), "--out", str(out), "qat", "--steps", "1", "--batch-size", "4",
                                 "--data", f"tensors:{tmp_path / 'small.safetensors'}", "export"])
    one_line_error(result, 2, "[8, 3, 64, 64]", "224", "--data")
    assert not out.exists()


@pytest.mark.slow  # 10-25 s: MobileNetV2's placement and export
def test_int8_graph_onnxruntime_cannot_run_is_a_failed_run_not_an_internal_error(runner, tmp_path):
    """The tiny random MobileNetV2's last activations are near 1e-25: the learned scales around its
    pooling are outside what onnxruntime's QLinearGlobalAveragePool computes, and running the INT8
    graph raises. That is the run failing its check (exit 1, onnxruntime's words), not a crash."""
    saved_family("mobilenet_v2", tmp_path)
    g = torch.Generator().manual_seed(0)
    for name in ("train", "heldout"):
        save_file({"pixel_values": torch.randn(8, 3, 64, 64, generator=g)}, tmp_path / f"{name}.safetensors")
    result = runner.invoke(cli, ["run", "--model", str(tmp_path / "mobilenet_v2"), "--out", str(tmp_path / "run"),
                                 "--data", f"tensors:{tmp_path / 'heldout.safetensors'}", "qat", "--steps", "0", "--batch-size", "8",
                                 "--data", f"tensors:{tmp_path / 'train.safetensors'}", "export"])
    one_line_error(result, 1, "onnxruntime cannot run the INT8 graph", "QLinearGlobalAveragePool")
