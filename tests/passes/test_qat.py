"""The `qat` pass: KD-trained fake quantization that `export` writes as INT8 ONNX, saved and
reloaded as data; misuse refused."""

from __future__ import annotations

import pytest
import torch

from compress.cli.main import cli
from compress.context import Context
from compress.data.specs import Dataset
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.model import save
from compress.pipeline import run
from compress.quant.fake import quant_layers
from compress.quant.history import quantization_of
from compress.recipe import make_step

FAST = {"steps": 3, "batch_size": 16, "calibration_samples": 32}


def _images(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(f"random{seed}", (torch.randn(n, 1, 8, 8, generator=g),), torch.randint(0, 10, (n,), generator=g))


@pytest.fixture
def model():
    model = load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),))
    with torch.no_grad():  # spread the random head's logits, as a trained model's are, so top-1 is not a coin toss
        model.module.head.weight.mul_(30)
    return model


def _ctx(tmp_path, model):
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _images(64, 2)})
    # qat reads its training data by spec; a tiny model has none, so hand the loader a dataset.
    object.__setattr__(ctx, "dataset", lambda spec, role: _images(64, 1))
    return ctx


def test_qat_then_export_writes_int8_that_agrees_and_reloads(tmp_path, model):
    ctx = _ctx(tmp_path, model)
    record = run(model, [make_step("qat", {**FAST, "bits": "4", "data": "random"}), make_step("export", {})], ctx)
    qat, export = record.steps[0].figures, record.steps[1].figures
    assert qat["quantized_layers"] == 3 and qat["folded_batchnorms"] == 2 and qat["bits"] == "4"
    assert export["fake_quant_agreement"] >= 0.95 and "Conv 2" in export["quantized_ops"]
    assert "Add 1" in export["quantized_ops"] and export["float_ops"] == "none"  # ranged on the qat data
    assert quantization_of(record.model) == {"kind": "quantized", "pass": "qat", "bits": "4"}
    parity = record.steps[1].produced["parity"]  # what require_parity reads: disagreement vs its bar
    assert parity["passed"] and parity["max_abs_diff"] <= parity["tolerance"] == pytest.approx(0.005)
    again = load(str(save(record.model, tmp_path / "saved")))
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(again(x), record.model(x)) and len(quant_layers(again.module)) == 3


@pytest.mark.parametrize(
    "steps, needle",
    [
        ([("qat", {**FAST, "data": "random", "ignore": ["*"]})], "has no Conv2d or Linear layer to quantize outside --ignore"),
        ([("qat", {**FAST, "data": "random"}), ("qat", {**FAST, "data": "random"}), ("export", {})], "already quantized"),
        ([("qat", {**FAST, "data": "random"}), ("export", {}), ("ptq", {"time_check": False})], "already quantized"),
        ([("qat", {**FAST, "data": "random"}), ("prune", {}), ("export", {})], "already quantized"),
    ],
)
def test_misuse_is_refused(tmp_path, model, steps, needle):
    with pytest.raises(UsageError, match=needle):
        run(model, [make_step(name, options) for name, options in steps], _ctx(tmp_path, model))


@pytest.mark.parametrize("bits", ["5", "1", "16", "binary"])
def test_bits_outside_the_grids_exit_2(runner, tmp_path, bits):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "x"), "qat", "--bits", bits, "export"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "--bits" in result.stderr and "ternary" in result.stderr
