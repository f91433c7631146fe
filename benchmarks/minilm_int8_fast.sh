#!/usr/bin/env bash
# MiniLM W8A8: compress `qat --bits 8 export` (its residual Adds kept apart from their LayerNorms,
# compress.onnx.residual_sum) against onnxruntime's quantize_dynamic per channel on the same FP32
# export, and against two more onnxruntime variants (benchmarks/ort_dynamic_variants.py: the same
# rewrite on quantize_dynamic's graph; quantize_dynamic after onnxruntime's transformer optimizer).
# Quality on text:heldout and the stdlib sentences (benchmarks/qat_minilm.sh); one paired bench of all,
# batch 1 and 8, seq 128, 1 thread.
# Usage: bash benchmarks/minilm_int8_fast.sh WORKDIR [qat options...]
#   e.g. nice -n 5 bash benchmarks/minilm_int8_fast.sh runs/bench-int8fast --steps 0
set -euo pipefail
W=${1:-runs/bench-int8fast}
shift || true
BIN=.venv/bin
bash benchmarks/qat_minilm.sh "$W" "$@"
$BIN/python benchmarks/ort_dynamic_variants.py "$W/fp32.onnx" "$W"
for f in ort_dynamic_sum ort_dynamic_fused; do
  $BIN/compress eval "$W/$f.onnx" --data text:heldout --reference minilm --json > "$W/$f.eval.json"
done
$BIN/compress bench "$W/qat_int8.onnx" "$W/ort_dynamic.onnx" "$W/ort_dynamic_sum.onnx" "$W/ort_dynamic_fused.onnx" \
    --baseline "$W/ort_dynamic.onnx" --batch 1 --batch 8 --threads 1 --max-seconds 30 --json "$W/bench_variants.json"
