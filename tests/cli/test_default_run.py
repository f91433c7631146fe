"""The bundled default run (`compress run`, what `make demo` runs: prune, synthesize, data-free
distill and qat, INT8 export, bench), gated as the project's CI gates it: the digits ONNX is at
least 8x smaller, parity holds, accuracy stays within a point and the result is faster than the
original with confidence. The whole run takes about three CPU minutes, so it is a slow test; the
fast suite runs the same recipe with the synthetic set, KD and QAT cut to a few steps, and checks
the chain, its files and the honesty of the report (not the accuracy such a short run reaches)."""

from __future__ import annotations

import json
import os
from importlib import resources

import pytest
import yaml

from compress.cli.main import cli

# A few steps of each training stage: the default recipe's chain in seconds.
SHRUNK = {"synthesize": {"images": 64, "steps": 20}, "distill": {"steps": 100}, "qat": {"steps": 5}}


@pytest.fixture(scope="module")
def shrunk_run(tmp_path_factory):
    from click.testing import CliRunner

    folder = tmp_path_factory.mktemp("shrunk")
    recipe = yaml.safe_load(resources.files("compress").joinpath("recipes/default.yaml").read_text(encoding="utf-8"))
    for step in recipe["steps"]:
        (name, config), = step.items()
        config.update(SHRUNK.get(name, {}))
    recipe["gates"] = {k: v for k, v in recipe["gates"].items() if k in ("max_onnx_mb", "require_parity")}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", "--recipe", str(folder / "recipe.yaml"), "--out", str(folder / "run")])
    return result, folder / "run"


def test_default_recipe_chain_runs_data_free_to_int8(shrunk_run):
    result, run = shrunk_run
    assert result.exit_code == 0, result.stderr
    assert "all gates pass" in result.stdout
    assert {"model.onnx", "original.onnx", "synthetic.safetensors", "synthetic_samples.png", "report.json", "report.md",
            "bench.json", "latency_quality.png", "model"} <= {p.name for p in run.iterdir()}
    report = json.loads((run / "report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["prune", "synthesize", "distill", "qat", "export", "bench"]
    # No real image trains: distill and qat read the synthetic set the run made.
    assert steps["distill"]["figures"]["data"].startswith("synthetic") and steps["qat"]["figures"]["data"].startswith("synthetic")
    export = steps["export"]["figures"]
    assert "Conv 21" in export["quantized_ops"] and export["parity_samples"] == 360  # the whole digits:test split
    summary = report["summary"]
    assert summary["parity"]["passed"] and summary["quality_measured_on"] == "onnx"
    assert summary["final"]["onnx_bytes"] * 8 <= summary["original"]["onnx_bytes"]


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


@pytest.mark.slow
def test_default_run_succeeds_and_prints_the_table(default_run):
    result, cwd = default_run
    assert result.exit_code == 0, result.stderr
    assert "compress run: digits" in result.stdout and "all gates pass" in result.stdout
    names = {p.name for p in (cwd / "runs" / "default").iterdir()}
    assert {"model.onnx", "original.onnx", "synthetic.safetensors", "report.json", "report.md", "bench.json",
            "latency_quality.png", "model"} <= names


@pytest.mark.slow
def test_default_run_report_is_honest(default_run):
    _, cwd = default_run
    report = json.loads((cwd / "runs" / "default" / "report.json").read_text())
    summary = report["summary"]
    assert summary["quality_metric"] == "accuracy"
    assert summary["original"]["quality"]["accuracy"] >= 0.99  # the bundled teacher on the real test split
    # INT8 against its fake-quant torch model: top-1 disagreement within the 0.5% the check allows.
    assert summary["parity"]["passed"] and summary["parity"]["max_abs_diff"] <= 0.005
    assert summary["final"]["p90_ms"] > 0
    # Quality is the shipped INT8 file's, on the real test split; no real image trained it.
    assert summary["quality_measured_on"] == "onnx" and summary["final"]["onnx_quality"]["accuracy"] >= 0.99
    assert summary["final"]["macs"] * 2 <= summary["original"]["macs"]
    assert summary["final"]["onnx_bytes"] * 8 <= summary["original"]["onnx_bytes"]
    latency = summary["latency"]
    assert latency["latency_ratio_low"] <= latency["latency_ratio"] <= latency["latency_ratio_high"] < 1.0
    bench = report["steps"][-1]
    assert bench["config"]["batch_sizes"] == [1]  # what the gates read, nothing more
    assert bench["figures"]["stopped"] in ("converged", "time cap")
    assert report["versions"]["torch"].startswith("2.13.0")
    assert len(report["inputs_sha256"]["original_weights"]) == 64


@pytest.mark.slow
def test_ci_gates_the_default_run(default_run, runner, tmp_path):
    _, cwd = default_run
    report = str(cwd / "runs" / "default" / "report.json")
    passed = runner.invoke(cli, ["gate", report, "--max-onnx-mb", "0.1369", "--max-quality-drop", "0.01", "--require-parity",
                                 "--max-latency-ratio", "0.8",
                                 "--junit", str(tmp_path / "gate.xml")])
    assert passed.exit_code == 0, passed.stdout + passed.stderr
    assert 'failures="0"' in (tmp_path / "gate.xml").read_text()
    failed = runner.invoke(cli, ["gate", report, "--max-onnx-mb", "0.05"])
    assert failed.exit_code == 1 and "max_onnx_mb" in failed.stdout
