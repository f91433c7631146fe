from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError
from compress.loading.checkpoint import load
from compress.onnx.export import export_onnx
from compress.onnx.parity import check_parity
from compress.onnx.session import open_session


def test_export_is_opset_17_with_dynamic_batch_and_matches_torch(tmp_path):
    model = load("tiny_models:cnn")
    exported = export_onnx(model, tmp_path / "m.onnx")
    assert exported.opset == 17 and exported.exporter == "torchscript"
    assert exported.bytes == (tmp_path / "m.onnx").stat().st_size
    batch_dim = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    got = open_session(tmp_path / "m.onnx").run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5, rtol=1e-5)


def test_parity_reports_the_difference(tmp_path):
    model = load("tiny_models:cnn")
    export_onnx(model, tmp_path / "m.onnx")
    data = Dataset("random", (torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2)),))
    parity = check_parity(model, tmp_path / "m.onnx", data, tolerance=1e-4)
    assert parity.passed and parity.max_abs_diff < 1e-4 and parity.cosine_min > 0.99999
    # The same graph against a changed torch model: parity must see the change.
    changed = model.copy()
    with torch.no_grad():
        changed.module.head.bias.add_(0.5)
    assert not check_parity(changed, tmp_path / "m.onnx", data, tolerance=1e-4).passed


def test_failed_export_leaves_no_file(tmp_path):
    model = load("tiny_models:cnn")
    broken = model.replace(example_inputs=(torch.randn(1, 3, 8, 8),))  # wrong channel count
    with pytest.raises(RunFailed, match=r"no exporter could export cnn \(torchscript: RuntimeError: .*; dynamo: "):
        export_onnx(broken, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_session_rejects_non_onnx(tmp_path):
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(UsageError, match="onnxruntime rejects it"):
        open_session(tmp_path / "bad.onnx")
    with pytest.raises(UsageError, match="not found"):
        open_session(tmp_path / "missing.onnx")


def test_dynamo_is_the_fallback_and_is_recorded(tmp_path, monkeypatch, capfd):
    import compress.onnx.export as export_module

    real = export_module._export

    def torchscript_fails(module, model, path, opset, exporter):
        if exporter == "torchscript":
            raise RuntimeError("simulated TorchScript exporter failure")
        real(module, model, path, opset, exporter)

    monkeypatch.setattr(export_module, "_export", torchscript_fails)
    model = load("tiny_models:cnn")
    exported = export_onnx(model, tmp_path / "m.onnx")
    assert exported.exporter == "dynamo" and exported.opset >= 17
    data = Dataset("random", (torch.randn(3, 1, 8, 8),))
    assert check_parity(model, exported.path, data, tolerance=1e-4).passed
    assert capfd.readouterr().err == ""  # the exporters' own chatter stays out of the user's terminal


def test_parity_tolerance_scales_with_large_outputs(tmp_path):
    model = load("tiny_models:cnn")
    with torch.no_grad():
        model.module.head.bias.add_(1000.0)  # logits near 1000: float32 rounding is ~1e-4 there
    export_onnx(model, tmp_path / "m.onnx")
    data = Dataset("random", (torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)),))
    parity = check_parity(model, tmp_path / "m.onnx", data, tolerance=1e-4)
    assert parity.output_scale > 999 and parity.allowed == pytest.approx(parity.output_scale * 1e-4)
    assert parity.passed
