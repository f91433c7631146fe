#!/usr/bin/env bash
# MiniLM: compress `export ptq` against onnxruntime's quantize_dynamic (per-channel) on the same
# export, side by side. Usage: bash benchmarks/ptq_minilm.sh [workdir]   (default runs/bench-ptq-minilm)
set -euo pipefail
W=${1:-runs/bench-ptq-minilm}
BIN=.venv/bin
rm -rf "$W"
# compress: export, then ptq (auto -> dynamic for text encoders) and ptq --mode static, each into its own run.
$BIN/compress run --model minilm --out "$W/auto" --json export ptq --no-time-check > "$W.auto.json"
$BIN/compress run --model minilm --out "$W/static" --json export ptq --mode static --no-time-check --min-fidelity 0 > "$W.static.json"
# onnxruntime's own dynamic quantizer, per channel, on the same float export (its defaults otherwise).
$BIN/python - "$W" <<'PY'
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
w = sys.argv[1]
quantize_dynamic(f"{w}/auto/model.onnx", f"{w}/ort_dynamic.onnx", per_channel=True, weight_type=QuantType.QInt8)
PY
cp "$W/static/model.int8.onnx" "$W/static_int8.onnx"
$BIN/compress eval "$W/ort_dynamic.onnx" --data text:heldout --reference minilm --json > "$W.ort_dynamic.eval.json"
$BIN/compress bench "$W/auto/model.onnx" "$W/auto/model.int8.onnx" "$W/static_int8.onnx" "$W/ort_dynamic.onnx" \
    --baseline "$W/auto/model.onnx" --batch 1 --batch 8 --threads 1 --max-seconds 30 --json "$W.bench.json"
