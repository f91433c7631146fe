"""`compress bench`: a table (or JSON) on stdout, progress on stderr, bad input -> one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli_checks import one_line_error
from torch import nn

from compress.measure.bench import BenchSettings

main = pytest.importorskip("compress.cli.main", reason="compress.cli.main is not wired yet")

FAST = ["--min-calls", "20", "--warmup", "1", "--max-seconds", "1", "--target-pct", "5"]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()
    path = tmp_path_factory.mktemp("bench_cli") / "cnn.onnx"
    torch.onnx.export(module, (torch.randn(2, 1, 8, 8),), str(path), input_names=["pixels"], output_names=["output"],
                      dynamic_axes={"pixels": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


def _bench(*args: str | Path):
    return CliRunner().invoke(main.cli, ["bench", *map(str, args)])


def test_table_on_stdout_json_file_and_progress_on_stderr(cnn: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(cnn.read_bytes())
    out = tmp_path / "bench.json"
    result = _bench(cnn, other, "--baseline", cnn, "--batch", "1", "--batch", "3", "--json", out, *FAST)
    assert result.exit_code == 0, result.output

    table_rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1:4] for row in table_rows] == [
        [" cnn   ", "     1 ", "       1 "], [" other ", "     1 ", "       1 "],
        [" cnn   ", "     3 ", "       1 "], [" other ", "     3 ", "       1 "],
    ]  # fmt: skip
    assert "latency / cnn [95%]" in result.stdout and "1.000 [1.000, 1.000]" in table_rows[0] and "1x" in table_rows[0]
    assert "stopped:" in result.stderr and "peak RSS" in result.stderr and "other: p50" in result.stderr
    assert "stopped:" not in result.stdout.split("\n", 2)[-1]

    data = json.loads(out.read_text())
    assert data["baseline"] == "cnn" and data["settings"]["min_calls"] == 20 and data["settings"]["target_pct"] == 5
    assert set(data["models"]["other"]["results"]) == {"b1_t1", "b3_t1"}
    figures = data["models"]["other"]["results"]["b3_t1"]
    assert figures["bytes"] == cnn.stat().st_size and figures["throughput"] > 0
    assert 0.2 < figures["latency_ratio_low"] <= figures["latency_ratio"] <= figures["latency_ratio_high"] < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "other.onnx"]


def test_json_dash_prints_only_json_on_stdout(cnn: Path) -> None:
    result = _bench(cnn, "--json", "-", *FAST)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["models"]["cnn"]["results"]["b1_t1"]["p50_ms"] > 0
    assert data["models"]["cnn"]["rss_mb"] > 0


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--batch", "0", "'--batch-sizes' / '--batch': 0 is not in the range x>=1"),
    ("--batch-sizes", "x", "'--batch-sizes' / '--batch': 'x' is not a valid integer range"),
    ("--threads", "0", "'--threads': 0 is not in the range x>=1"),
    ("--min-calls", "3", "'--min-calls': 3 is not in the range 20<=x<=1000000"),
    ("--target-pct", "0", "'--target-pct': 0.0 is not in the range 0<x<=50"),
    ("--max-seconds", "-1", "'--max-seconds': -1.0 is not in the range 0<x<=3600"),
    ("--warmup", "-1", "'--warmup': -1 is not in the range 0<=x<=1000"),
])
def test_bad_counts_are_refused_naming_the_option(cnn: Path, option: str, value: str, named: str) -> None:
    one_line_error(_bench(cnn, option, value), 2, named)


def test_help_shows_item_types_and_ranges_not_annotated() -> None:
    text = " ".join(CliRunner().invoke(main.cli, ["bench", "--help"]).stdout.split())
    assert "ANNOTATED" not in text
    assert "--batch-sizes, --batch INTEGER RANGE" in text and "[x>=1]" in text


def test_more_threads_than_cpus_is_one_line(cnn: Path) -> None:
    import os

    result = _bench(cnn, "--threads", str((os.cpu_count() or 1) + 1), *FAST)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"compress: bench threads: {(os.cpu_count() or 1) + 1}: this machine has ")
    assert result.stderr.count("\n") == 1


def test_a_batch_too_big_for_memory_is_one_line_before_timing(cnn: Path) -> None:
    result = _bench(cnn, "--batch", "100000000", *FAST)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("compress: batch size: 100000000: cnn.onnx needs about ")
    assert "use a batch of at most" in result.stderr and result.stderr.count("\n") == 1


def test_an_unwritable_plot_is_refused_before_timing_and_json_is_written_first(cnn: Path, tmp_path: Path, monkeypatch) -> None:
    result = _bench(cnn, "--plot", tmp_path / "missing" / "plot.png", *FAST)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"compress: --plot: {tmp_path / 'missing' / 'plot.png'}: folder ")
    assert "p50" not in result.stderr  # nothing was timed

    (tmp_path / "plot.png").mkdir()
    result = _bench(cnn, "--plot", tmp_path / "plot.png", *FAST)
    assert result.exit_code == 2 and "Invalid value for '--plot'" in result.stderr and "is a directory" in result.stderr

    # A plot that fails only when drawn (say, the disk filled up) leaves the JSON in place.
    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("compress.reporting.plot.latency_batch_plot", disk_full)
    result = _bench(cnn, "--json", tmp_path / "bench.json", "--plot", tmp_path / "other.png", *FAST)
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert json.loads((tmp_path / "bench.json").read_text())["models"]["cnn"]["results"]["b1_t1"]["p50_ms"] > 0


def test_a_file_that_is_not_onnx_is_one_line_and_exit_2(cnn: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.onnx"
    notes.write_text("not a graph\n")
    for path in (notes, tmp_path / "missing.onnx"):
        result = _bench(cnn, path, *FAST)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"compress: ONNX file: {path}: ")
        assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_option_help_is_the_settings_field_description() -> None:
    result = CliRunner().invoke(main.cli, ["bench", "--help"], terminal_width=400)
    assert result.exit_code == 0
    for name in ("min_calls", "target_pct", "max_seconds", "warmup", "seq_len"):
        assert BenchSettings.model_fields[name].description in result.stdout


def test_plot_draws_latency_per_item_against_batch(cnn: Path, tmp_path: Path) -> None:
    result = _bench(cnn, "--batch", "1", "--batch", "4", "--plot", tmp_path / "latency.png", *FAST)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.png"]


def test_several_models_without_a_baseline_are_compared_with_the_first(cnn: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(cnn.read_bytes())
    result = _bench(other, cnn, "--json", "-", *FAST)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["baseline"] == "other" and data["models"]["other"]["results"]["b1_t1"]["latency_ratio"] == 1.0
    assert 0.2 < data["models"]["cnn"]["results"]["b1_t1"]["latency_ratio"] < 5
    alone = json.loads(_bench(cnn, "--json", "-", *FAST).stdout)
    assert alone["baseline"] is None and "latency_ratio" not in alone["models"]["cnn"]["results"]["b1_t1"]


def test_json_alone_prints_json_as_run_and_eval_do(cnn: Path) -> None:
    result = _bench(cnn, *FAST, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["models"]["cnn"]["results"]["b1_t1"]["p50_ms"] > 0


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_a_model_given_to_json_or_plot_is_refused_and_left_alone(cnn: Path, tmp_path: Path, option: str) -> None:
    # `bench --json a.onnx b.onnx`: --json takes a.onnx as its FILE; writing there would destroy the model.
    other = tmp_path / "other.onnx"
    other.write_bytes(cnn.read_bytes())
    result = _bench(option, other, cnn, *FAST)
    one_line_error(result, 2, option, "other.onnx", "is a model file")
    assert other.read_bytes() == cnn.read_bytes()
