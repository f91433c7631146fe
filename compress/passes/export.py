"""The `export` pass: ONNX with a dynamic batch axis, checked, then compared with torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from compress.context import Context, Result
from compress.errors import RunFailed

if TYPE_CHECKING:
    from compress.model import Model


class ExportConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    opset: int = Field(17, ge=17, le=21, description="ONNX opset version of the exported graph")
    tolerance: float = Field(1e-4, gt=0, le=1, description="largest |onnxruntime - torch| output difference allowed on held-out inputs, relative to the largest output magnitude when that exceeds 1; over it the run fails")
    parity_samples: int = Field(64, ge=1, le=10000, description="number of held-out inputs compared between torch and onnxruntime")
    filename: str = Field("model.onnx", pattern=r"^[\w.-]+\.onnx$", description="file name of the ONNX graph in the run folder")


def export(model: Model, config: ExportConfig, ctx: Context) -> Result:
    from compress.onnx.export import export_onnx  # torch and onnx: imported when a step runs, not with PASSES
    from compress.onnx.parity import check_parity

    ctx.log(f"export: exporting {model.name} to {config.filename} (opset {config.opset})")
    exported = export_onnx(model, ctx.run_dir / config.filename, config.opset)
    data = ctx.heldout.head(config.parity_samples) if ctx.heldout is not None else None
    if data is None:
        from compress.data.specs import Dataset

        data = Dataset("example inputs", model.example_inputs)
    parity = check_parity(model, exported.path, data, config.tolerance)
    if not parity.passed:
        raise RunFailed(
            f"onnxruntime differs from torch by {parity.max_abs_diff:.3g} on {parity.samples} "
            f"inputs of {data.name}, over the {parity.allowed:.3g} allowed (tolerance {config.tolerance:g} x output "
            f"scale {parity.output_scale:.3g}) ({exported.path})"
        )
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
