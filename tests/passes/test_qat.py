"""The `qat` pass: KD-trained fake quantization that `export` writes as INT8 ONNX, saved and
reloaded as data; misuse refused."""

from __future__ import annotations

import pytest
import torch

from cli_checks import one_line_error
from compress.cli.main import cli
from compress.context import Context
from compress.data.specs import Dataset
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.model import save
from compress.passes.qat import QatConfig, qat
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


def test_int8_export_is_checked_on_the_whole_heldout_split(tmp_path, model):
    # A 99.5% bar on 64 inputs allows no flip; the check reads every held-out input (up to 1000).
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _images(300, 2)})
    object.__setattr__(ctx, "dataset", lambda spec, role: _images(64, 1))
    record = run(model, [make_step("qat", {**FAST, "data": "random"}), make_step("export", {})], ctx)
    export = record.steps[1].figures
    assert export["parity_samples"] == 300 and record.steps[1].produced["parity"]["samples"] == 300
    assert export["fake_quant_disagreeing"] == round((1 - export["fake_quant_agreement"]) * 300)
    assert export["fake_quant_disagreeing_margin_max"] >= 0.0


@pytest.mark.parametrize(
    "steps, needle",
    [
        ([("qat", {**FAST, "data": "random", "ignore": ["*"]})], "to quantize outside --ignore"),
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
    one_line_error(result, 2, "--bits", "ternary")
    assert not (tmp_path / "x").exists()


def test_cli_misuse_is_one_line(runner, tmp_path, bert):
    """No layer to quantize, quantizing twice, and intervention on a pruned student: exit 2, one line, nothing written."""
    from safetensors.torch import save_file

    _, folder = bert
    ids = _ids(8, 4)
    save_file({"input_ids": ids.inputs[0], "attention_mask": ids.inputs[1]}, tmp_path / "ids.safetensors")
    data = ["--data", f"tensors:{tmp_path / 'ids.safetensors'}", "--steps", "1", "--batch-size", "4"]
    cases = [
        (["--model", "tiny_models:cnn", "qat", "--ignore", "*"], ["has no Conv2d or Linear layer", "outside --ignore"]),
        (["--model", folder, "qat", *data, "qat", *data], ["qat step", "already quantized"]),
        (["--model", folder, "prune", "--head-ratio", "0.5", "qat", "--intervention", "g", *data],
         ["--intervention", "same architecture before QAT"]),
    ]
    for index, (args, needles) in enumerate(cases):
        out = tmp_path / f"run{index}"
        result = runner.invoke(cli, ["run", "--out", str(out), *args[:2], *args[2:]])
        one_line_error(result, 2, *needles)
        assert not out.exists()


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from tiny_families import saved_family

    folder = tmp_path_factory.mktemp("qat-text")
    model, _ = saved_family("bert", folder)
    return model, str(folder / "bert")


def _ids(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[n // 2:, 10:] = 0  # half the rows padded, as real sentences are
    return Dataset(f"ids{seed}", (ids, mask), mask_input=1)


def _text_ctx(tmp_path, model):
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _ids(48, 2)})
    object.__setattr__(ctx, "dataset", lambda spec, role: _ids(64, 1))
    return ctx


def test_text_encoder_qat_exports_dynamic_int8_with_its_learned_weight_steps(tmp_path, bert):
    model, _ = bert
    record = run(model, [make_step("qat", {**FAST, "data": "ids", "intervention": "g", "steps": 4, "hidden": 1.0}),
                         make_step("export", {})], _text_ctx(tmp_path, model))
    qat, export = record.steps[0].figures, record.steps[1].figures
    # 2 layers x (query, key, value, attention output, FFN in, FFN out); the unused pooler stays float.
    assert qat["quantized_layers"] == 12 and qat["activations"] == "dynamic" and qat["intervention_steps"] == 1
    assert export["fake_quant_cosine_mean"] >= 0.999
    # After DynamicQuantizeLinear: onnxruntime fuses both; query/key/value with their attention as one QAttention.
    assert export["quantized_ops"] == "MatMulInteger 6, QAttention 2" and export["attention_fused"] == 2
    again = load(str(save(record.model, tmp_path / "saved")))
    ids = _ids(4, 3).inputs
    assert torch.equal(again(*ids), record.model(*ids))


def test_text_calibration_batches_are_sorted_and_trimmed(tmp_path, bert, monkeypatch):
    import compress.quant.prepare as prepare

    widths = []
    real_probe = prepare.probe

    def spy(module, layers, batches):
        widths.extend(batch.inputs[0].shape[1] for batch in batches)
        return real_probe(module, layers, batches)

    monkeypatch.setattr(prepare, "probe", spy)
    model, _ = bert
    qat(model, QatConfig(**{**FAST, "data": "ids", "steps": 0, "calibration_samples": 64, "batch_size": 32}), _text_ctx(tmp_path, model))
    assert widths == [16, 10]  # the 32 whole rows first, then the 32 padded after position 10, cut there


def test_keep_float_leaves_the_most_sensitive_layers_float(tmp_path, bert):
    model, _ = bert
    with torch.no_grad():  # an outlier on one FFN input: its layer's dynamic range is the one that hurts
        model = model.copy()
        model.module.encoder.encoder.layer[1].intermediate.dense.bias[3] = 300.0
    # Smoothing off: it would take the outlier out of that input (the test below).
    record = run(model, [make_step("qat", {**FAST, "data": "ids", "steps": 0, "keep_float": 2, "smooth": 0}), make_step("export", {})],
                 _text_ctx(tmp_path, model))
    qat, export = record.steps[0].figures, record.steps[1].figures
    assert qat["quantized_layers"] == 10 and "encoder.encoder.layer.1.output.dense" in qat["float_layers"]
    # A block with a float projection cannot be one QAttention: no attention is fused then.
    assert export["quantized_ops"] == "MatMulInteger 10" and export["attention_fused"] == 0
    assert export["fake_quant_cosine_mean"] >= 0.999


def test_smoothing_takes_an_outlier_channel_out_of_a_dynamic_input_and_exports_as_a_mul(tmp_path, bert):
    import onnx

    model, _ = bert
    with torch.no_grad():  # one GELU output channel 300x the others: it alone sets that input's uint8 range
        model = model.copy()
        model.module.encoder.encoder.layer[1].intermediate.dense.bias[3] = 300.0
    plain = run(model, [make_step("qat", {**FAST, "data": "ids", "steps": 0, "smooth": 0})], _text_ctx(tmp_path / "plain", model))
    record = run(model, [make_step("qat", {**FAST, "data": "ids", "steps": 0, "smooth": 0.5}), make_step("export", {})],
                 _text_ctx(tmp_path, model))
    qat, export = record.steps[0].figures, record.steps[1].figures
    assert "encoder.encoder.layer.1.output" in qat["smoothed_inputs"].split(", ") and qat["smooth_alpha"] == 0.5
    assert record.steps[0].after["quality"]["cosine_mean"] > plain.steps[0].after["quality"]["cosine_mean"]
    # Each layer's query/key/value and its attention in one QAttention (compress.quant.attention_fusion),
    # the smoothing Mul before it; the other 3 Linear layers of each layer as MatMulInteger.
    assert export["quantized_ops"] == "MatMulInteger 6, QAttention 2" and export["attention_fused"] == 2
    assert export["fake_quant_cosine_mean"] >= 0.999
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    # The residual Add before each of the 5 LayerNorms is a Sum (compress.onnx.residual_sum).
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert export["residual_adds_as_sum"] == 5
    assert [producers[n.input[0]] for n in graph.node if n.op_type == "LayerNormalization"] == ["Sum"] * 5
    smoothed = len(qat["smoothed_inputs"].split(", "))
    assert sum(n.op_type == "Mul" and any("smooth_input" in i for i in n.input) for n in graph.node) == smoothed
    again = load(str(save(record.model, tmp_path / "saved")))  # the Mul replays on load; its scales are saved
    ids, mask = _ids(4, 3).inputs
    assert torch.equal(again(ids, mask), record.model(ids, mask))


def test_onnx_weights_are_the_learned_grid(tmp_path, bert):
    """The int8 weights onnxruntime holds are the torch model's integers: its scales are the learned steps."""
    import onnx
    from onnx import numpy_helper

    model, _ = bert
    record = run(model, [make_step("qat", {**FAST, "data": "ids", "steps": 0, "init": "mse"}), make_step("export", {})],
                 _text_ctx(tmp_path, model))
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    layer = quant_layers(record.model.module)["encoder.encoder.layer.1.output.dense"]
    steps = layer.weight_quant.step.detach().numpy()
    scales = [a for name, a in arrays.items() if name.endswith("_scale") and a.shape == steps.shape]
    assert any(abs(s - steps).max() < 1e-7 for s in scales)


def test_intervention_after_pruning_is_refused(tmp_path, bert):
    model, _ = bert
    steps = [make_step("prune", {"head_ratio": 0.5}), make_step("qat", {**FAST, "data": "ids", "intervention": "g"})]
    with pytest.raises(UsageError, match="same architecture before QAT"):
        run(model, steps, _text_ctx(tmp_path, model))


def test_qat_is_data_free_by_default(tmp_path, model):
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _images(64, 2)})
    steps = [make_step("synthesize", {"images": 32, "batch_size": 16, "steps": 2}), make_step("qat", FAST), make_step("export", {})]
    record = run(model, steps, ctx)
    assert record.steps[1].figures["data"].startswith("synthetic (32 inputs")
    export = record.steps[2].figures
    assert "Conv 2" in export["quantized_ops"] and export["fake_quant_agreement"] >= 0.95
    assert "Add 1" in export["quantized_ops"] and export["float_ops"] == "none"  # ranged on the synthetic set, as on real data



