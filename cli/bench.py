"""`compress bench A.onnx [B.onnx ...]`: onnxruntime latency side by side, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress import atomic
from compress.cli.options import config_options, given, with_options
from compress.cli.render import echo_json, progress_logger, stdout, table
from compress.config import build_config
from compress.errors import UsageError
from compress.measure.settings import BenchSettings

@click.command("bench")
@click.argument("models", metavar="MODEL.onnx...", nargs=-1, required=True, type=click.Path(path_type=Path))
# Every setting's option comes from BenchSettings' fields, as for the bench step of `compress run`;
# --batch is the short name the README uses for --batch-sizes.
@with_options(config_options(BenchSettings, aliases={"batch_sizes": ["--batch"]}))
@click.option("--baseline", type=click.Path(path_type=Path), metavar="MODEL.onnx",
              help="the model the others are compared with (timed too): latency ratio with its 95% interval, speed-up = the inverse; default: the first of several models")
# `--json` alone prints JSON, as `run`, `eval` and `gate` do; `--json FILE` writes it to FILE.
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), metavar="[FILE]",
              is_flag=False, flag_value="-",
              help="print the results as JSON instead of the table; with FILE, write them to FILE (and print the table)")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="also draw p50 latency per item against batch size as a PNG (written after the JSON)")
def bench(models: tuple[Path, ...], baseline: Path | None, json_path: Path | None, plot_path: Path | None, **fields: object) -> None:
    """Time ONNX models with onnxruntime on this CPU, paired call by call: the models' calls
    alternate (ABBA), and timing stops once the 95% interval of each latency ratio (or median) is
    within the target or at the time cap; report p50/p90/p99 latency, the ratio with its interval,
    throughput, file size, peak RSS and the CPU share each model got."""
    from compress.measure.bench import bench as bench_onnx

    settings = build_config(BenchSettings, given(fields), "bench")
    # Where results go is checked before timing, so a long bench never ends on an unwritable path.
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path is not None and str(path) != "-":
            _check_not_a_model(option, path)
            _check_writable(option, path)
    # Several files are timed side by side to be compared: against the first unless told otherwise.
    if baseline is None and len(models) > 1:
        baseline = models[0]
    report = bench_onnx(models, settings, log=progress_logger(), baseline=baseline)
    # The data first, then the picture: a plot that fails cannot lose the figures.
    if json_path is not None and str(json_path) == "-":
        echo_json(report.to_json())
    elif json_path is not None:
        atomic.write_text(json_path, json.dumps(report.to_json(), indent=2) + "\n")
    if plot_path is not None:
        from compress.reporting.plot import latency_batch_plot

        latency_batch_plot(report.rows, plot_path)
    if json_path is None or str(json_path) != "-":
        stdout().print(_table(report))


def _check_not_a_model(option: str, path: Path) -> None:
    """`compress bench --json a.onnx b.onnx` reads as "JSON, of a and b" to a user of `run --json`,
    but gives a.onnx to --json: refused, so a model file is never overwritten with results."""
    if path.suffix.lower() in (".onnx", ".ort", ".data"):
        fix = "give a .json file, or put the models first and --json last to print JSON" if option == "--json" else "give a .png file"
        raise UsageError(option, path, f"is a model file, not where to write the {'JSON' if option == '--json' else 'plot'}; {fix}")


def _check_writable(option: str, path: Path) -> None:
    import os

    folder = path.parent
    if not folder.is_dir():
        raise UsageError(option, path, f"folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(option, path, f"cannot write there (folder {folder} is not writable); choose another path")


def _table(report):
    columns = ["model", "batch", "threads", "p50 ms", "p90 ms", "p99 ms", "items/s", "MB", "RSS MB", "calls", "CPU share"]
    if report.baseline is not None:
        columns += [f"latency / {report.baseline} [95%]", "speed-up"]
    rows = []
    for r in report.rows:
        rss_mb = report.models[r["model"]]["rss_mb"]
        row = [r["model"], r["batch"], r["threads"], r["p50_ms"], r["p90_ms"], r["p99_ms"],
               f"{r['throughput']:,.0f}", f"{r['bytes'] / 1e6:.3f}", f"{rss_mb:.1f}", r["calls"],
               f"{r['cpu_share']:.2f}" + (" busy" if r["cpu_starved"] else "")]
        if report.baseline is not None:
            row += [f"{r['latency_ratio']:.3f} [{r['latency_ratio_low']:.3f}, {r['latency_ratio_high']:.3f}]", f"{r['speedup']:.3g}x"]
        rows.append(row)
    s, first = report.settings, report.rows[0]
    load = f", load average {first['load_1m']:.2f}" if first.get("load_1m") is not None else ""
    title = (f"compress bench: onnxruntime {report.onnxruntime_version}, {report.cpu['model'] or report.cpu['machine']}{load}; "
             f"paired calls until the 95% interval is within +/-{s.target_pct:g}% or {s.max_seconds:g} s "
             f"(stopped: {', '.join(dict.fromkeys(r['stopped'] for r in report.rows))})")
    return table(title, columns, rows)
