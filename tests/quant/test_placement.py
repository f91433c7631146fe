"""Where onnxruntime quantizes between the layers, found before QAT: the torch fake-quant model
quantizes the same tensors (the residual skip reads the quantized block input, the conv before the
Add and the logits are quantized), so it and the INT8 graph compute the same function."""

from __future__ import annotations

import torch

from compress.context import Context
from compress.data.specs import Dataset
from compress.loading.checkpoint import load
from compress.model import save
from compress.pipeline import run
from compress.quant.fake import OutputQuant, quant_layers
from compress.recipe import make_step

QAT = {"steps": 3, "batch_size": 16, "calibration_samples": 32, "data": "random"}


def _images(n: int, seed: int) -> Dataset:
    return Dataset(f"random{seed}", (torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)),))


def _run(tmp_path):
    model = load("tiny_models:residual_cnn", input_shapes=((1, 1, 8, 8),))
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _images(300, 2)})
    object.__setattr__(ctx, "dataset", lambda spec, role: _images(64, 1))
    return run(model, [make_step("qat", QAT), make_step("export", {})], ctx)


def test_torch_fake_quant_computes_what_the_int8_graph_computes(tmp_path):
    record = _run(tmp_path)
    qat, export = record.steps[0].figures, record.steps[1].figures
    assert qat["quantized_outputs"] >= 4 and qat["unmodelled_int8_tensors"] == 0
    assert export["float_ops"] == "none" and "Add 1" in export["quantized_ops"]
    # Rounding only: every top-1 agrees and the logits are as good as equal.
    assert export["fake_quant_agreement"] == 1.0 and 1 - export["fake_quant_cosine_min"] < 5e-5  # 1.2e-4 before


def test_the_skip_reads_the_quantized_block_input_and_reloads(tmp_path):
    record = _run(tmp_path)
    module = record.model.module
    assert isinstance(module.stem_relu, OutputQuant)  # the block input: read by conv1 and by the skip
    assert module.stem_relu.quant is quant_layers(module)["conv1"].input_quant
    assert quant_layers(module)["conv2"].output_quant is not None  # the conv before the Add
    again = load(str(save(record.model, tmp_path / "saved")))
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(again(x), record.model(x)) and isinstance(again.module.stem_relu, OutputQuant)
