"""`compress bench`: a table (or JSON) on stdout, progress on stderr, bad input -> one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from compress.measure.bench import BenchSettings

main = pytest.importorskip("compress.cli.main", reason="compress.cli.main is not wired yet")

FAST = ["--iters", "5", "--warmup", "1", "--rounds", "2"]


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
    assert "latency / cnn" in result.stdout and "1.000" in table_rows[0] and "1x" in table_rows[0]
    assert "round 2/2 other" in result.stderr and "peak RSS" in result.stderr
    assert "round 1/2" not in result.stdout

    data = json.loads(out.read_text())
    assert data["baseline"] == "cnn" and data["settings"]["iters"] == 5
    assert set(data["models"]["other"]["results"]) == {"b1_t1", "b3_t1"}
    figures = data["models"]["other"]["results"]["b3_t1"]
    assert figures["bytes"] == cnn.stat().st_size and figures["throughput"] > 0
    assert 0.2 < figures["ratio"] < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "other.onnx"]


def test_json_dash_prints_only_json_on_stdout(cnn: Path) -> None:
    result = _bench(cnn, "--json", "-", *FAST)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["models"]["cnn"]["results"]["b1_t1"]["p50_ms"] > 0
    assert data["models"]["cnn"]["rss_mb"] > 0


@pytest.mark.parametrize("option", ["--batch", "--threads", "--iters"])
def test_counts_below_one_are_refused(cnn: Path, option: str) -> None:
    result = _bench(cnn, option, "0")
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.stderr


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
    for name in ("iters", "rounds", "warmup", "seq_len"):
        assert BenchSettings.model_fields[name].description in result.stdout


def test_plot_draws_latency_per_item_against_batch(cnn: Path, tmp_path: Path) -> None:
    result = _bench(cnn, "--batch", "1", "--batch", "4", "--plot", tmp_path / "latency.png", *FAST)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.png"]
