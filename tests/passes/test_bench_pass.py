"""The bench pass: the original is exported with the export step's config and parity-checked, or,
when no step changed the model, neither exported nor timed again."""

from __future__ import annotations

import onnx
import pytest
import torch

from compress.context import Context
from compress.data.specs import Dataset
from compress.loading.checkpoint import load
from compress.passes.bench import bench, same_model
from compress.passes.export import ExportConfig, export
from compress.recipe import make_step

FAST = make_step("bench", {"min_calls": 20, "warmup": 1, "max_seconds": 1, "target_pct": 5}).config


def _context(tmp_path, teacher) -> Context:
    data = Dataset("random", (torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)),))
    return Context(run_dir=tmp_path, teacher=teacher, data={"heldout": data})


def _exported(model, config: ExportConfig, ctx: Context) -> None:
    """What the pipeline does after an export step: record its file and its config."""
    result = export(model, config, ctx)
    ctx.artifacts.update(result.artifacts)
    ctx.configs["export"] = config


def test_a_changed_model_is_compared_with_the_original_exported_the_same_way(tmp_path):
    teacher = load("tiny_models:cnn")
    model = teacher.copy()
    with torch.no_grad():
        model.module.head.weight.mul_(0.5)  # a step changed it
    ctx = _context(tmp_path, teacher)
    _exported(model, ExportConfig(opset=19), ctx)

    result = bench(model, FAST, ctx)
    original = tmp_path / "original.onnx"
    assert result.artifacts["original_onnx"] == original
    opsets = {onnx.load(str(p)).opset_import[0].version for p in (original, tmp_path / "model.onnx")}
    assert opsets == {19}  # both graphs made with the export step's opset
    f = result.figures
    assert f["same_graph"] is False and f["original_parity_passed"] is True and f["original_parity_max_abs_diff"] < 1e-4
    assert f["latency_ratio_low"] <= f["latency_ratio"] <= f["latency_ratio_high"]
    assert 0.5 < f["latency_ratio"] < 2  # same architecture, same work
    assert f["stopped"] in ("converged", "time cap") and f["calls"] >= 20
    assert f["original_onnx_bytes"] == original.stat().st_size


def test_the_original_is_parity_checked_like_the_model(tmp_path):
    teacher = load("tiny_models:cnn")
    model = teacher.copy()
    with torch.no_grad():
        model.module.head.bias.add_(1.0)
    ctx = _context(tmp_path, teacher)
    _exported(model, ExportConfig(), ctx)
    ctx.configs["export"] = ExportConfig(tolerance=1e-12)  # a float32 graph cannot meet this: the original must fail it
    from compress.errors import RunFailed

    with pytest.raises(RunFailed, match="onnxruntime differs from torch") as caught:
        bench(model, FAST, ctx)
    assert "original.onnx" in str(caught.value)


def test_an_unchanged_model_is_timed_once_with_ratio_one(tmp_path):
    teacher = load("tiny_models:cnn")
    model = teacher.copy()
    ctx = _context(tmp_path, teacher)
    _exported(model, ExportConfig(), ctx)
    messages: list[str] = []
    ctx = Context(run_dir=ctx.run_dir, teacher=teacher, data=ctx.data, artifacts=ctx.artifacts, configs=ctx.configs, log=messages.append)

    result = bench(model, FAST, ctx)
    assert not (tmp_path / "original.onnx").exists() and "original_onnx" not in result.artifacts
    f = result.figures
    assert (f["latency_ratio"], f["latency_ratio_low"], f["latency_ratio_high"], f["same_graph"]) == (1.0, 1.0, 1.0, True)
    assert f["p50_ms"] == f["original_p50_ms"] > 0
    assert any("timed once" in m for m in messages)


def test_same_model_sees_any_change_of_weights_buffers_or_layout():
    teacher = load("tiny_models:cnn")
    assert same_model(teacher.copy(), teacher)
    changed = teacher.copy()
    with torch.no_grad():
        changed.module.stem[1].running_mean.add_(1e-6)  # a buffer, not a parameter
    assert not same_model(changed, teacher)
    wider = load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),))
    assert not same_model(wider, teacher)
    assert not same_model(teacher.replace(edits=({"kind": "prune"},)), teacher)
