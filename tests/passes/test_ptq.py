"""The `ptq` pass in a pipeline: the INT8 ONNX becomes the run's ONNX, fidelity is checked, the
model records that it is quantized, and misuse is refused with one line."""

from __future__ import annotations

import json

import pytest
import torch

from cli_checks import one_line_error
from compress.cli.main import cli
from compress.context import Context
from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError
from compress.loading.checkpoint import load
from compress.pipeline import run
from compress.quant.history import quantization_of
from compress.recipe import make_step

FAST = {"time_check": False, "min_fidelity": 0.9}


def _images(n: int, seed: int, scale: float = 1.0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(f"random{seed}", (scale * torch.randn(n, 1, 8, 8, generator=g),), torch.randint(0, 10, (n,), generator=g))


def _ctx(tmp_path, model, calibration_scale: float = 1.0, **extra) -> Context:
    data = {"heldout": _images(64, 2), "calibration": _images(64, 1, calibration_scale)}
    return Context(run_dir=tmp_path, teacher=model.copy(), data=data, **extra)


@pytest.fixture
def model():
    return load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),))


def test_ptq_writes_the_int8_onnx_as_the_current_onnx(tmp_path, model):
    ctx = _ctx(tmp_path, model)
    record = run(model, [make_step("export", {}), make_step("ptq", {"min_fidelity": 0.9, "keep_slow_float": False})], ctx)
    figures = record.steps[1].figures
    assert ctx.artifacts["onnx"] == tmp_path / "model.int8.onnx" and ctx.artifacts["float_onnx"] == tmp_path / "model.onnx"
    assert figures["mode"] == "static" and figures["activations"] == "uint8"
    assert figures["int8_agreement"] >= 0.9 and figures["fidelity_samples"] == 64
    assert figures["size_ratio"] == figures["onnx_bytes"] / figures["float_onnx_bytes"]  # Q/DQ overhead: a tiny graph grows
    assert figures["int8_latency_ratio"] > 0 and isinstance(figures["int8_slower"], bool)
    assert "Conv" in figures["float_op_ms"] and "QLinearConv" in figures["int8_op_ms"]  # integer kernels ran
    assert quantization_of(record.model)["pass"] == "ptq" and quantization_of(model) is None


def test_operator_types_slower_as_int8_are_tried_in_float_and_kept_only_when_faster(tmp_path, model):
    """On an 8x8 input integer kernels can cost more than float ones: the check names the losers
    with both timings; those between the weight layers are requantized in float, and that graph is
    kept only when the paired timing's whole interval is under the all-INT8 graph's. Conv and Gemm
    hold the weights and stay INT8 whatever their time (the file size is theirs)."""
    ctx = _ctx(tmp_path, model)
    figures = run(model, [make_step("export", {}), make_step("ptq", {"min_fidelity": 0.9})], ctx).steps[1].figures
    assert "Conv" in figures["quantized_ops"] and "Gemm" in figures["quantized_ops"]
    if figures["kept_float"].startswith("none (every"):
        assert "slower_as_int8" not in figures
        return
    assert " ms as INT8 vs " in figures["slower_as_int8"]
    if figures["kept_float"].startswith("none (only weight-bearing"):
        assert "kept_float_latency_ratio" not in figures
        return
    assert figures["kept_float_latency_ratio"] > 0
    if figures["kept_float"] != "none":
        assert figures["kept_float_latency_ratio_high"] < 1
        for op in figures["kept_float"].split(", "):  # what stayed float is float in the shipped graph
            assert op not in ("Conv", "Gemm") and op in figures["float_ops"] and op not in figures["quantized_ops"]
    assert not list(tmp_path.glob(".ptq-mixed.*"))


def test_collapsed_int8_fails_the_run_with_the_figure(tmp_path, model):
    ctx = _ctx(tmp_path, model, calibration_scale=1e-3)
    with pytest.raises(RunFailed, match=r"agreement 0\.\d+ .* under the 0.99 allowed"):
        run(model, [make_step("export", {}), make_step("ptq", {**FAST, "min_fidelity": 0.99})], ctx)


@pytest.mark.parametrize(
    "steps, needle",
    [
        ([("ptq", FAST)], "put export before ptq"),
        ([("export", {}), ("ptq", FAST), ("ptq", FAST)], "step 2 \\(ptq\\) already did ptq, and its result is an ONNX file; run ptq once"),
    ],
)
def test_misuse_is_refused(tmp_path, model, steps, needle):
    with pytest.raises(UsageError, match=needle):
        run(model, [make_step(name, options) for name, options in steps], _ctx(tmp_path, model))


