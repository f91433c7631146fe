"""The bundled default run (`compress run`, what `make demo` runs: prune, distill, export, INT8
ptq, bench), gated as the project's CI gates it: the digits ONNX is several times smaller, parity
holds, quality does not drop and the result is faster than the original with confidence."""

from __future__ import annotations

import json
import os

import pytest

from compress.cli.main import cli


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    from click.testing import CliRunner

    cwd = tmp_path_factory.mktemp("cwd")
    before = os.getcwd()
    os.chdir(cwd)  # `compress run` with no arguments writes ./runs/default
    try:
        yield CliRunner().invoke(cli, ["run"]), cwd
    finally:
        os.chdir(before)


def test_default_run_succeeds_and_prints_the_table(default_run):
    result, cwd = default_run
    assert result.exit_code == 0, result.stderr
    assert "compress run: digits" in result.stdout and "all gates pass" in result.stdout
    names = {p.name for p in (cwd / "runs" / "default").iterdir()}
    assert {"model.onnx", "model.int8.onnx", "original.onnx", "report.json", "report.md", "bench.json",
            "latency_quality.png", "model"} <= names


def test_default_run_report_is_honest(default_run):
    _, cwd = default_run
    report = json.loads((cwd / "runs" / "default" / "report.json").read_text())
    summary = report["summary"]
    assert summary["quality_metric"] == "accuracy"
    assert summary["original"]["quality"]["accuracy"] >= 0.99  # the bundled teacher on the real test split
    assert summary["parity"]["passed"] and summary["parity"]["max_abs_diff"] < 1e-4
    assert summary["final"]["p90_ms"] > 0
    # Quality is the shipped INT8 file's, on the real test split.
    assert summary["quality_measured_on"] == "onnx" and summary["final"]["onnx_quality"]["accuracy"] >= 0.99
    assert summary["final"]["macs"] * 2 <= summary["original"]["macs"]
    assert summary["final"]["onnx_bytes"] * 5 <= summary["original"]["onnx_bytes"]
    latency = summary["latency"]
    assert latency["latency_ratio_low"] <= latency["latency_ratio"] <= latency["latency_ratio_high"] < 1.0
    bench = report["steps"][-1]
    assert bench["config"]["batch_sizes"] == [1]  # what the gates read, nothing more
    assert bench["figures"]["stopped"] in ("converged", "time cap")
    assert report["versions"]["torch"].startswith("2.13.0")
    assert len(report["inputs_sha256"]["original_weights"]) == 64


def test_ci_gates_the_default_run(default_run, runner, tmp_path):
    _, cwd = default_run
    report = str(cwd / "runs" / "default" / "report.json")
    passed = runner.invoke(cli, ["gate", report, "--max-onnx-mb", "0.2", "--max-quality-drop", "0.005", "--require-parity",
                                 "--max-latency-ratio", "0.8",
                                 "--junit", str(tmp_path / "gate.xml")])
    assert passed.exit_code == 0, passed.stdout + passed.stderr
    assert 'failures="0"' in (tmp_path / "gate.xml").read_text()
    failed = runner.invoke(cli, ["gate", report, "--max-onnx-mb", "0.05"])
    assert failed.exit_code == 1 and "max_onnx_mb" in failed.stdout