def test_cnn_block_intervention_runs_both_phases_and_exports(tmp_path):
    model = load("digits")
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": _digits_like(32, 2)})
    object.__setattr__(ctx, "dataset", lambda spec, role: _digits_like(64, 1))
    record = run(model, [make_step("qat", {**FAST, "bits": "4", "data": "random", "steps": 4, "intervention": "block"}),
                         make_step("export", {})], ctx)
    qat_figures, export = record.steps[0].figures, record.steps[1].figures
    assert qat_figures["intervention"] == "block" and qat_figures["intervention_steps"] == 1
    assert export["fake_quant_agreement"] >= 0.95 and export["float_ops"] == "none"


def _digits_like(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(f"random{seed}", (torch.randn(n, 1, 32, 32, generator=g),), torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("args, needles", [
    (["prune", "--ratio", "0.5", "qat", "--intervention", "block"], ["--intervention: block", "same architecture before QAT"]),
    (["qat", "--intervention", "g"], ["--intervention: g", "for a CNN use --intervention block"]),
])
def test_cnn_intervention_misuse_is_one_line(runner, tmp_path, args, needles):
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--model", "digits", "--out", str(out), *args, "--data", "digits:train", "--steps", "2"])
    one_line_error(result, 2, *needles)
    assert not out.exists()


def test_cnn_rate_for_transformers_resnet_and_its_bottlenecks_take_block_intervention(tmp_path):
    """transformers' ResNet keeps its stages in a ModuleList, as encoders keep their layers: it
    still gets the CNN rate, and `block` feeds its bottleneck layers."""
    from tiny_families import saved_family

    model, images = saved_family("resnet", tmp_path)
    shape = images.inputs[0].shape[1:]
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": Dataset("h", (torch.randn(16, *shape),))})
    object.__setattr__(ctx, "dataset", lambda spec, role: Dataset("r", (torch.randn(32, *shape),)))
    figures = qat(model, QatConfig(**{**FAST, "data": "random", "steps": 2, "intervention": "block"}), ctx).figures
    assert figures["lr"] == pytest.approx(1e-4) and figures["intervention_steps"] == 1


def test_evaluation_steps_run_across_phases_and_skip_the_second_phases_restart():
    from compress.passes.qat import evaluation_steps
    from compress.train import FitPoint, FitResult

    def phase(steps, evaluated):
        return FitResult(history=tuple(FitPoint(s, None, 0.0) for s in evaluated), best_step=steps, best_metric=0.0,
                         final_metric=0.0, loss_start=0.0, loss_end=0.0, steps=steps, seconds=0.0)

    # intervention phase of 10 steps evaluated at 0, 5, 10; then 20 plain steps at 0, 10, 20
    assert evaluation_steps([phase(10, [0, 5, 10]), phase(20, [0, 10, 20])]) == [0, 5, 10, None, 20, 30]
    assert evaluation_steps([phase(20, [0, 10, 20])]) == [0, 10, 20]


def test_transformers_vit_quantizes_dynamically_exports_int8_and_reloads(tmp_path):
    """A ViT reads image patches, but its Linear layers read token sequences as a text encoder's
    do: dynamic INT8 (a static graph also quantizes attention scores no module produces, and
    failed its check), the patch-embedding Conv float. Its forward reads
    `patch_embeddings.projection.weight`, through the fake-quant wrapper."""
    from tiny_families import saved_family

    model, images = saved_family("vit", tmp_path)
    with torch.no_grad():  # spread the random head's logits, as a trained model's are, so top-1 is not a coin toss
        model.module.inner.classifier.weight.mul_(30)
    shape = images.inputs[0].shape[1:]
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": Dataset("h", (torch.randn(32, *shape),))})
    object.__setattr__(ctx, "dataset", lambda spec, role: Dataset("r", (torch.randn(16, *shape),)))
    record = run(model, [make_step("qat", {**FAST, "data": "random", "steps": 1}), make_step("export", {})], ctx)
    figures, export = record.steps[0].figures, record.steps[1].figures
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.module.modules())
    assert figures["activations"] == "dynamic" and figures["quantized_layers"] == linears
    assert figures["lr"] == pytest.approx(2e-5)  # the Transformer rate, though its attention is not named as BERT's
    assert export["fake_quant_agreement"] >= 0.995 and "Conv" in export["float_ops"]
    x = torch.randn(3, *shape)
    again = load(str(save(record.model, tmp_path / "saved")))
    assert torch.equal(again(x), record.model(x))


@pytest.fixture(scope="module")
def bert_large_vocab(tmp_path_factory):
    """A tiny BERT whose word table (2,048 x 32) is large enough to go out as int8 per row."""
    import transformers

    from tiny_families import TEXT

    folder = tmp_path_factory.mktemp("qat-vocab") / "bert"
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**{**TEXT, "vocab_size": 2048})).eval().save_pretrained(folder)
    return load(str(folder), seq_len=16)