def test_a_saved_quantized_model_cannot_be_quantized_again(tmp_path, model):
    from compress.model import save

    record = run(model, [make_step("export", {}), make_step("ptq", FAST)], _ctx(tmp_path, model))
    again = load(str(save(record.model, tmp_path / "saved")))
    assert quantization_of(again)["pass"] == "ptq"
    with pytest.raises(UsageError, match="ptq step: the model is already quantized .*start again from the float model"):
        run(again, [make_step("export", {}), make_step("ptq", FAST)], _ctx(tmp_path / "2", again))


def test_calibration_never_reads_the_heldout_spec(tmp_path, model):
    ctx = _ctx(tmp_path, model, heldout_spec="digits:test")
    with pytest.raises(UsageError, match="held-out data quality is measured on; use another split, e.g. digits:train"):
        run(model, [make_step("export", {}), make_step("ptq", {**FAST, "data": "digits:test"})], ctx)


@pytest.mark.parametrize("steps", [
    ["export", "ptq", "--calibration-samples", "64", "--no-time-check"],
    # The order, `ptq --engine ort export`: export runs first, as ptq needs its file.
    ["ptq", "--engine", "ort", "--calibration-samples", "64", "--no-time-check", "export"],
])
def test_cli_export_ptq_on_digits(runner, tmp_path, steps):
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--model", "digits", "--out", str(out), "--json", *steps])
    assert result.exit_code == 0, result.stderr
    assert (out / "model.int8.onnx").is_file() and "[1/2] export" in result.stderr and "[2/2] ptq" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert [step["name"] for step in report["steps"]] == ["export", "ptq"]


def test_a_missing_inc_engine_is_refused_before_the_run_starts(runner, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "neural_compressor" else real(name, *a))
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "x"), "export", "ptq", "--engine", "inc"])
    line = one_line_error(result, 2, "ptq option engine: inc:", "neural-compressor", "compress[inc]", "--engine ort")
    assert result.stderr.strip() == line  # refused when the step is read: nothing ran
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "options, needles",
    [
        # Needs the inc extra (a missing one is refused first), which CI installs for the slow tests.
        pytest.param(["--engine", "inc", "--mode", "dynamic"], ["the inc engine quantizes statically", "--engine ort"], marks=pytest.mark.slow),
        (["--tolerable-loss", "0.01"], ["--tolerable-loss tunes the inc engine", "--engine inc"]),
        (["--weight-bits", "4", "--mode", "static"], ["--weight-bits 4 packs matmul weights", "--engine ort"]),
        (["--block-size", "48"], ["--block-size 48 is not a power of two"]),
    ],
)
def test_conflicting_ptq_options_are_refused(runner, tmp_path, options, needles):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "x"), "export", "ptq", *options])
    one_line_error(result, 2, *needles)
    assert not (tmp_path / "x").exists()


def test_4bit_weights_on_a_cnn_are_refused_with_what_runs_instead(runner, tmp_path):
    out = tmp_path / "x"
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(out),
                                 "export", "ptq", "--weight-bits", "4"])
    one_line_error(result, 2, "ptq option weight-bits: 4:", "no MatMul with a constant weight", "no 4-bit Conv or Gemm kernel", "--weight-bits 8")
    assert not (out / "model.int4.onnx").exists()


def test_quantizing_twice_in_one_run_is_refused_before_it_starts(runner, tmp_path):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "x"), "export", "ptq", "ptq"])
    one_line_error(result, 2, "ptq", "run ptq once")
    assert not (tmp_path / "x").exists()


def test_pruning_after_quantization_is_refused_before_it_starts(runner, tmp_path):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "x"), "export", "ptq", "prune"])
    one_line_error(result, 2, "prune", "ptq")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_minilm_ptq_keeps_the_embeddings_and_runs_faster(tmp_path):
    """The real MiniLM: auto picks dynamic INT8, cosine to the float model on held-out sentences
    >= 0.99 (measured 0.9931 with the tables int8 per row), and the INT8 graph is faster than the float one."""
    from compress.data.specs import load_data

    model = load("minilm")
    heldout = load_data("text:heldout", model).head(128)
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": heldout}, heldout_spec="text:heldout")
    record = run(model, [make_step("export", {}), make_step("ptq", {"calibration_samples": 32})], ctx)
    figures = record.steps[1].figures
    assert figures["mode"] == "dynamic" and figures["int8_cosine_mean"] >= 0.99
    assert figures["size_ratio"] < 0.3 and figures["int8_latency_ratio"] < 1
    assert "LayerNormalization" in figures["float_ops"] and "Softmax" in figures["float_ops"]
    # The 30,522 x 384 word table (and the 512-row position table) stored int8, one scale per row.
    assert figures["embedding_tables_int8"].startswith("encoder.embeddings.word_embeddings.weight 30522 x 384")
