"""prune 0.5 -> export -> onnxruntime parity on every family compress is tested on: the tensors
really go (params, MACs and ONNX bytes drop) and onnxruntime agrees with the pruned torch model."""

from __future__ import annotations

import pytest
import torch
from tiny_families import HF_CASES, ConcatDepthwiseGrouped, saved_family

from compress.context import Context
from compress.data.specs import Dataset
from compress.loading.checkpoint import load
from compress.metrics import mac_count, param_count
from compress.onnx.export import export_onnx
from compress.onnx.parity import check_parity
from compress.passes.prune import PruneConfig, prune

# Channel graphs of these two take several seconds to trace and check on 2 cores.
SLOW = {"mobilenet_v2", "efficientnet"}


def _prune_export_parity(model, tmp_path, data):
    ctx = Context(run_dir=tmp_path, teacher=model)
    pruned = prune(model, PruneConfig(ratio=0.5, round_to=1), ctx).model
    assert param_count(pruned.module) < param_count(model.module)
    assert mac_count(pruned.module, pruned.example_inputs) < 0.75 * mac_count(model.module, model.example_inputs)
    dense, small = export_onnx(model, tmp_path / "dense.onnx"), export_onnx(pruned, tmp_path / "pruned.onnx")
    assert small.bytes < dense.bytes
    parity = check_parity(pruned, small.path, data, tolerance=1e-4)
    assert parity.passed, parity
    return pruned


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(HF_CASES)])
def test_hugging_face_families_prune_export_with_parity(name, tmp_path):
    model, data = saved_family(name, tmp_path)
    pruned = _prune_export_parity(model, tmp_path, data)
    assert pruned(*model.example_inputs).shape == model(*model.example_inputs).shape


def test_plain_cnn_with_concat_depthwise_and_grouped_convs(tmp_path):
    torch.manual_seed(0)
    model = load("tiny_models:cnn").replace(module=ConcatDepthwiseGrouped().eval(), example_inputs=(torch.randn(1, 3, 16, 16),))
    data = Dataset("random", (torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)),))
    pruned = _prune_export_parity(model, tmp_path, data)
    # The grouped conv keeps 4 equal groups: its channels stay a multiple of its group count.
    assert pruned.module.grouped.in_channels % 4 == 0 and pruned.module.grouped.out_channels % 4 == 0
    assert pruned.module.depthwise.groups == pruned.module.depthwise.out_channels < 16
