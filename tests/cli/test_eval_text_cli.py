"""`compress eval` on English text with the real MiniLM: its ONNX export keeps the embeddings."""

from __future__ import annotations

import json

import pytest

from compress.cli.main import cli
from compress.data.corpus import corpus
from compress.loading.checkpoint import load
from compress.onnx.export import export_onnx

# The real all-MiniLM-L6-v2 (22.7 M parameters): loading and exporting it takes seconds per test.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    export_onnx(load("minilm", seq_len=32), path)
    return path


def test_eval_onnx_text_against_the_torch_reference(runner, tmp_path, minilm_onnx):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(corpus("heldout")[:40]) + "\n")
    result = runner.invoke(cli, ["eval", str(minilm_onnx), "--data", f"text:{sentences}", "--reference", "minilm",
                                 "--seq-len", "32", "--json"])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["samples"] == 40
    assert figures["cosine_min"] > 0.99999 and figures["recall_at_10"] == 1.0 and figures["nn_agreement"] == 1.0


def test_eval_text_file_errors(runner, tmp_path, minilm_onnx):
    (tmp_path / "empty.txt").write_text("\n\n")
    result = runner.invoke(cli, ["eval", str(minilm_onnx), "--data", f"text:{tmp_path / 'empty.txt'}", "--reference", "minilm"])
    assert result.exit_code == 2 and "holds no sentences" in result.stderr
