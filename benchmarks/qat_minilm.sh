#!/usr/bin/env bash
# MiniLM W8A8: compress `qat --bits 8 export` against onnxruntime's quantize_dynamic (per channel) on
# the same FP32 export, side by side (quality on text:heldout and on two corpora from outside the project,
# the docstrings of Python's standard library and the licence texts in /usr/share/common-licenses;
# paired latency at batch 1 and 8, seq 128).
# Usage: bash benchmarks/qat_minilm.sh WORKDIR [qat options...]
#   e.g. nice -n 5 bash benchmarks/qat_minilm.sh runs/bench-qat-minilm --steps 100 --ignore 'encoder.encoder.layer.0.output.dense'
#   DATA=synthetic ... runs the issue's data-free command (qat's default data).
set -euo pipefail
# MODEL=DIR runs it on another MiniLM (e.g. a saved pruned one); quality stays against the original minilm.
W=${1:-runs/bench-qat-minilm}
MODEL=${MODEL:-minilm}
DATA=${DATA:-text:train}
shift || true
BIN=.venv/bin
rm -rf "$W" && mkdir -p "$W"
# compress: qat (8-bit weights per channel, dynamic uint8 inputs), export (INT8 with the learned steps),
# bench (which also exports the FP32 original as original.onnx).
$BIN/compress run --model "$MODEL" --out "$W/qat" --json qat --bits 8 --data "$DATA" "$@" export bench --batch-sizes 1 --max-seconds 20 > "$W/qat.json"
# onnxruntime's own dynamic quantizer, per channel, on the same FP32 export (its defaults otherwise).
$BIN/python - "$W" <<'PY'
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
w = sys.argv[1]
quantize_dynamic(f"{w}/qat/original.onnx", f"{w}/ort_dynamic.onnx", per_channel=True, weight_type=QuantType.QInt8)
PY
cp "$W/qat/model.onnx" "$W/qat_int8.onnx"
cp "$W/qat/original.onnx" "$W/fp32.onnx"
$BIN/python benchmarks/stdlib_sentences.py "$W/stdlib.txt"
$BIN/python benchmarks/license_sentences.py "$W/license.txt"
for f in qat_int8 ort_dynamic; do
  $BIN/compress eval "$W/$f.onnx" --data text:heldout --reference minilm --json > "$W/$f.eval.json"
  for corpus in stdlib license; do
    $BIN/compress eval "$W/$f.onnx" --data "text:$W/$corpus.txt" --reference minilm --json > "$W/$f.$corpus.eval.json"
  done
done
$BIN/compress bench "$W/fp32.onnx" "$W/qat_int8.onnx" "$W/ort_dynamic.onnx" --baseline "$W/ort_dynamic.onnx" \
    --batch 1 --batch 8 --threads 1 --max-seconds 30 --json "$W/bench.json"
