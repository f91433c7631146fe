"""SmoothQuant input smoothing: where the Mul goes, exactness in float, copies and reloads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.data.specs import Dataset
from compress.quant.prepare import probe, quantizable, reaching_output
from compress.quant.smooth import candidates, scales, smooth


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from tiny_families import saved_family

    return saved_family("bert", tmp_path_factory.mktemp("smooth"))


def _groups(model, data):
    layers = reaching_output(model.module, quantizable(model.module), model.example_inputs)
    shared, _, _ = probe(model.module, layers, [data])
    return candidates(model.module, layers, shared, [data])


def test_readers_of_one_tensor_share_one_mul_on_their_parent(bert):
    model, data = bert
    groups = {g.at: g.readers for g in _groups(model, data)}
    prefix = "encoder.encoder.layer.0."
    assert groups[prefix + "attention.self"] == tuple(prefix + f"attention.self.{n}" for n in ("query", "key", "value"))
    assert groups[prefix + "intermediate"] == (prefix + "intermediate.dense",)
    assert groups[prefix + "output"] == (prefix + "output.dense",)  # the GELU output, not the residual
    assert len(groups) == 8  # 4 inputs x 2 layers; the pooler does not reach the output


def test_smoothing_every_input_leaves_the_float_model_unchanged_and_survives_a_copy(bert):
    model, data = bert
    smoothed = model.copy()
    reference = model(*data.inputs)
    for group in _groups(smoothed, data):
        weights = [smoothed.module.get_submodule(n) for n in group.readers]
        scale = scales(weights, group.input_max, 0.5)
        assert not torch.allclose(scale, torch.ones_like(scale))
        smooth(smoothed.module, group, scale, weights)
    assert torch.allclose(smoothed(*data.inputs), reference, atol=1e-5)
    twin = smoothed.copy()  # the hook of the copy reads the copy's scale
    twin.module.get_submodule("encoder.encoder.layer.0.intermediate.smooth_input").inverse_scale.mul_(2)
    assert torch.allclose(smoothed(*data.inputs), reference, atol=1e-5)
    assert not torch.allclose(twin(*data.inputs), reference, atol=1e-3)


def test_no_channel_quieter_than_the_median_one_is_amplified():
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    # Without the floor the first channel's scale would be 0.1 (0.01 ** 0.5): amplified 10x.
    scale = scales([layer], torch.tensor([0.01, 1.0, 2.0, 50.0]), 0.5)
    assert torch.allclose(scale, torch.tensor([1.0, 1.0, 2.0 ** 0.5, 50.0 ** 0.5]))


class _ResidualFirst(nn.Module):
    """A block whose first input is not what its layer reads: no place for the Mul."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(4, 4)

    def forward(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return residual + self.dense(x)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = _ResidualFirst()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x, torch.relu(x)))


def test_a_group_without_a_parent_taking_its_input_first_is_left_out():
    net = _Net()
    batch = Dataset("x", (torch.randn(3, 4),))
    # block.dense reads relu(x), the second input of block; head sits at the top level (no parent).
    assert candidates(net, ["block.dense", "head"], {}, [batch]) == []
