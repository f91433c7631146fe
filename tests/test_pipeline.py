from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

import numpy as np

from compress.context import Context, Result
from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError
from compress.loading.checkpoint import load
from compress.passes import PASSES, Pass
from compress.pipeline import Step, check_runs, run
from compress.recipe import Recipe, make_step, parse_recipe
from compress.reporting.gate import Budgets
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
    with pytest.raises(RunFailed, match=r"step 2 \(export\) after export: onnxruntime differs from torch by [0-9.e-]+ on 37 inputs \(random; random inputs, batch 2"):
        run(model, steps, Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _heldout()}))
    # The graph that failed parity is whole (written atomically, then checked), so it can be inspected.
    onnx.checker.check_model(onnx.load(str(tmp_path / "b.onnx")), full_check=True)


def test_check_runs_catches_broken_models():
    teacher = load("tiny_models:cnn")
    wrong_shape = teacher.replace(module=nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
    with pytest.raises(RunFailed, match=r"output shape changed from \[1, 10\] to \[1, 3\]"):
        check_runs(wrong_shape, teacher(*teacher.example_inputs).shape, "step 1 (x)")
    nan = teacher.replace(module=nn.Sequential(nn.Flatten(), nn.Linear(64, 10), NaNHead()))
    with pytest.raises(RunFailed, match="non-finite"):
        check_runs(nan, teacher(*teacher.example_inputs).shape, "step 1 (x)")


def test_bench_without_export_is_refused_before_any_step(tmp_path):
    model = load("tiny_models:cnn")
    with pytest.raises(UsageError, match=r"^step 1 \(bench\): needs an ONNX file of the current model: put export before bench$"):
        run(model, [make_step("bench", {})], Context(run_dir=tmp_path, teacher=model.copy()))
    assert list(tmp_path.iterdir()) == []


def test_runner_writes_report_and_saved_model(tmp_path):
    model = load("tiny_models:cnn")
    steps = (Step("export", make_step("export", {}).config), make_step("bench", {"min_calls": 20, "warmup": 1, "max_seconds": 1}))
    report = run_recipe(model, Recipe(steps), tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["schema_version"] == 2
    summary = on_disk["summary"]
    assert summary["parity"]["passed"] is True
    assert summary["final"]["onnx_bytes"] == (tmp_path / "run" / "model.onnx").stat().st_size
    assert summary["latency"]["latency_ratio"] > 0 and summary["latency"]["p90_ms"] == summary["final"]["p90_ms"]
    assert summary["produced_by"] == {"onnx": "step 1 (export)", "parity": "step 1 (export)", "latency": "step 2 (bench)"}
    assert report["gates"]["violations"] == []
    assert (tmp_path / "run" / "report.md").read_text().startswith("# compress run")
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    assert not (tmp_path / "run" / "latency_quality.png").exists()  # no held-out data: no quality axis


# Passes that stand in for later ones (prune, ptq), declared the way the PASSES table declares them.
def _keep(model, config, ctx):
    return Result(model)


def _fake(changes: str, needs=("torch",), gives=(), fn=_keep) -> Pass:
    return Pass(PASSES["export"].config, fn, "test pass", frozenset(needs), frozenset(gives), changes)


@pytest.fixture
def fake_passes(monkeypatch):
    monkeypatch.setitem(PASSES, "shrink", _fake("torch"))
    monkeypatch.setitem(PASSES, "quantize_onnx", _fake("onnx", needs=("onnx",), gives=("onnx",)))
    monkeypatch.setitem(PASSES, "train", _fake("torch"))


def _recipe(*names: str) -> str:
    return "version: 1\nsteps: [" + ", ".join(names) + "]\n"


@pytest.mark.parametrize(("names", "message"), [
    (("bench", "export"), "step 1 (bench): needs an ONNX file of the current model: put export before bench"),
    (("export", "shrink", "bench", "export"), "step 3 (bench): needs an ONNX file of the current model: step 2 (shrink) "
     "changed the model after its ONNX was written; put export between shrink and bench"),
    (("export", "quantize_onnx", "train", "export"), "step 3 (train): needs the torch model: step 2 (quantize_onnx) changed "
     "only the ONNX, so the torch model no longer matches it; put train before quantize_onnx"),
    (("export", "quantize_onnx", "export"), "step 3 (export): needs the torch model: step 2 (quantize_onnx) changed only the ONNX, "
     "and its file is the final model; drop this export (one export, before quantize_onnx)"),
    (("quantize_onnx",), "step 1 (quantize_onnx): needs an ONNX file of the current model: put export before quantize_onnx"),
    (("export", "shrink"), "step 2 (shrink): changes the torch model after its ONNX file was written: no later step "
     "writes it again; add export after shrink"),
])
def test_wrong_order_is_refused_when_the_recipe_is_read(fake_passes, names, message):
    with pytest.raises(UsageError) as caught:
        parse_recipe(_recipe(*names), "test")
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("names", [("export", "bench"), ("shrink", "train", "export", "quantize_onnx", "bench"), ("shrink",),
                                   ("export", "shrink", "export", "bench")])
def test_right_orders_are_accepted(fake_passes, names):
    assert [s.name for s in parse_recipe(_recipe(*names), "test").steps] == list(names)


@pytest.mark.parametrize(("names", "ran"), [
    (("quantize_onnx", "export"), ["export", "quantize_onnx"]),  # the issue's `ptq --engine ort export`
    (("shrink", "quantize_onnx", "export", "bench"), ["shrink", "export", "quantize_onnx", "bench"]),
    (("export", "shrink", "quantize_onnx", "export"), ["export", "shrink", "export", "quantize_onnx"]),
    (("export", "quantize_onnx", "bench"), ["export", "quantize_onnx", "bench"]),
])
def test_an_onnx_only_step_written_before_its_export_runs_after_it(fake_passes, names, ran):
    assert [s.name for s in parse_recipe(_recipe(*names), "test").steps] == ran


def test_an_onnx_only_step_with_no_export_right_after_it_is_still_refused(fake_passes):
    with pytest.raises(UsageError, match=r"^step 1 \(quantize_onnx\): needs an ONNX file .*put export before quantize_onnx"):
        parse_recipe(_recipe("quantize_onnx", "bench", "export"), "test")


def test_a_step_that_changes_shapes_without_an_edit_fails(tmp_path, monkeypatch):
    def narrow(model, config, ctx):
        copy = model.copy()
        copy.module.head = nn.Linear(copy.module.head.in_features, 10)
        copy.module.block[0] = nn.Conv2d(4, 4, 1, bias=False)
        return Result(copy)

    monkeypatch.setitem(PASSES, "narrow", _fake("torch", fn=narrow))
    model = load("tiny_models:cnn")
    with pytest.raises(RunFailed, match=r"^step 1 \(narrow\): changed parameter shapes \(block.0.weight \[4, 4, 3, 3\] -> \[4, 4, 1, 1\]\) "
                                        r"without recording a structural edit"):
        run(model, [Step("narrow", make_step("export", {}).config)], Context(run_dir=tmp_path, teacher=model.copy()))


def _wreck_onnx(model, config, ctx):
    """An ONNX-only change, as post-training quantization makes: the class biases of the final
    layer are overwritten, so the file's top-1 differs from torch's on most inputs."""
    proto = onnx.load(str(ctx.artifacts["onnx"]))
    biases = [t for t in proto.graph.initializer if list(t.dims) == [10]]
    assert biases, "the classifier's head bias is an initializer of shape [10]"
    for tensor in biases:
        tensor.CopyFrom(onnx.numpy_helper.from_array(np.arange(10, dtype=np.float32) * 100.0, tensor.name))
    path = ctx.run_dir / "wrecked.onnx"
    onnx.save(proto, str(path))
    return Result(model, {}, {"onnx": path}, {"onnx": {"path": str(path), "bytes": path.stat().st_size}})


def test_quality_gate_reads_the_final_onnx_after_an_onnx_only_change(tmp_path, monkeypatch):
    monkeypatch.setitem(PASSES, "wreck", _fake("onnx", needs=("onnx",), gives=("onnx",), fn=_wreck_onnx))
    model = load("digits")  # a trained classifier, so a wrecked head loses real accuracy
    export = make_step("export", {})
    recipe = Recipe((export, Step("wreck", export.config)), Budgets(max_quality_drop=0.005))
    report = run_recipe(model, recipe, tmp_path / "run")
    s = report["summary"]
    assert s["quality_metric"] == "accuracy" and s["quality_measured_on"] == "onnx"
    assert s["quality_drop_torch"] == 0.0  # the torch model is untouched
    assert s["final"]["onnx_quality"]["agreement"] < 0.5  # most inputs now read as class 9
    assert s["quality_drop"] == s["quality_drop_onnx"] == s["original"]["quality"]["accuracy"] - s["final"]["onnx_quality"]["accuracy"] > 0.5
    assert s["final"]["onnx_bytes"] == (tmp_path / "run" / "wrecked.onnx").stat().st_size
    assert s["produced_by"]["onnx"] == "step 2 (wreck)" and s["produced_by"]["parity"] == "step 1 (export)"
    [violation] = report["gates"]["violations"]
    assert violation["budget"] == "max_quality_drop" and "accuracy of the final ONNX dropped by" in violation["message"]


def test_quality_of_an_untouched_onnx_matches_torch(tmp_path):
    model = load("tiny_models:cnn", input_shapes=((1, 1, 32, 32),))
    report = run_recipe(model, Recipe((make_step("export", {}),)), tmp_path / "run", data="digits:test")
    s = report["summary"]
    assert s["final"]["onnx_quality"]["agreement"] == 1.0 and s["quality_drop_onnx"] == s["quality_drop_torch"] == 0.0


def test_the_runs_seed_and_device_reach_every_pass(tmp_path, monkeypatch):
    seen = {}

    def spy(model, config, ctx):
        seen.update(seed=ctx.seed, device=ctx.device)
        return Result(model)

    monkeypatch.setitem(PASSES, "spy", _fake("nothing", fn=spy))
    model = load("tiny_models:cnn")
    run_recipe(model, Recipe((Step("spy", make_step("export", {}).config),)), tmp_path / "run", seed=11, device="cpu")
    assert seen == {"seed": 11, "device": "cpu"}
    with pytest.raises(UsageError, match="device: gpu: use one of cpu, cuda"):
        run_recipe(model, Recipe(()), tmp_path / "other", device="gpu")


def test_a_pass_seed_left_unset_is_the_runs_seed():
    from compress.pipeline import with_run_seed

    unset, own = make_step("bench", {}).config, make_step("bench", {"seed": 3}).config
    assert with_run_seed(unset, 5).seed == 5 and with_run_seed(own, 5).seed == 3
    export = make_step("export", {}).config  # no seed field: unchanged
    assert with_run_seed(export, 5) is export


def test_the_original_is_the_teacher_itself_and_a_pass_that_changes_it_in_place_fails(tmp_path, monkeypatch):
    seen = {}

    def spy(model, config, ctx):
        seen["teacher_is_the_model"] = ctx.teacher is model  # shared, not a deep copy of the weights
        return Result(model)

    def in_place(model, config, ctx):
        with torch.no_grad():
            model.module.head.bias.add_(1.0)  # breaks the contract: a pass changes a copy
        return Result(model)

    monkeypatch.setitem(PASSES, "spy", _fake("nothing", fn=spy))
    monkeypatch.setitem(PASSES, "in_place", _fake("nothing", fn=in_place))
    model = load("tiny_models:cnn")
    run_recipe(model, Recipe((Step("spy", make_step("export", {}).config),)), tmp_path / "run")
    assert seen == {"teacher_is_the_model": True}
    with pytest.raises(RuntimeError, match="a step changed the original model's weights in place"):
        run_recipe(model, Recipe((Step("in_place", make_step("export", {}).config),)), tmp_path / "other")
