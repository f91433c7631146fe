from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from compress.context import Context
from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError
from compress.loading.checkpoint import load
from compress.pipeline import Step, check_runs, run
from compress.recipe import Recipe, make_step
from compress.runner import run as run_recipe
from tiny_models import NaNHead


def _heldout(n: int = 32) -> Dataset:
    g = torch.Generator().manual_seed(5)
    return Dataset("random", (torch.randn(n, 1, 8, 8, generator=g),), torch.randint(0, 10, (n,), generator=g))


def test_export_step_records_stats_and_artifacts(tmp_path):
    model = load("tiny_models:cnn")
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _heldout()})
    record = run(model, [make_step("export", {})], ctx)
    step = record.steps[0]
    assert step.after["params"] == record.original["params"] > 0
    assert step.after["macs"] == record.original["macs"] > 0
    assert step.after["quality"]["agreement"] == 1.0
    assert step.figures["opset"] == 17 and step.figures["parity_max_abs_diff"] < 1e-4
    assert ctx.artifacts["onnx"] == tmp_path / "model.onnx"


def test_pass_does_not_mutate_its_input(tmp_path):
    model = load("tiny_models:cnn")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    run(model, [make_step("export", {})], Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _heldout()}))
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())


def test_parity_failure_names_the_step(tmp_path):
    model = load("tiny_models:cnn")
    steps = [make_step("export", {"filename": "a.onnx"}), make_step("export", {"tolerance": 1e-12, "filename": "b.onnx"})]
    with pytest.raises(RunFailed, match=r"step 2 \(export\) after export: onnxruntime differs from torch by"):
        run(model, steps, Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _heldout()}))
    assert not (tmp_path / "b.onnx").exists() or (tmp_path / "b.onnx").stat().st_size > 0


def test_check_runs_catches_broken_models():
    teacher = load("tiny_models:cnn")
    wrong_shape = teacher.replace(module=nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
    with pytest.raises(RunFailed, match=r"output shape changed from \[1, 10\] to \[1, 3\]"):
        check_runs(wrong_shape, teacher(*teacher.example_inputs).shape, "step 1 (x)")
    nan = teacher.replace(module=nn.Sequential(nn.Flatten(), nn.Linear(64, 10), NaNHead()))
    with pytest.raises(RunFailed, match="non-finite"):
        check_runs(nan, teacher(*teacher.example_inputs).shape, "step 1 (x)")


def test_bench_without_export_is_usage_error(tmp_path):
    model = load("tiny_models:cnn")
    with pytest.raises(UsageError, match="put an export step before bench"):
        run(model, [make_step("bench", {})], Context(run_dir=tmp_path, teacher=model.copy()))


def test_runner_writes_report_and_saved_model(tmp_path):
    model = load("tiny_models:cnn")
    steps = (Step("export", make_step("export", {}).config), make_step("bench", {"iters": 5, "warmup": 1, "rounds": 1}))
    report = run_recipe(model, Recipe(steps), tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["schema_version"] == 1
    assert on_disk["summary"]["parity"]["passed"] is True
    assert on_disk["summary"]["final"]["onnx_bytes"] == (tmp_path / "run" / "model.onnx").stat().st_size
    assert on_disk["summary"]["latency_ratio"] > 0
    assert report["gates"]["violations"] == []
    assert (tmp_path / "run" / "report.md").read_text().startswith("# compress run")
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    assert not (tmp_path / "run" / "latency_quality.png").exists()  # no held-out data: no quality axis
