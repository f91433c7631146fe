"""`compress bench A.onnx [B.onnx ...]`: onnxruntime latency side by side, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress import atomic
from compress.measure.bench import BenchReport, BenchSettings
from compress.measure.bench import bench as bench_onnx
from compress.reporting.plot import latency_batch_plot
from compress.cli.render import echo_json, progress_logger, stdout, table


def _help(name: str) -> str:
    # BenchSettings' field descriptions are the one text for CLI help, recipe docs and JSON schema.
    return BenchSettings.model_fields[name].description or name


def _default(name: str) -> object:
    return BenchSettings.model_fields[name].default


@click.command("bench")
@click.argument("models", metavar="MODEL.onnx...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--batch", "batch_sizes", type=click.IntRange(min=1), multiple=True, default=_default("batch_sizes"),
              show_default=True, help=_help("batch_sizes") + " (repeatable)")
@click.option("--threads", type=click.IntRange(min=1), multiple=True, default=_default("threads"), show_default=True,
              help=_help("threads") + " (repeatable)")
@click.option("--warmup", type=click.IntRange(min=0), default=_default("warmup"), show_default=True, help=_help("warmup"))
@click.option("--iters", type=click.IntRange(min=1), default=_default("iters"), show_default=True, help=_help("iters"))
@click.option("--rounds", type=click.IntRange(min=1), default=_default("rounds"), show_default=True, help=_help("rounds"))
@click.option("--seq-len", type=click.IntRange(min=1), default=_default("seq_len"), show_default=True, help=_help("seq_len"))
@click.option("--seed", type=int, default=_default("seed"), show_default=True, help=_help("seed"))
@click.option("--baseline", type=click.Path(path_type=Path), metavar="MODEL.onnx",
              help="the model the others are compared with (timed too): ratio = p50 / its p50, speed-up = the inverse")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), metavar="FILE",
              help="write the results as JSON to FILE; '-' prints them to stdout instead of the table")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="also draw p50 latency per item against batch size as a PNG")
def bench(models: tuple[Path, ...], baseline: Path | None, json_path: Path | None, plot_path: Path | None, **fields: object) -> None:
    """Time ONNX models with onnxruntime on this CPU, taking turns in rounds so they share the
    machine's noise; report p50/p90/p99 latency, throughput, file size and peak RSS."""
    settings = BenchSettings(**fields)
    report = bench_onnx(models, settings, log=progress_logger(), baseline=baseline)
    if plot_path is not None:
        latency_batch_plot(report.rows, plot_path)
    if json_path is not None and str(json_path) == "-":
        echo_json(report.to_json())
        return
    if json_path is not None:
        atomic.write_text(json_path, json.dumps(report.to_json(), indent=2) + "\n")
    stdout().print(_table(report))


def _table(report: BenchReport):
    columns = ["model", "batch", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "items/s", "MB", "RSS MB", "spread %"]
    if report.baseline is not None:
        columns += [f"latency / {report.baseline}", "speed-up"]
    rows = []
    for r in report.rows:
        rss_mb = report.models[r["model"]]["rss_mb"]
        row = [r["model"], r["batch"], r["threads"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["mean_ms"],
               f"{r['throughput']:,.0f}", f"{r['bytes'] / 1e6:.3f}", f"{rss_mb:.1f}", f"{r['spread_pct']:.1f}"]
        if report.baseline is not None:
            row += [f"{r['ratio']:.3f}", f"{r['speedup']:.3g}x"]
        rows.append(row)
    s = report.settings
    title = (f"compress bench: onnxruntime {report.onnxruntime_version}, {report.cpu['model'] or report.cpu['machine']}; "
             f"{s.rounds} round(s) x {s.iters} timed calls after {s.warmup} warm-up")
    return table(title, columns, rows)
