"""The `ptq` pass: post-training quantization of the exported ONNX (an ONNX-only pass).

It needs the ONNX an `export` step wrote and gives `<name>.int8.onnx`, which becomes the run's
current ONNX (so `bench` and the gates read it). It checks the INT8 graph against the float torch
model on held-out data (top-1 agreement for classifiers, mean cosine for encoders) and fails the
run below `min_fidelity`; it times INT8 against the float graph side by side with the one timer
and says so plainly when INT8 is slower.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from compress.config import StrictConfig

from compress.context import Context, Result
from compress.errors import RunFailed, UsageError
from compress.quant.history import mark_quantized, refuse_if_quantized
from compress.quant.options import Activations, Mode

if TYPE_CHECKING:
    from compress.data.specs import Dataset
    from compress.model import Model


class PtqConfig(StrictConfig):

    engine: Literal["ort", "inc"] = Field("ort", description="quantizer: ort (onnxruntime) or inc (Intel Neural Compressor, an optional extra)")
    mode: Mode = Field("auto", description="static (calibrated QDQ), dynamic (activation ranges per call, MatMul only) or auto: static for float inputs (CNNs), dynamic for token inputs (text encoders)")
    activations: Activations = Field("uint8", description="type of static activations; uint8 with int8 weights (U8S8) takes onnxruntime's fast integer kernels on x86, int8 (S8S8) was slower than float here")
    data: str | None = Field(None, description="calibration data spec (default: the training split of the model's own data, e.g. digits:train, text:train); never the held-out spec")
    calibration_samples: int = Field(256, ge=1, le=100_000, description="calibration inputs read from --data")
    batch_size: int = Field(16, ge=1, le=4096, description="calibration batch size")
    min_fidelity: float = Field(0.97, ge=0, le=1, description="least top-1 agreement (classifiers) or mean cosine (encoders) of the INT8 ONNX to the float model on held-out data; below it the run fails")
    time_check: bool = Field(True, description="time INT8 against the float ONNX at batch 1 side by side and record the ratio")

    @field_validator("engine")
    @classmethod
    def _engine_available(cls, engine: str) -> str:
        # Checked when the step is read, so a missing optional engine stops the run before it starts.
        import importlib.util

        if engine == "inc" and importlib.util.find_spec("neural_compressor") is None:
            raise ValueError("Intel Neural Compressor (neural-compressor-pt) is not installed; use --engine ort")
        if engine == "inc":
            raise ValueError("the inc engine is not implemented in this version of compress; use --engine ort")
        return engine


def ptq(model: Model, config: PtqConfig, ctx: Context) -> Result:
    from compress.quant.ort import quantize_onnx  # onnx, onnxruntime: when the step runs, not with PASSES

    refuse_if_quantized(model, "ptq", "quantize once; start again from the float model")
    source = ctx.artifacts.get("onnx")
    if source is None:
        raise UsageError("ptq step", "no ONNX to quantize", "put an export step before ptq")
    target = source.with_name(f"{source.stem}.int8.onnx")
    calibration = _calibration(model, config, ctx)
    ctx.log(f"ptq: quantizing {source.name} with onnxruntime (mode {config.mode})")
    quantized = quantize_onnx(source, target, calibration, config.mode, config.activations, config.batch_size)
    how = f"calibrated on {quantized.calibration_rows} inputs of {calibration.name}" if quantized.mode == "static" else "activation ranges per call"
    ctx.log(f"ptq: {quantized.mode} INT8, {how}; {quantized.bytes:,} bytes ({quantized.bytes / source.stat().st_size:.2f}x the float file)")
    figures = {
        "engine": config.engine,
        "mode": quantized.mode,
        "weights": "int8 symmetric per channel",
        "activations": quantized.activations,
        "preprocess": quantized.preprocess,
        "calibration_data": calibration.name if quantized.mode == "static" else "none (dynamic)",
        "calibration_rows": quantized.calibration_rows,
        "quantized_ops": _counts(quantized.quantized_ops),
        "float_ops": _counts(quantized.float_ops),
        "onnx_bytes": quantized.bytes,
        "float_onnx_bytes": source.stat().st_size,
        "size_ratio": quantized.bytes / source.stat().st_size,
        **_fidelity(model, target, ctx, config.min_fidelity),
    }
    if config.time_check:
        figures.update(_time_against_float(source, target, ctx))
    marked = mark_quantized(model, **{"pass": "ptq", "engine": config.engine, "mode": quantized.mode, "bits": 8})
    produced = {"onnx": {"path": str(target), "bytes": quantized.bytes, "quantized": f"int8 {quantized.mode}"}}
    return Result(marked, figures, {"onnx": target, "float_onnx": source}, produced)


def _calibration(model: Model, config: PtqConfig, ctx: Context) -> Dataset:
    """--data, else a calibration source the caller set, else the model's own training split."""
    from compress.data.specs import train_split

    spec = config.data or (None if "calibration" in ctx.data else train_split(ctx.heldout_spec or model.eval_data))
    if spec is not None:
        return ctx.dataset(spec, "calibration").head(config.calibration_samples)
    return ctx.source("calibration", "ptq").head(config.calibration_samples)


