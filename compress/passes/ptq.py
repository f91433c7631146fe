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

from pydantic import Field, field_validator, model_validator

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

    weight_bits: Literal["8", "4"] = Field("8", description="8: INT8 (static or dynamic); 4: packed 4-bit weights for MatMul layers (onnxruntime MatMulNBits, float activations; text models), everything else float")
    block_size: int = Field(16, ge=16, le=256, description="4-bit weights: input rows sharing one scale (a power of two)")
    keep_slow_float: bool = Field(True, description="ort: profile float and INT8 per operator, requantize with the operator types whose INT8 kernels were slower kept in float, and keep that graph when it times faster (needs the time check)")
    tolerable_loss: float | None = Field(None, gt=0, lt=1, description="inc: run Intel Neural Compressor's accuracy-aware autotune and keep the first configuration that loses at most this share of the float model's fidelity score (agreement or cosine, on the calibration data); without it, one static INT8 configuration")
    max_trials: int = Field(8, ge=1, le=100, description="inc: most configurations autotune tries")

    @field_validator("engine")
    @classmethod
    def _engine_available(cls, engine: str) -> str:
        # Checked when the step is read, so a missing optional engine stops the run before it starts.
        import importlib.util

        if engine == "inc" and importlib.util.find_spec("neural_compressor") is None:
            raise ValueError("Intel Neural Compressor (neural-compressor-pt) is not installed (pip install 'compress[inc]'); use --engine ort")
        return engine

    @model_validator(mode="after")
    def _inc_options(self) -> PtqConfig:
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"--block-size {self.block_size} is not a power of two; use 16, 32, 64, 128 or 256")
        if self.weight_bits == "4" and (self.engine != "ort" or self.mode != "auto"):
            raise ValueError("--weight-bits 4 packs MatMul weights with onnxruntime (weight-only, float activations); use --engine ort and leave --mode at auto")
        if self.engine == "inc" and (self.mode == "dynamic" or self.activations != "uint8"):
            raise ValueError("the inc engine quantizes statically with uint8 activations (PT2E); leave --mode and --activations at their defaults or use --engine ort")
        if self.engine == "ort" and self.tolerable_loss is not None:
            raise ValueError("--tolerable-loss tunes the inc engine (Intel Neural Compressor's autotune); use --engine inc, or --min-fidelity with ort")
        return self


def ptq(model: Model, config: PtqConfig, ctx: Context) -> Result:
    refuse_if_quantized(model, "ptq", "quantize once; start again from the float model")
    source = ctx.artifacts.get("onnx")
    if source is None:
        raise UsageError("ptq step", "no ONNX to quantize", "put an export step before ptq")
    target = source.with_name(f"{source.stem}.int{config.weight_bits}.onnx")
    calibration = _calibration(model, config, ctx) if config.weight_bits == "8" else None
    if config.weight_bits == "4":
        engine_figures = _four_bit(config, ctx, source, target)
    elif config.engine == "inc":
        engine_figures = _inc(model, config, ctx, calibration, target)
    else:
        engine_figures = _ort(config, ctx, calibration, source, target)
    size = target.stat().st_size
    figures = {
        "engine": config.engine,
        **engine_figures,
        "onnx_bytes": size,
        "float_onnx_bytes": source.stat().st_size,
        "size_ratio": size / source.stat().st_size,
        **_fidelity(model, target, ctx, config.min_fidelity),
    }
    if config.time_check:
        figures.update(_time_against_float(source, target, ctx))
    bits = int(config.weight_bits)
    marked = mark_quantized(model, **{"pass": "ptq", "engine": config.engine, "mode": figures["mode"], "bits": bits})
    produced = {"onnx": {"path": str(target), "bytes": size, "quantized": f"int{bits} {figures['mode']} ({config.engine})"}}
    return Result(marked, figures, {"onnx": target, "float_onnx": source}, produced)


def _ort(config: PtqConfig, ctx: Context, calibration: Dataset, source: Path, target: Path) -> dict[str, object]:
    from compress.quant.embeddings import table_summary
    from compress.quant.ort import quantize_onnx  # onnx, onnxruntime: when the step runs, not with PASSES

    ctx.log(f"ptq: quantizing {source.name} with onnxruntime (mode {config.mode})")
    quantized = quantize_onnx(source, target, calibration, config.mode, config.activations, config.batch_size)
    how = f"calibrated on {quantized.calibration_rows} inputs of {calibration.name}" if quantized.mode == "static" else "activation ranges per call"
    ctx.log(f"ptq: {quantized.mode} INT8, {how}; {quantized.bytes:,} bytes ({quantized.bytes / source.stat().st_size:.2f}x the float file)")
    kept: dict[str, object] = {}
    if config.keep_slow_float and config.time_check:
        quantized, kept = _keep_slow_float(config, ctx, calibration, source, quantized)
    return {
        "mode": quantized.mode,
        "weights": "int8 symmetric per channel",
        "activations": quantized.activations,
        "preprocess": quantized.preprocess,
        "calibration_data": calibration.name if quantized.mode == "static" else "none (dynamic)",
        "calibration_rows": quantized.calibration_rows,
        "quantized_ops": _counts(quantized.quantized_ops),
        "float_ops": _counts(quantized.float_ops),
        "residual_adds_as_sum": quantized.adds_as_sum,
        "embedding_tables_int8": table_summary(quantized.tables),
        **kept,
    }


