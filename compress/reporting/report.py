"""The run's record for people and machines: `report.json` (versioned schema), `report.md` (the
same as tables) and, when two models were timed, a latency-vs-quality PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compress.atomic import write_text
from compress.reporting.digest import SELF_KEY, folder_sha256, report_sha256
from compress.reporting.schema import REPORT_SCHEMA_VERSION
from compress.measure.settings import speed_verdict
from compress.metrics import primary_metric
from compress.pipeline import RunRecord
from compress.versions import versions



def build_report(record: RunRecord, *, model_info: dict[str, Any], recipe: dict[str, Any], seed: int,
                 inputs: dict[str, str], data: str | None, task: str, has_labels: bool) -> dict[str, Any]:
    steps = [
        {"name": s.name, "config": s.config, "before": s.before, "after": s.after, "seconds": s.seconds, "figures": s.figures,
         "artifacts": s.artifacts, "produced": s.produced}
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
    """The figures a gate reads: original vs final. Each kind (onnx, parity, latency) comes from
    the last step that produced it, whatever the pass is called; latency figures are copied under
    the names the measuring pass gave them. The quality drop is the final ONNX's when the run
    wrote one (the file that ships), else the torch model's; both are kept."""
    last = {kind: step for step in record.steps for kind in step.produced}  # later steps win
    onnx, parity, latency = (last[k].produced[k] if k in last else None for k in ("onnx", "parity", "latency"))
    final_stats = record.steps[-1].after if record.steps else record.original
    timed = latency or {}
    original = {**_costs(record.original), "onnx_bytes": timed.get("original_onnx_bytes"),
                "p50_ms": timed.get("original_p50_ms"), "p90_ms": timed.get("original_p90_ms")}
    final = {**_costs(final_stats), "onnx_quality": record.onnx_quality, "onnx_bytes": None if onnx is None else onnx["bytes"],
             "p50_ms": timed.get("p50_ms"), "p90_ms": timed.get("p90_ms")}
    torch_drop = _drop(original["quality"], final["quality"], metric)
    onnx_drop = _drop(original["quality"], record.onnx_quality or {}, metric)
    measured_on = "onnx" if onnx_drop is not None else ("torch" if torch_drop is not None else None)
    return {
        "original": original,
        "final": final,
        "quality_metric": metric,
        "quality_measured_on": measured_on,
        "quality_drop": onnx_drop if onnx_drop is not None else torch_drop,
        "quality_drop_torch": torch_drop,
        "quality_drop_onnx": onnx_drop,
        "onnx": None if onnx is None else dict(onnx),
        "parity": None if parity is None else dict(parity),
        "latency": None if latency is None else dict(latency),
        "produced_by": {kind: f"step {record.steps.index(step) + 1} ({step.name})" for kind, step in last.items()},
    }


def _drop(before: dict[str, Any], after: dict[str, Any], metric: str) -> float | None:
    return None if metric not in before or metric not in after else before[metric] - after[metric]


def _costs(stats: dict[str, Any]) -> dict[str, Any]:
    return {"params": stats["params"], "macs": stats["macs"], "bytes": stats["bytes"], "quality": stats.get("quality", {})}


def write_report(report: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    """Write the plot and report.md, then report.json last with the sha256 of every other file in
    `run_dir` (`files`, paths relative to it) and of its own content (`report_sha256`), so
    `compress gate` can tell when one changed."""
    paths = {"report_json": run_dir / "report.json", "report_md": run_dir / "report.md"}
    plot = _plot(report, run_dir)
    if plot is not None:
        paths["plot"] = plot
        report.setdefault("artifacts", {})["plot"] = plot.name
    write_text(paths["report_md"], to_markdown(report))
    report["files"] = folder_sha256(run_dir, exclude=paths["report_json"])
    report[SELF_KEY] = report_sha256(report)
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

    latency = summary["latency"]
    label = f"p90 latency (ms), onnxruntime, batch {latency['batch']}, {latency['threads']} thread(s)"
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
    metric = s["quality_metric"]
    rows = [("original", s["original"], s["original"]["quality"]), ("final (torch)", s["final"], s["final"]["quality"])]
    if s["final"]["onnx_quality"] is not None:
        rows.append(("final (ONNX)", s["final"], s["final"]["onnx_quality"]))
    for label, side, quality in rows:
        lines.append(f"| {label} | {side['params']:,} | {side['macs']:,} | {_fmt(side['onnx_bytes'])} | {_fmt(side['p50_ms'])} | "
                     f"{_fmt(side['p90_ms'])} | {_fmt(quality.get(metric))} |")
    lines += ["", f"Quality drop ({_measured_on(s)}): {_fmt(s['quality_drop'])}; latency ratio (final / original, paired): {_ratio(s['latency'])}; "
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


def _measured_on(summary: dict[str, Any]) -> str:
    return {"onnx": "final ONNX", "torch": "torch model"}.get(summary["quality_measured_on"], "not measured")


def _ratio(latency: dict[str, Any] | None) -> str:
    if latency is None or latency.get("latency_ratio") is None:
        return "-"
    low, high = latency["latency_ratio_low"], latency["latency_ratio_high"]
    return f"{latency['latency_ratio']:.3f} (95% interval {low:.3f}-{high:.3f}): {speed_verdict(low, high)}"



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
