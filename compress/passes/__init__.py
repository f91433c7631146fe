"""The one table of passes. A pass is a frozen config class plus one function
`fn(model, config, ctx) -> Result`; the CLI, the recipe loader and `compress passes` read only this.

Each entry also declares what the step needs, what it gives and what it changes, so a recipe in
the wrong order (bench before export, qat after ptq) is refused when it is read, before any step
runs (`compress.pipeline.check_order`). The vocabulary:
- needs: "torch" (the torch model is the current model) and/or "onnx" (an ONNX file of the
  current model exists);
- gives: the kinds its Result produces ("onnx", "parity", "latency"; see compress.context);
- changes: "nothing", "torch" (the torch model: any ONNX written before is stale) or "onnx" (only
  the ONNX file, e.g. post-training quantization: the torch model no longer matches what ships,
  so no later step may work on it).

Importing this table stays light (pydantic, no torch, onnx or onnxruntime), so `compress passes`
and `--help` start fast: pass modules import their heavy libraries inside the pass function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel

from compress.context import Context, Produced, Result
from compress.measure.settings import BenchSettings
from compress.passes.bench import bench
from compress.passes.distill import DistillConfig, distill
from compress.passes.export import ExportConfig, export
from compress.passes.prune import PruneConfig, prune
from compress.passes.ptq import PtqConfig, ptq
from compress.passes.qat import QatConfig, qat
from compress.passes.synthesize import SynthesizeConfig, synthesize

if TYPE_CHECKING:
    from compress.model import Model

Need = Literal["torch", "onnx"]
Change = Literal["nothing", "torch", "onnx"]


class Pass(NamedTuple):
    config: type[BaseModel]
    fn: Callable[[Model, BaseModel, Context], Result]
    summary: str
    needs: frozenset[Need]
    gives: frozenset[Produced]
    changes: Change


PASSES: dict[str, Pass] = {
    "prune": Pass(PruneConfig, prune, "Structured pruning that removes channels (CNNs) or attention heads and FFN neurons (Transformers), to a ratio or a MACs / params / latency budget.",
                  needs=frozenset({"torch"}), gives=frozenset(), changes="torch"),
    "synthesize": Pass(SynthesizeConfig, synthesize, "Make a synthetic input set (cached) for data-free distill: BatchNorm-statistics inversion into images, or token sequences for text encoders.",
                       needs=frozenset(), gives=frozenset(), changes="nothing"),
    "distill": Pass(DistillConfig, distill, "Recover quality by knowledge distillation from the original on --data (logit KL, labels, Transformer hidden states, MiniLM attention / value relations, attention outputs, RKD), keeping the best held-out state.",
                    needs=frozenset({"torch"}), gives=frozenset(), changes="torch"),
    "export": Pass(ExportConfig, export, "Export ONNX (opset >= 17, dynamic batch), check it, and fail if onnxruntime differs from torch.",
                   needs=frozenset({"torch"}), gives=frozenset({"onnx", "parity"}), changes="nothing"),
    "qat": Pass(QatConfig, qat, "Quantization-aware training: fold BatchNorm, LSQ fake quantizers (weights per channel at --bits, inputs 8-bit), KD from the float teacher; export then writes INT8 ONNX with the learned scales.",
                needs=frozenset({"torch"}), gives=frozenset(), changes="torch"),
    "ptq": Pass(PtqConfig, ptq, "Quantize the exported ONNX to INT8 with onnxruntime (U8S8 per-channel static QDQ for CNNs, dynamic MatMul for text); fail if it drifts from the float model. Written right before export, it runs after it.",
                needs=frozenset({"torch", "onnx"}), gives=frozenset({"onnx"}), changes="onnx"),
    "bench": Pass(BenchSettings, bench, "Time the original and the current ONNX side by side with onnxruntime; record p50/p90 and the latency ratio.",
                  needs=frozenset({"onnx"}), gives=frozenset({"latency"}), changes="nothing"),
}
