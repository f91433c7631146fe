#!/usr/bin/env bash
# Embedding tables in int8 (one scale per row) against the same qat W8A8 MiniLM with its tables in
# float (`--ignore '*embeddings*'`, what qat exported before) and onnxruntime's quantize_dynamic
# (one scale for the whole table): bytes, quality on text:heldout and the two outside corpora
# (benchmarks/qat_minilm.sh), and one paired bench of the three at batch 1 and 8, sequence 128.
# Usage: bash benchmarks/int8_tables.sh WORKDIR [qat options...]   (about 15 minutes on 2 cores)
#   MODEL=DIR runs it on another MiniLM (e.g. a saved pruned one), as qat_minilm.sh.
set -euo pipefail
W=${1:-runs/bench-int8-tables}
shift || true
BIN=.venv/bin
rm -rf "$W" && mkdir -p "$W"
bash benchmarks/qat_minilm.sh "$W/int8-tables" --steps 0 "$@"
bash benchmarks/qat_minilm.sh "$W/float-tables" --steps 0 --ignore '*embeddings*' "$@"
$BIN/compress bench "$W/int8-tables/qat_int8.onnx" "$W/float-tables/qat_int8.onnx" "$W/int8-tables/ort_dynamic.onnx" \
    --baseline "$W/float-tables/qat_int8.onnx" --batch 1 --batch 8 --threads 1 --max-seconds 40 --json "$W/bench.json"
for d in int8-tables float-tables; do
  for f in qat_int8 ort_dynamic; do
    printf '%s %s: %s bytes; ' "$d" "$f" "$(stat -c %s "$W/$d/$f.onnx")"
    $BIN/python -c "import json,sys; print(' / '.join(f\"{c} {json.load(open(sys.argv[1] + (f'.{c}' if c != 'heldout' else '') + '.eval.json'))['cosine_mean']:.5f}\" for c in ('heldout', 'stdlib', 'license')))" "$W/$d/$f"
  done
done
