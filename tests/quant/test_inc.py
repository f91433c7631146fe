"""`ptq --engine inc`: Intel Neural Compressor's PT2E static INT8 (and autotune) on the bundled
digits CNN, out through the one export and onnxruntime; a model INC cannot take is refused with
one line. Slow: INC's import and torch.export take ~30 s. CI installs the `inc` extra
(.ci/run) before the slow tests, so these never skip there."""

from __future__ import annotations

import json

import pytest

from cli_checks import one_line_error
from compress.cli.main import cli

pytestmark = pytest.mark.slow


def _ptq_figures(out):
    report = json.loads((out / "report.json").read_text())
    return next(s for s in report["steps"] if s["name"] == "ptq")["figures"]


def test_inc_static_int8_on_digits_runs_in_onnxruntime_and_agrees(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--model", "digits", "--out", str(out), "export", "ptq", "--engine", "inc",
                                 "--calibration-samples", "64", "--no-time-check"])
    assert result.exit_code == 0, result.stderr
    figures = _ptq_figures(out)
    assert figures["engine"] == "inc" and figures["exporter"] == "dynamo" and figures["activations"] == "uint8"
    assert figures["inc_parity_agreement"] >= 0.995  # onnxruntime vs INC's own torch module
    assert figures["int8_agreement"] >= 0.99 and figures["int8_accuracy"] >= 0.98  # vs the float model, on digits:test
    # every conv weight now ships as int8 (the PT2E graph held them in float), and no Clip is left
    assert figures["weights_stored_as_integers"] == 22 and figures["clips_removed"] == 22
    assert figures["size_ratio"] < 0.5
    assert (out / "model.int8.onnx").is_file() and not list(out.glob(".inc.*"))
    assert "Intel Neural Compressor" in result.stderr and "[WARNING]" not in result.stderr and "[INFO]" not in result.stderr


def test_inc_autotune_keeps_a_configuration_within_the_tolerable_loss(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--model", "digits", "--out", str(out), "export", "ptq", "--engine", "inc",
                                 "--tolerable-loss", "0.02", "--calibration-samples", "64", "--no-time-check"])
    assert result.exit_code == 0, result.stderr
    figures = _ptq_figures(out)
    assert figures["inc_trials"] >= 1 and figures["inc_config"].startswith("autotune: w_dtype int8")
    assert figures["int8_agreement"] >= 0.98


def test_a_model_inc_cannot_capture_is_refused_naming_the_engine(runner, tmp_path):
    import numpy as np

    np.savez(tmp_path / "calibration.npz", input=np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32))
    result = runner.invoke(cli, ["run", "--model", "tiny_models:value_branch", "--out", str(tmp_path / "x"), "export", "ptq",
                                 "--engine", "inc", "--data", f"tensors:{tmp_path / 'calibration.npz'}", "--no-time-check"])
    one_line_error(result, 2, "ptq engine: inc:", "Intel Neural Compressor could not quantize value_branch", "use --engine ort")
    assert not (tmp_path / "x" / "model.int8.onnx").exists()