def _fidelity(model: Model, target: Path, ctx: Context, least: float) -> dict[str, float]:
    from compress.data.specs import Dataset
    from compress.metrics import quality
    from compress.onnx.outputs import onnx_outputs
    from compress.onnx.session import open_session
    from compress.predict import torch_outputs

    data = ctx.heldout if ctx.heldout is not None else Dataset("example inputs", model.example_inputs)
    reference = torch_outputs(model, data)
    outputs = onnx_outputs(open_session(target), data)
    figures = quality(model.task, outputs, reference, data.labels)
    metric = "agreement" if model.task == "classification" else "cosine_mean"
    if figures[metric] < least:
        raise RunFailed(f"the INT8 ONNX {target.name} has {metric} {figures[metric]:.4f} to the float model on "
                        f"{len(data)} inputs of {data.name}, under the {least:g} allowed (--min-fidelity)")
    return {f"int8_{k}": v for k, v in figures.items()} | {"fidelity_metric": metric, "fidelity_samples": len(data)}


def _time_against_float(source: Path, target: Path, ctx: Context) -> dict[str, float]:
    from compress.measure.bench import bench
    from compress.measure.settings import BenchSettings

    settings = BenchSettings(batch_sizes=(1,), threads=(1,), max_seconds=5.0)
    report = bench([source, target], settings, baseline=source)
    ours, theirs = (report.row(p.stem, 1, 1) for p in (target, source))
    ratio = ours["latency_ratio"]  # paired, with its 95% interval (compress.measure.bench)
    verdict = "faster" if ratio < 1 else "SLOWER"
    ctx.log(f"ptq: INT8 {ours['p50_ms']:.3f} ms vs float {theirs['p50_ms']:.3f} ms at batch 1: {verdict} "
            f"({ratio:.2f}x the float latency, 95% interval {ours['latency_ratio_low']:.2f}-{ours['latency_ratio_high']:.2f})")
    return {"int8_p50_ms": ours["p50_ms"], "float_p50_ms": theirs["p50_ms"], "int8_latency_ratio": ratio,
            "int8_latency_ratio_high": ours["latency_ratio_high"], "int8_slower": ratio >= 1,
            **_per_operator(source, target, ctx)}


def _per_operator(source: Path, target: Path, ctx: Context) -> dict[str, str]:
    """onnxruntime's profiler on both graphs at batch 1: milliseconds per call by operator type,
    so a slower INT8 graph shows where (Q/DQ, requantization, float operators left between)."""
    from compress.measure.profile import op_type_ms

    shown = {}
    for label, path in (("float", source), ("int8", target)):
        times = op_type_ms(path)
        shown[f"{label}_op_ms"] = ", ".join(f"{op} {ms:.3f}" for op, ms in list(times.items())[:6])
        ctx.log(f"ptq: {label} graph, ms per call by operator: {shown[f'{label}_op_ms']}")
    return shown


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{op} {n}" for op, n in counts.items()) or "none"

