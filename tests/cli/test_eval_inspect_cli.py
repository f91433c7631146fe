from __future__ import annotations

import json

from compress.cli.main import cli
from compress.loading.checkpoint import load
from compress.onnx.export import export_onnx


def test_eval_torch_model_on_real_digits_against_itself(runner):
    result = runner.invoke(cli, ["eval", "tiny_models:cnn", "--data", "digits:test", "--reference", "tiny_models:cnn", "--json"])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["samples"] == 360 and figures["agreement"] == 1.0
    assert 0.0 <= figures["accuracy"] <= 1.0


def test_eval_onnx_agrees_with_its_torch_source(runner, tmp_path):
    export_onnx(load("tiny_models:cnn", input_shapes=((1, 1, 32, 32),)), tmp_path / "m.onnx")
    result = runner.invoke(cli, ["eval", str(tmp_path / "m.onnx"), "--data", "digits:test", "--reference", "tiny_models:cnn", "--json"])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["agreement"] == 1.0 and figures["cosine_min"] > 0.99999
    other = runner.invoke(cli, ["eval", str(tmp_path / "m.onnx"), "--data", "digits:test", "--reference", "tiny_models:wide_cnn", "--input-shape", "1,1,32,32", "--json"])
    assert json.loads(other.stdout)["agreement"] < 1.0  # a different model really disagrees


def test_eval_text_needs_a_tokenizer(runner, tmp_path):
    export_onnx(load("tiny_models:cnn"), tmp_path / "m.onnx")
    (tmp_path / "s.txt").write_text("One sentence here.\n")
    result = runner.invoke(cli, ["eval", str(tmp_path / "m.onnx"), "--data", f"text:{tmp_path / 's.txt'}"])
    assert result.exit_code == 2 and "needs a text model's tokenizer" in result.stderr


def test_eval_rejects_an_onnx_file_onnxruntime_cannot_load(runner, tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x01garbage")
    result = runner.invoke(cli, ["eval", str(tmp_path / "bad.onnx"), "--data", "digits:test"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("compress: ONNX file:") and len(result.stderr.strip().splitlines()) == 1


def test_inspect_torch_and_onnx(runner, tmp_path):
    result = runner.invoke(cli, ["inspect", "tiny_models:cnn", "--json"])
    info = json.loads(result.stdout)
    assert info["params"] == sum(p.numel() for p in load("tiny_models:cnn").module.parameters())
    assert {"stem.0", "head"} <= {layer["name"] for layer in info["layers"]}
    assert next(layer for layer in info["layers"] if layer["name"] == "head")["output_shape"] == [1, 10]
    export_onnx(load("tiny_models:cnn"), tmp_path / "m.onnx")
    onnx_info = json.loads(runner.invoke(cli, ["inspect", str(tmp_path / "m.onnx"), "--json"]).stdout)
    assert onnx_info["opset"] == 17 and onnx_info["op_counts"]["Conv"] == 2
    table = runner.invoke(cli, ["inspect", "tiny_models:cnn"])
    assert table.exit_code == 0 and "head" in table.stdout


def test_eval_data_that_does_not_fit_the_onnx_inputs(runner, tmp_path):
    export_onnx(load("tiny_models:cnn"), tmp_path / "m8.onnx")  # fixed 8x8 images
    result = runner.invoke(cli, ["eval", str(tmp_path / "m8.onnx"), "--data", "digits:test"])
    assert result.exit_code == 2
    assert "has shape [360, 1, 32, 32] but ONNX input input expects ['batch', 1, 8, 8]" in result.stderr