def _four_bit(config: PtqConfig, ctx: Context, source: Path, target: Path) -> dict[str, object]:
    from compress.quant.embeddings import table_summary
    from compress.quant.nbits import KERNEL, pack_4bit

    ctx.log(f"ptq: packing the MatMul weights of {source.name} to 4 bits (onnxruntime {KERNEL}, blocks of {config.block_size})")
    packed = pack_4bit(source, target, config.block_size)
    ctx.log(f"ptq: {packed.layers} MatMul layers run as {KERNEL}: weights {packed.float_weight_bytes:,} -> {packed.packed_weight_bytes:,} bytes packed; "
            f"the file is {packed.bytes:,} bytes ({packed.bytes / source.stat().st_size:.2f}x the float file)")
    return {
        "mode": "weight-only",
        "weights": f"4-bit symmetric, blocks of {config.block_size}",
        "bit_widths": f"4-bit packed weights in {packed.layers} MatMul layers ({KERNEL}, float activations and compute); "
                      + ("embedding tables int8 per row; " if packed.tables.tables else "")
                      + "every other operator (Conv, Gemm, LayerNorm, Softmax) float32",
        "embedding_tables_int8": table_summary(packed.tables),
        "activations": "float32",
        "packed_layers": packed.layers,
        "packed_weight_bytes": packed.packed_weight_bytes,
        "float_weight_bytes": packed.float_weight_bytes,
        "quantized_ops": f"MatMul {packed.layers} ({KERNEL})",
    }


def _keep_slow_float(config: PtqConfig, ctx: Context, calibration: Dataset, source: Path, quantized):
    """Profile float and INT8 per operator; requantize with the types whose integer kernels lost
    kept in float, and keep that graph only if the paired timing says it is faster as a whole."""
    import dataclasses
    import os
    import tempfile

    from compress.measure.bench import bench
    from compress.measure.profile import op_type_ms
    from compress.measure.settings import BenchSettings
    from compress.quant.ort import WEIGHT_OPS, quantize_onnx
    from compress.quant.slow_ops import slower_types

    target = quantized.path
    slow = slower_types(op_type_ms(source), op_type_ms(target), set(quantized.quantized_ops))
    if not slow:
        ctx.log("ptq: every quantized operator type ran faster as INT8 than as float")
        return quantized, {"kept_float": "none (every quantized operator type ran faster as INT8)"}
    why = "; ".join(s.why() for s in slow)
    # Conv, Gemm and MatMul hold the weights, so INT8 is what makes the file 4x smaller: they stay
    # INT8 and their time shows in the report. The operators between them (Add, pooling, Concat,
    # ...) gain nothing in size, so where their integer kernels lose they go back to float.
    types = tuple(s.op_type for s in slow if s.op_type not in WEIGHT_OPS)
    if not types:
        ctx.log(f"ptq: slower as INT8: {why}; only weight-bearing operators, which stay INT8 (they carry the size)")
        return quantized, {"kept_float": "none (only weight-bearing operator types lost; they stay INT8 for the size)", "slower_as_int8": why}
    ctx.log(f"ptq: slower as INT8: {why}; requantizing with {', '.join(types)} kept in float")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".ptq-mixed.") as scratch:
        trial = Path(scratch) / f"{target.stem}.mixed.onnx"
        mixed = quantize_onnx(source, trial, calibration, config.mode, config.activations, config.batch_size, keep_float=types)
        report = bench([target, trial], BenchSettings(batch_sizes=(1,), threads=(1,), max_seconds=5.0), baseline=target)
        row = report.row(trial.stem, 1, 1)
        ratio, high = row["latency_ratio"], row["latency_ratio_high"]
        faster = high < 1  # the whole 95% interval under 1: clearly faster, not noise
        ctx.log(f"ptq: with {', '.join(types)} in float the graph takes {ratio:.2f}x the all-INT8 time "
                f"(95% interval {row['latency_ratio_low']:.2f}-{high:.2f}): {'kept' if faster else 'not clearly faster, all-INT8 kept'}")
        if faster:
            os.replace(trial, target)
            quantized = dataclasses.replace(mixed, path=target)
    figures = {"kept_float": ", ".join(types) if faster else "none", "slower_as_int8": why,
               "kept_float_latency_ratio": ratio, "kept_float_latency_ratio_high": high}
    return quantized, figures


