"""The `bench` pass: onnxruntime latency of the current ONNX against the original's, paired call
by call, with the ratio's 95% interval (compress.measure.bench).

The original is exported into the run folder with the export step's own config (opset, parity
tolerance), so the ratio compares two graphs made the same way, and its parity is checked like
the current one's. When no step changed the model, the original's graph would be the current one
byte for byte: it is neither exported nor timed again, and the ratio is 1 by construction.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from compress.atomic import write_text
from compress.rundir import relative_paths
from compress.context import Context, Result
from compress.errors import UsageError
from compress.measure.settings import BenchSettings, speed_verdict

if TYPE_CHECKING:
    from compress.model import Model

ORIGINAL_ONNX = "original.onnx"


def bench(model: Model, config: BenchSettings, ctx: Context) -> Result:
    from compress.measure.bench import bench as bench_onnx  # onnxruntime: when the step runs, not with PASSES

    current = ctx.artifacts.get("onnx")
    if current is None:
        raise UsageError("bench step", "no ONNX to time", "put an export step before bench")
    figures: dict[str, Any] = {}
    artifacts = {}
    original = ctx.artifacts.get("original_onnx")
    same_graph = original is None and same_model(model, ctx.teacher)
    if same_graph:
        ctx.log("bench: no step changed the model, so the original's graph is this one: timed once, ratio 1")
    elif original is None:
        original, parity = _export_original(ctx)
        figures.update(original_parity_max_abs_diff=parity.max_abs_diff, original_parity_passed=parity.passed)
    if original is not None:
        artifacts["original_onnx"] = original
    paths = [current] if same_graph else [original, current]
    report = bench_onnx(paths, config, log=ctx.log, baseline=None if same_graph else original)
    batch, threads = config.batch_sizes[0], config.threads[0]
    rows = {r["path"]: r for r in report.rows if (r["batch"], r["threads"]) == (batch, threads)}
    ours = rows[str(current)]
    theirs = ours if same_graph else rows[str(original)]
    figures = {
        "batch": batch,
        "threads": threads,
        "p50_ms": ours["p50_ms"],
        "p90_ms": ours["p90_ms"],
        "p99_ms": ours["p99_ms"],
        "original_p50_ms": theirs["p50_ms"],
        "original_p90_ms": theirs["p90_ms"],
        "original_p99_ms": theirs["p99_ms"],
        "latency_ratio": 1.0 if same_graph else ours["latency_ratio"],
        "latency_ratio_low": 1.0 if same_graph else ours["latency_ratio_low"],
        "latency_ratio_high": 1.0 if same_graph else ours["latency_ratio_high"],
        "same_graph": same_graph,
        "stopped": ours["stopped"],
        "calls": ours["calls"],
        "cpu_share": ours["cpu_share"],
        "original_cpu_share": theirs["cpu_share"],
        "cpu_starved": ours["cpu_starved"] or theirs["cpu_starved"],
        "load_1m": ours["load_1m"],
        "onnx_bytes": ours["bytes"],
        "original_onnx_bytes": theirs["bytes"],
        **figures,
    }
    if not same_graph:
        ctx.log(f"bench: {current.name} takes {figures['latency_ratio']:.2f}x the original's latency at batch {batch}: "
                f"{speed_verdict(figures['latency_ratio_low'], figures['latency_ratio_high'])}")
    bench_json = relative_paths(report.to_json(), ctx.run_dir)  # the run folder's own files, by name
    artifacts["bench_json"] = write_text(ctx.run_dir / "bench.json", json.dumps(bench_json, indent=2) + "\n")
    # Every figure is a latency figure: the summary copies them under the names given here.
    return Result(model, figures, artifacts, {"latency": figures})


def _export_original(ctx: Context):
    """original.onnx, made with the export step's config and checked for parity like the model."""
    from compress.passes.export import ExportConfig, export_checked

    export_config = ctx.configs.get("export", ExportConfig())
    ctx.log(f"bench: exporting the original model to {ORIGINAL_ONNX} (opset {export_config.opset}, as the export step) for the paired timing")
    exported, parity = export_checked(ctx.teacher, export_config, ORIGINAL_ONNX, ctx)
    return exported.path, parity


def same_model(model: Model, original: Model) -> bool:
    """True when `model` is the original unchanged: same classes and layout, same edits, equal
    tensors; then the one export gives both the same graph."""
    import torch

    if type(model.module) is not type(original.module) or model.edits != original.edits or repr(model.module) != repr(original.module):
        return False
    ours, theirs = model.module.state_dict(), original.module.state_dict()
    return ours.keys() == theirs.keys() and all(
        ours[k].shape == theirs[k].shape and ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in ours
    )
