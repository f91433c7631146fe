"""The `bench` pass: onnxruntime latency of the original and the current ONNX, side by side.

The original is exported once into the run folder with the same export as the `export` pass, so
the latency ratio compares two graphs made the same way, timed in one run.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from compress.atomic import write_text
from compress.context import Context, Result
from compress.errors import UsageError
from compress.measure.settings import BenchSettings

if TYPE_CHECKING:
    from compress.model import Model

ORIGINAL_ONNX = "original.onnx"


def bench(model: Model, config: BenchSettings, ctx: Context) -> Result:
    from compress.measure.bench import bench as bench_onnx  # onnxruntime, torch: when the step runs
    from compress.onnx.export import export_onnx

    current = ctx.artifacts.get("onnx")
    if current is None:
        raise UsageError("bench step", "no ONNX to time", "put an export step before bench")
    original = ctx.artifacts.get("original_onnx")
    if original is None:
        ctx.log(f"bench: exporting the original model to {ORIGINAL_ONNX} for the side-by-side timing")
        original = export_onnx(ctx.teacher, ctx.run_dir / ORIGINAL_ONNX).path
    report = bench_onnx([original, current], config, log=ctx.log)
    rows = {(r["path"], r["batch"], r["threads"]): r for r in report.rows}
    batch, threads = config.batch_sizes[0], config.threads[0]
    ours, theirs = rows[(str(current), batch, threads)], rows[(str(original), batch, threads)]
    figures = {
        "batch": batch,
        "threads": threads,
        "p50_ms": ours["p50_ms"],
        "p90_ms": ours["p90_ms"],
        "spread_pct": ours["spread_pct"],
        "original_p50_ms": theirs["p50_ms"],
        "original_p90_ms": theirs["p90_ms"],
        "latency_ratio": ours["p90_ms"] / theirs["p90_ms"],
        "onnx_bytes": ours["bytes"],
        "original_onnx_bytes": theirs["bytes"],
    }
    bench_json = write_text(ctx.run_dir / "bench.json", json.dumps(report.to_json(), indent=2) + "\n")
    # Every figure is a latency figure: the summary copies them under the names given here.
    return Result(model, figures, {"original_onnx": original, "bench_json": bench_json}, {"latency": figures})
