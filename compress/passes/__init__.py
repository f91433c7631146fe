"""The one table of passes. A pass is a frozen config class plus one function
`fn(model, config, ctx) -> Result`; the CLI, the recipe loader and `compress passes` read only this.

Importing this table stays light (pydantic, no torch, onnx or onnxruntime), so `compress passes`
and `--help` start fast: pass modules import their heavy libraries inside the pass function."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel

from compress.context import Context, Result
from compress.measure.settings import BenchSettings
from compress.passes.bench import bench
from compress.passes.export import ExportConfig, export

if TYPE_CHECKING:
    from compress.model import Model


class Pass(NamedTuple):
    config: type[BaseModel]
    fn: Callable[[Model, BaseModel, Context], Result]
    summary: str


PASSES: dict[str, Pass] = {
    "export": Pass(ExportConfig, export, "Export ONNX (opset >= 17, dynamic batch), check it, and fail if onnxruntime differs from torch."),
    "bench": Pass(BenchSettings, bench, "Time the original and the current ONNX side by side with onnxruntime; record p50/p90 and the latency ratio."),
}
