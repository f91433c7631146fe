"""onnxruntime's own dynamic INT8 of a MiniLM FP32 export, three ways, for a paired bench against
compress's INT8 (benchmarks/minilm_int8_fast.sh):

- `ort_dynamic.onnx`: `quantize_dynamic(per_channel=True)` on the export as it is (the issue's
  baseline: "quantize_dynamic on the same export");
- `ort_dynamic_sum.onnx`: the same file with compress's residual-Add rewrite
  (compress.onnx.residual_sum), to show how much of compress's lead that rewrite alone is;
- `ort_dynamic_fused.onnx`: onnxruntime's transformer optimizer first (model_type bert: Attention,
  EmbedLayerNormalization, SkipLayerNormalization, BiasGelu fused in the float graph), then
  `quantize_dynamic(per_channel=True)`, which makes QAttention and QEmbedLayerNormalization of them.

Usage: .venv/bin/python benchmarks/ort_dynamic_variants.py FP32.onnx OUT_DIR [NUM_HEADS HIDDEN]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from compress.onnx.residual_sum import rewrite_file


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    heads, hidden = (int(a) for a in (sys.argv[3:5] or ["12", "384"]))
    plain = out / "ort_dynamic.onnx"
    quantize_dynamic(str(source), str(plain), per_channel=True, weight_type=QuantType.QInt8)
    summed = out / "ort_dynamic_sum.onnx"
    summed.write_bytes(plain.read_bytes())
    print(f"{summed}: {rewrite_file(summed)} residual Adds as Sum")
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        fused_float = Path(scratch) / "fused.onnx"
        optimized = optimize_model(str(source), "bert", num_heads=heads, hidden_size=hidden,
                                   optimization_options=FusionOptions("bert"), opt_level=0)
        print(f"transformer optimizer on {source}: {optimized.get_fused_operator_statistics()}")
        optimized.save_model_to_file(str(fused_float))
        # The fused graph's contrib operators have no ONNX shape inference: their outputs are float.
        quantize_dynamic(str(fused_float), str(out / "ort_dynamic_fused.onnx"), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    print(f"{out / 'ort_dynamic_fused.onnx'}")


if __name__ == "__main__":
    main()
