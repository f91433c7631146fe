"""The run's record for people and machines: `report.json` (versioned schema), `report.md` (the
same as tables) and, when two models were timed, a latency-vs-quality PNG."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from compress.atomic import write_text
from compress.reporting.digest import folder_sha256
from compress.reporting.schema import REPORT_SCHEMA_VERSION
from compress.metrics import primary_metric
from compress.pipeline import RunRecord
from compress.versions import versions



def state_sha256(module: torch.nn.Module) -> str:
    """A fingerprint of the weights themselves, whatever file they came from."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def build_report(record: RunRecord, *, model_info: dict[str, Any], recipe: dict[str, Any], seed: int,
                 inputs: dict[str, str], data: str | None, task: str, has_labels: bool) -> dict[str, Any]:
    steps = [
        {"name": s.name, "config": s.config, "before": s.before, "after": s.after, "seconds": s.seconds, "figures": s.figures, "artifacts": s.artifacts}
        for s in record.steps
    ]
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "versions": versions(),
        "seed": seed,
        "model": model_info,
        "data": data,
        "inputs_sha256": inputs,
        "recipe": recipe,
        "original": record.original,
        "steps": steps,
        "summary": summarize(record, primary_metric(task, has_labels)),
    }


def summarize(record: RunRecord, metric: str) -> dict[str, Any]:
    """The figures a gate reads: original vs final, each from the step that measured it last."""
    last_export = _last(record, "export")
    last_bench = _last(record, "bench")
    final_stats = record.steps[-1].after if record.steps else record.original
    original = {**_costs(record.original), "onnx_bytes": None, "p50_ms": None, "p90_ms": None}
    final = {**_costs(final_stats), "onnx_bytes": None, "p50_ms": None, "p90_ms": None}
    if last_export is not None:
        final["onnx_bytes"] = last_export.figures["onnx_bytes"]
    if last_bench is not None:
        b = last_bench.figures
        original.update(onnx_bytes=b["original_onnx_bytes"], p50_ms=b["original_p50_ms"], p90_ms=b["original_p90_ms"])
        final.update(p50_ms=b["p50_ms"], p90_ms=b["p90_ms"])
    before, after = original["quality"].get(metric), final["quality"].get(metric)
    parity = None
    if last_export is not None:
        f = last_export.figures
        parity = {"passed": f["parity_passed"], "max_abs_diff": f["parity_max_abs_diff"],
                  "tolerance": f["parity_allowed"], "cosine_min": f["parity_cosine_min"]}
    return {
        "original": original,
        "final": final,
        "quality_metric": metric,
        "quality_drop": None if before is None or after is None else before - after,
        "latency_ratio": None if last_bench is None else last_bench.figures["latency_ratio"],
        "parity": parity,
    }


def _costs(stats: dict[str, Any]) -> dict[str, Any]:
    return {"params": stats["params"], "macs": stats["macs"], "bytes": stats["bytes"], "quality": stats.get("quality", {})}


def _last(record: RunRecord, name: str):
    return next((s for s in reversed(record.steps) if s.name == name), None)


def write_report(report: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    """Write the plot and report.md, then report.json last with the sha256 of every other file in
    `run_dir` (`files`, paths relative to it), so `compress gate` can tell when one changed."""
    paths = {"report_json": run_dir / "report.json", "report_md": run_dir / "report.md"}
    plot = _plot(report, run_dir)
    if plot is not None:
        paths["plot"] = plot
        report.setdefault("artifacts", {})["plot"] = plot.name
    write_text(paths["report_md"], to_markdown(report))
    report["files"] = folder_sha256(run_dir, exclude=paths["report_json"])
    write_text(paths["report_json"], json.dumps(report, indent=2, default=str) + "\n")
    return paths



def _plot(report: dict[str, Any], run_dir: Path) -> Path | None:
    summary = report["summary"]
    metric = summary["quality_metric"]
    points = []
    for label, side in (("original", summary["original"]), ("final", summary["final"])):
        if side["p90_ms"] is not None and metric in side["quality"]:
            points.append({"name": label, "latency_ms": side["p90_ms"], "quality": side["quality"][metric], "quality_name": metric})
    if len(points) < 2:
        return None
    from compress.reporting.plot import latency_quality_plot

    bench = next(s for s in reversed(report["steps"]) if s["name"] == "bench")["figures"]
    label = f"p90 latency (ms), onnxruntime, batch {bench['batch']}, {bench['threads']} thread(s)"
    return latency_quality_plot(points, run_dir / "latency_quality.png", label)


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"# compress run: {report['model']['name']}",
        "",
        f"compress {report['versions']['compress']}, torch {report['versions']['torch']}, onnx {report['versions']['onnx']}, "
        f"onnxruntime {report['versions']['onnxruntime']}; seed {report['seed']}; quality on `{report['data']}`.",
        "",
        "## Summary",
        "",
        "| | params | MACs | ONNX bytes | p50 ms | p90 ms | " + s["quality_metric"] + " |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in ("original", "final"):
        side = s[label]
        lines.append(f"| {label} | {side['params']:,} | {side['macs']:,} | {_fmt(side['onnx_bytes'])} | {_fmt(side['p50_ms'])} | "
                     f"{_fmt(side['p90_ms'])} | {_fmt(side['quality'].get(s['quality_metric']))} |")
    lines += ["", f"Quality drop: {_fmt(s['quality_drop'])}; latency ratio (p90 final / original): {_fmt(s['latency_ratio'])}; "
              f"parity: {_parity(s['parity'])}.", "", "## Steps", "",
              "| # | step | seconds | params | MACs | bytes | quality | figures |", "|---:|---|---:|---:|---:|---:|---|---|"]
    for i, step in enumerate(report["steps"], 1):
        after = step["after"]
        quality = ", ".join(f"{k} {_fmt(v)}" for k, v in after.get("quality", {}).items())
        figures = ", ".join(f"{k} {_fmt(v)}" for k, v in step["figures"].items())
        lines.append(f"| {i} | {step['name']} | {step['seconds']:.2f} | {after['params']:,} | {after['macs']:,} | {after['bytes']:,} | {quality} | {figures} |")
    gates = report.get("gates")
    if gates:
        budgets = ", ".join(f"{k} {v}" for k, v in gates["budgets"].items()) or "none"
        lines += ["", "## Gates", "", f"Budgets: {budgets}.", ""]
        lines += [f"- FAIL {v['message']}" for v in gates["violations"]] or ["- all budgets met"]
    plot = report.get("artifacts", {}).get("plot")
    if plot:
        lines += ["", f"![{s['quality_metric']} vs latency]({Path(plot).name})"]
    return "\n".join(lines) + "\n"


def _parity(parity: dict[str, Any] | None) -> str:
    if parity is None:
        return "not checked"
    return f"{'passed' if parity['passed'] else 'FAILED'} (max |diff| {parity['max_abs_diff']:.2e}, allowed {parity['tolerance']:.3g})"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
