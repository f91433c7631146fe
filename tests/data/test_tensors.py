"""`tensors:FILE` (.safetensors / .npz) for eval and run: arrays named by the model's inputs,
optional integer labels; every mismatch of data and model is exit 2 naming both."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from compress.cli.main import cli
from compress.data.specs import load_data
from compress.loading.checkpoint import load
from cli_checks import one_line_error


def _inputs(n=6, shape=(1, 8, 8)):
    return np.random.default_rng(0).standard_normal((n, *shape))  # float64, as numpy makes it


@pytest.mark.parametrize("suffix", ["npz", "safetensors"])
def test_eval_and_run_on_a_tensors_file(runner, tmp_path, suffix):
    path = tmp_path / f"d.{suffix}"
    x, labels = _inputs(), np.array([0, 1, 2, 3, 4, 5])
    if suffix == "npz":
        np.savez(path, input=x, labels=labels)
    else:
        save_file({"input": torch.from_numpy(x).float(), "labels": torch.from_numpy(labels)}, str(path))
    data = load_data(f"tensors:{path}", load("tiny_models:cnn"))
    assert data.inputs[0].dtype == torch.float32 and data.labels.tolist() == labels.tolist()
    result = runner.invoke(cli, ["eval", "tiny_models:cnn", "--data", f"tensors:{path}", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["samples"] == 6 and "accuracy" in json.loads(result.stdout)
    run = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--data", f"tensors:{path}", "--out", str(tmp_path / "x"), "--json", "export"])
    assert run.exit_code == 0, run.stderr


def test_a_text_model_reads_its_named_inputs(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    model = load(str(tmp_path / "bert"), seq_len=8)
    ids = np.random.default_rng(0).integers(0, 30, (4, 10))
    np.savez(tmp_path / "t.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    data = load_data(f"tensors:{tmp_path / 't.npz'}", model)
    assert data.inputs[0].dtype == torch.long and data.inputs[0].shape == (4, 10)  # another length is fine
    assert model(*data.inputs).shape == (4, 16)


@pytest.mark.parametrize("arrays, model, needles", [
    ({"input": _inputs(shape=(3, 8, 8))}, "tiny_models:cnn", ["has input [6, 3, 8, 8] but cnn takes input [1, 1, 8, 8]"]),
    ({"input": _inputs(shape=(64,))}, "tiny_models:cnn", ["has input of shape [6, 64] but cnn takes [1, 1, 8, 8]"]),
    ({"input": _inputs(), "labels": np.linspace(0, 1, 6)}, "tiny_models:cnn", ["labels must be integers of shape [6]", "float64 [6]"]),
    ({"input": _inputs(), "labels": np.arange(5)}, "tiny_models:cnn", ["labels must be integers of shape [6]"]),
    ({"a": _inputs(), "b": _inputs()}, "tiny_models:cnn", ["holds ['a', 'b'] but cnn takes ['input']"]),
    ({"labels": np.arange(6)}, "tiny_models:cnn", ["holds no arrays besides 'labels'"]),
    ({"input_ids": np.zeros((2, 8), dtype=np.int64)}, "bert", ["holds ['input_ids'] but bert takes ['input_ids', 'attention_mask']"]),
    ({"input_ids": np.zeros((2, 8)), "attention_mask": np.ones((2, 8), dtype=np.int64)}, "bert", ["array 'input_ids' is float64", "takes integers int64"]),
    ({"input_ids": np.zeros((2, 8), dtype=np.int64), "attention_mask": np.ones((3, 8), dtype=np.int64)}, "bert", ["must share their first (batch) axis"]),
])
def test_tensors_that_do_not_fit_exit_2_naming_both(runner, tmp_path, arrays, model, needles):
    if model == "bert":
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        transformers.BertModel(config).save_pretrained(tmp_path / "bert")
        model = str(tmp_path / "bert")
    np.savez(tmp_path / "d.npz", **arrays)
    result = runner.invoke(cli, ["eval", model, "--data", f"tensors:{tmp_path / 'd.npz'}", "--seq-len", "8"])
    one_line_error(result, 2, "data: tensors:", *needles)


def test_unreadable_or_missing_files_exit_2(runner, tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    one_line_error(runner.invoke(cli, ["eval", "tiny_models:cnn", "--data", f"tensors:{tmp_path / 'bad.npz'}"]), 2, "cannot be read")
    one_line_error(runner.invoke(cli, ["eval", "tiny_models:cnn", "--data", f"tensors:{tmp_path / 'no.npz'}"]), 2, "not found")
    (tmp_path / "d.pt").write_bytes(b"x")
    one_line_error(runner.invoke(cli, ["eval", "tiny_models:cnn", "--data", f"tensors:{tmp_path / 'd.pt'}"]), 2, "unknown tensors file type .pt")
    np.savez(tmp_path / "obj.npz", input=np.array([{"a": 1}], dtype=object))
    one_line_error(runner.invoke(cli, ["eval", "tiny_models:cnn", "--data", f"tensors:{tmp_path / 'obj.npz'}"]), 2, "cannot be read")