def _inc(model: Model, config: PtqConfig, ctx: Context, calibration: Dataset, target: Path) -> dict[str, object]:
    """Intel Neural Compressor's PT2E static INT8 (autotuned with --tolerable-loss), exported by the
    one export (dynamo, the exporter that takes a PT2E graph), tidied into the Q/DQ form
    onnxruntime fuses, and checked: onnxruntime against INC's own torch module on held-out data."""
    import tempfile

    from compress.atomic import atomic_path
    from compress.data.specs import Dataset
    from compress.metrics import quality
    from compress.onnx.export import export_onnx
    from compress.predict import torch_outputs
    from compress.quant.inc import inc_version, quantize_inc
    from compress.quant.ort import op_summary
    from compress.quant.qdq_export import verify
    from compress.quant.qdq_tidy import tidy_qdq

    import onnx

    metric = "agreement" if model.task == "classification" else "cosine_mean"
    reference = torch_outputs(model, calibration)

    def score(candidate) -> float:
        return quality(model.task, torch_outputs(model.replace(module=candidate), calibration), reference, None)[metric]

    how = f"autotune within a {config.tolerable_loss:g} loss of {metric}" if config.tolerable_loss else "static INT8"
    ctx.log(f"ptq: quantizing {model.name} with Intel Neural Compressor {inc_version()} (PT2E, {how}, calibrated on {len(calibration)} inputs of {calibration.name})")
    quantized = quantize_inc(model, calibration, config.batch_size, config.tolerable_loss, config.max_trials, score)
    int8_model = model.replace(module=quantized.module, example_inputs=tuple(x.repeat(2, *[1] * (x.dim() - 1)) for x in model.example_inputs))
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".inc.") as scratch, atomic_path(target) as tmp:
        exported = export_onnx(int8_model, Path(scratch) / "pt2e.onnx", exporters=("dynamo",))
        tidied = tidy_qdq(exported.path, tmp)
    data = ctx.heldout if ctx.heldout is not None else Dataset("example inputs", model.example_inputs)
    parity = verify(int8_model, target, data)  # RunFailed below 99.5% agreement / 0.999 cosine
    quantized_ops, float_ops = op_summary(onnx.load(str(target)).graph)
    ctx.log(f"ptq: INC kept {quantized.config} after {quantized.trials} trial(s); onnxruntime agrees with INC's torch module ({metric} {parity[metric]:.4f})")
    return {
        "mode": "static",
        "weights": "int8 symmetric per channel",
        "activations": _activation_types(target),
        "inc_version": inc_version(),
        "inc_config": quantized.config,
        "inc_trials": quantized.trials,
        "exporter": exported.exporter,
        "opset": exported.opset,
        **{f"inc_parity_{k}": v for k, v in parity.items()},
        **tidied,
        "calibration_data": calibration.name,
        "calibration_rows": len(calibration),
        "quantized_ops": _counts(quantized_ops),
        "float_ops": _counts(float_ops),
    }


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
        raise RunFailed(f"the quantized ONNX {target.name} has {metric} {figures[metric]:.4f} to the float model on "
                        f"{len(data)} inputs of {data.name}, under the {least:g} allowed (--min-fidelity)")
    return {f"int8_{k}": v for k, v in figures.items()} | {"fidelity_metric": metric, "fidelity_samples": len(data)}


def _time_against_float(source: Path, target: Path, ctx: Context) -> dict[str, float]:
    from compress.measure.bench import bench
    from compress.measure.settings import BenchSettings, speed_verdict

    settings = BenchSettings(batch_sizes=(1,), threads=(1,), max_seconds=5.0)
    report = bench([source, target], settings, baseline=source)
    ours, theirs = (report.row(p.stem, 1, 1) for p in (target, source))
    ratio = ours["latency_ratio"]  # paired, with its 95% interval (compress.measure.bench)
    verdict = speed_verdict(ours["latency_ratio_low"], ours["latency_ratio_high"], "the float graph")
    ctx.log(f"ptq: quantized {ours['p50_ms']:.3f} ms vs float {theirs['p50_ms']:.3f} ms at batch 1: {verdict} "
            f"({ratio:.2f}x the float latency, 95% interval {ours['latency_ratio_low']:.2f}-{ours['latency_ratio_high']:.2f})")
    return {"int8_p50_ms": ours["p50_ms"], "float_p50_ms": theirs["p50_ms"], "int8_latency_ratio": ratio,
            "int8_latency_ratio_high": ours["latency_ratio_high"], "int8_slower": ours["latency_ratio_low"] > 1,
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


def _activation_types(path: Path) -> str:
    """The integer types activations are quantized to (zero points of non-constant QuantizeLinear)."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {i.name: i for i in graph.initializer}
    types = {onnx.helper.tensor_dtype_to_np_dtype(constants[n.input[2]].data_type).name
             for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants and len(n.input) > 2 and n.input[2] in constants}
    return ", ".join(sorted(types)) or "none"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{op} {n}" for op, n in counts.items()) or "none"