def test_embedding_table_is_rounded_per_row_and_exported_int8(tmp_path, bert_large_vocab):
    import onnx

    from compress.quant.fake import TableQuant

    model = bert_large_vocab
    record = run(model, [make_step("qat", {**FAST, "data": "ids"}), make_step("export", {})], _text_ctx(tmp_path, model))
    qat, export = record.steps[0].figures, record.steps[1].figures
    # The position table (512 x 32) and the token-type table are too small to pay for their nodes.
    assert qat["int8_embedding_tables"] == "encoder.embeddings.word_embeddings"
    assert export["embedding_tables_int8"].startswith("encoder.embeddings.word_embeddings.weight 2048 x 32: int8, one scale per row")
    assert export["fake_quant_cosine_mean"] >= 0.999
    stored = {i.name: i.data_type for i in onnx.load(str(tmp_path / "model.onnx")).graph.initializer}
    assert stored["encoder.embeddings.word_embeddings.weight_int8"] == onnx.TensorProto.INT8
    assert "encoder.embeddings.word_embeddings.weight" not in stored
    again = load(str(save(record.model, tmp_path / "saved")))
    assert isinstance(again.module.get_submodule("encoder.embeddings.word_embeddings"), TableQuant)
    ids = _ids(4, 3).inputs
    assert torch.equal(again(*ids), record.model(*ids))


def test_ignored_embedding_table_stays_float(tmp_path, bert_large_vocab):
    model = bert_large_vocab
    record = run(model, [make_step("qat", {**FAST, "data": "ids", "steps": 0, "ignore": ["*embeddings*"]}), make_step("export", {})],
                 _text_ctx(tmp_path, model))
    assert record.steps[0].figures["int8_embedding_tables"] == "none"
    assert record.steps[1].figures["embedding_tables_int8"] == "none"
