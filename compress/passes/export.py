"""The `export` pass: ONNX with a dynamic batch axis, checked, then compared with torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from compress.config import StrictConfig
from compress.context import Context, Result
from compress.errors import RunFailed

if TYPE_CHECKING:
    from compress.model import Model
    from compress.onnx.export import Exported
    from compress.onnx.parity import Parity


class ExportConfig(StrictConfig):
    opset: int = Field(17, ge=17, le=21, description="ONNX opset version of the exported graph")
    tolerance: float = Field(1e-4, gt=0, le=1, description="largest |onnxruntime - torch| output difference allowed on held-out and random inputs, relative to the largest output magnitude when that exceeds 1; over it the run fails")
    parity_samples: int = Field(64, ge=1, le=10000, description="number of held-out inputs compared between torch and onnxruntime (random inputs at two batch sizes, and two sequence lengths for text, are always compared too); an INT8 graph from qat is checked on all held-out inputs up to 1000, at least this many")
    filename: str = Field("model.onnx", pattern=r"^[\w.-]+\.onnx$", description="file name of the ONNX graph in the run folder")


def export(model: Model, config: ExportConfig, ctx: Context) -> Result:
    from compress.quant.fake import quant_layers  # torch: when the step runs

    if quant_layers(model.module):
        return _export_quantized(model, config, ctx)
    exported, parity = export_checked(model, config, config.filename, ctx)
    figures = {
        "exporter": exported.exporter,
        "opset": exported.opset,
        "onnx_bytes": exported.bytes,
        "parity_max_abs_diff": parity.max_abs_diff,
        "parity_cosine_min": parity.cosine_min,
        "parity_samples": parity.samples,
        "parity_tolerance": parity.tolerance,
        "parity_allowed": parity.allowed,
        "parity_passed": parity.passed,
    }
    produced = {
        "onnx": {"path": str(exported.path), "bytes": exported.bytes, "opset": exported.opset, "exporter": exported.exporter},
        "parity": {"passed": parity.passed, "max_abs_diff": parity.max_abs_diff, "tolerance": parity.allowed,
                   "cosine_min": parity.cosine_min, "samples": parity.samples},
    }
    return Result(model, figures, {"onnx": exported.path}, produced)


def export_checked(model: Model, config: ExportConfig, filename: str, ctx: Context) -> tuple[Exported, Parity]:
    """Export `model` to `filename` in the run folder with `config`, then check onnxruntime
    against torch; RunFailed over tolerance. The bench pass exports the original through here
    too: one export config, one check, for both graphs."""
    from compress.heap import release_freed
    from compress.onnx.export import export_onnx  # torch and onnx: imported when a step runs, not with PASSES
    from compress.onnx.parity import check_parity, probes

    ctx.log(f"export: exporting {model.name} to {filename} (opset {config.opset})")
    exported = export_onnx(model, ctx.run_dir / filename, config.opset)
    release_freed()  # the checker's copy is garbage now; parity opens a session and runs both models
    # Held-out inputs where there are some; random probes at two batch sizes (two sequence
    # lengths for text) always, so a graph that fixed the example's batch or length fails here.
    datasets = ([ctx.heldout.head(config.parity_samples)] if ctx.heldout is not None else []) + probes(model, ctx.seed)
    parity = check_parity(model, exported.path, datasets, config.tolerance)
    if not parity.passed:
        raise RunFailed(_failure(parity, config, exported.path.name))
    return exported, parity


def _export_quantized(model: Model, config: ExportConfig, ctx: Context) -> Result:
    """A fake-quantized model (qat) exports as INT8: the float graph, then onnxruntime's Q/DQ with
    the learned steps; checked against the fake-quant torch model by agreement (or cosine), as
    rounding at grid boundaries makes an absolute tolerance meaningless."""
    from compress.data.specs import Dataset
    from compress.quant.embeddings import table_summary
    from compress.quant.qdq_export import FIDELITY_SAMPLES, LEAST_AGREEMENT, LEAST_COSINE, export_quantized, verify

    ctx.log(f"export: exporting the fake-quantized {model.name} to INT8 {config.filename} (opset {config.opset}) with its learned scales")
    exported = export_quantized(model, ctx.run_dir / config.filename, config.opset, _qat_calibration(model, ctx))
    samples = max(config.parity_samples, FIDELITY_SAMPLES)
    data = ctx.heldout.head(samples) if ctx.heldout is not None else Dataset("example inputs", model.example_inputs)
    fidelity = verify(model, exported.path, data)
    figures = {
        "exporter": exported.exporter,
        "opset": exported.opset,
        "onnx_bytes": exported.bytes,
        "quantized_ops": ", ".join(f"{op} {n}" for op, n in exported.quantized_ops.items()),
        "float_ops": ", ".join(f"{op} {n}" for op, n in exported.float_ops.items()) or "none",
        "residual_adds_as_sum": exported.adds_as_sum,
        "attention_fused": exported.attention_fused,
        "embedding_tables_int8": table_summary(exported.tables),
        **{f"fake_quant_{k}": v for k, v in fidelity.items()},
        "parity_samples": len(data),
    }
    # The parity a gate reads: for an INT8 graph the check is top-1 disagreement (1 - cosine for
    # encoders) with the fake-quant model against its bar; verify() already failed the run over it.
    metric, bar = ("agreement", LEAST_AGREEMENT) if model.task == "classification" else ("cosine_mean", LEAST_COSINE)
    parity = {"passed": True, "max_abs_diff": 1 - fidelity[metric], "tolerance": 1 - bar,
              "cosine_min": fidelity["cosine_min"], "samples": len(data),
              "criterion": f"1 - {metric} of the INT8 ONNX to the fake-quantized torch model"}
    produced = {"onnx": {"path": str(exported.path), "bytes": exported.bytes, "opset": exported.opset,
                         "exporter": exported.exporter, "quantized": "int8 qat"}, "parity": parity}
    return Result(model, figures, {"onnx": exported.path}, produced)


def _qat_calibration(model: Model, ctx: Context):
    """The data `qat` trained on (recorded in its edit), as calibration for the operators between
    the quantized layers: the run's synthetic set when qat was data-free (a saved model exported in
    another run has none: then only the quantized layers get Q/DQ)."""
    from compress.passes.synthesize import SYNTHETIC
    from compress.quant.edits import FAKE_QUANT

    spec = next((e.get("data") for e in reversed(model.edits) if e.get("kind") == FAKE_QUANT), None)
    if spec == SYNTHETIC:
        return ctx.data[SYNTHETIC].head(256) if SYNTHETIC in ctx.data else None
    return ctx.dataset(spec, "calibration").head(256) if spec else None


def _failure(parity: Parity, config: ExportConfig, onnx_name: str) -> str:
    on = f"{parity.samples} inputs ({'; '.join(parity.checked_on)})"
    if parity.nonfinite_torch:
        return f"the model gives non-finite outputs in torch ({parity.nonfinite_torch} NaN/inf values on {on}); fix the model before export"
    if parity.nonfinite_onnx:
        return f"onnxruntime gives non-finite outputs ({parity.nonfinite_onnx} NaN/inf values on {on}) where torch is finite ({onnx_name})"
    return (f"onnxruntime differs from torch by {parity.max_abs_diff:.3g} on {on}, over the {parity.allowed:.3g} allowed "
            f"(tolerance {config.tolerance:g} x output scale {parity.output_scale:.3g}) ({onnx_name})")
