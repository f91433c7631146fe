"""Export + onnxruntime parity across the architectures compress will be asked to handle:
transformers' vision and text families (tiny random configs, built here, nothing fetched) and
plain-torch CNNs with channel concat, depthwise and grouped convolutions."""

from __future__ import annotations

import pytest
import torch
from tiny_families import HF_CASES, ConcatDepthwiseGrouped, saved_family

from compress.data.specs import Dataset
from compress.loading.checkpoint import load
from compress.onnx.export import export_onnx
from compress.onnx.parity import check_parity


@pytest.mark.parametrize("name", sorted(HF_CASES))
def test_hugging_face_families_export_with_parity(name, tmp_path):
    model, data = saved_family(name, tmp_path)
    exported = export_onnx(model, tmp_path / f"{name}.onnx")
    assert exported.opset == 17
    parity = check_parity(model, exported.path, data, tolerance=1e-4)
    assert parity.passed, parity


def test_plain_cnn_with_concat_depthwise_and_grouped_convs(tmp_path):
    torch.manual_seed(0)
    module = ConcatDepthwiseGrouped().eval()
    model = load("tiny_models:cnn").replace(module=module, example_inputs=(torch.randn(1, 3, 16, 16),))
    exported = export_onnx(model, tmp_path / "cnn.onnx")
    data = Dataset("random", (torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)),))
    assert check_parity(model, exported.path, data, tolerance=1e-4).passed
