"""The export pass checks parity where it matters: always on random inputs at two batch sizes
(two sequence lengths for text), so a graph that fixed the batch fails; non-finite outputs say so."""

from __future__ import annotations

import json

import pytest

from compress.cli.main import cli
from compress.loading.checkpoint import load
from compress.onnx.parity import probes
from cli_checks import one_line_error


def test_parity_without_data_checks_two_batch_sizes(runner, tmp_path):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "x"), "--json", "export"])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)["steps"][0]["figures"]
    assert figures["parity_samples"] == 5 and figures["parity_passed"]  # batches of 2 and 3


@pytest.mark.parametrize("factory, needles", [
    ("tiny_models:batch_of_one", ["torch cannot run batch_of_one on random inputs, batch 2", "x.view(1, -1)"]),
    ("tiny_models:batch_sum", ["torch gives 1 output row(s) for random inputs, batch 2", "fixes the batch size"]),
])
def test_a_model_that_fixes_the_batch_fails_export(runner, tmp_path, factory, needles):
    result = runner.invoke(cli, ["run", "--model", factory, "--out", str(tmp_path / "x"), "export"])
    one_line_error(result, 1, "step 1 (export)", *needles)
    assert not (tmp_path / "x").exists()  # a failed run into a new folder leaves nothing


def test_a_non_finite_model_says_non_finite(runner, tmp_path):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:nan_cnn", "--out", str(tmp_path / "x"), "export"])
    line = one_line_error(result, 1, "non-finite")
    assert "differs by nan" not in line


def test_text_probes_have_two_sequence_lengths_and_ids_from_the_example(tmp_path):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    model = load(str(tmp_path / "bert"), seq_len=12)
    found = probes(model, seed=3)
    shapes = [tuple(d.inputs[0].shape) for d in found]
    assert shapes == [(2, 12), (2, 6), (3, 12), (3, 6)]
    ids, mask = found[0].inputs
    assert set(ids.unique().tolist()) <= set(model.example_inputs[0].unique().tolist())
    assert (mask[:, 0] == 1).all() and ((mask[:, 1:] <= mask[:, :-1]).all())  # padded prefixes
    assert torch.equal(probes(model, seed=3)[0].inputs[0], ids)  # seeded
