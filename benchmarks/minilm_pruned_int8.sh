#!/usr/bin/env bash
# Issue 14's "with pruning: >= 3.5x faster than FP32 at batch 1, seq 128, at mean cosine >= 0.97":
# MiniLM with half of each FFN pruned (taylor importance, no heads), distilled on a broad corpus
# from outside the project, then W8A8 through `qat --bits 8 export`; quality against the original
# on text:heldout and two outside corpora (benchmarks/qat_minilm.sh), latency paired against the
# dense FP32 export at batch 1, one thread, sequence 128.
# Usage: bash benchmarks/minilm_pruned_int8.sh WORKDIR [STEPS]   (about 20 CPU minutes at 2000 steps)
#   FFN=0.5 MAN=20000 COUNT=20000 override the FFN ratio, the manual-page sentences and the docstring
#   sentences of the corpus (1000000: all there are); VAL=0.1 the share held aside to pick the state.
set -euo pipefail
W=${1:-runs/bench-minilm-pruned}
STEPS=${2:-2000}
FFN=${FFN:-0.5}
MAN=${MAN:-20000}
COUNT=${COUNT:-20000}
VAL=${VAL:-0.1}
BIN=.venv/bin
rm -rf "$W" && mkdir -p "$W"
# The corpus: COUNT sentences of site-packages docstrings, MAN of manual pages, and text:train.
$BIN/python benchmarks/site_sentences.py "$W/site.txt" --count "$COUNT" --man "$MAN"
{ cat "$W/site.txt"; $BIN/python -c "from compress.data.corpus import corpus; print('\n'.join(corpus('train')))"; } > "$W/corpus.txt"
$BIN/compress run --model minilm --out "$W/pruned" prune --ffn-ratio "$FFN" --head-ratio 0 --importance taylor \
    --data "text:$W/corpus.txt" distill --data "text:$W/corpus.txt" --steps "$STEPS" --hidden 1 --eval-every 500 --validation-fraction "$VAL" \
    --no-dropout --group-by-length export
# W8A8 of the pruned model (quality against the original minilm), beside onnxruntime's quantize_dynamic.
MODEL="$W/pruned/model" bash benchmarks/qat_minilm.sh "$W/int8" --steps 0
$BIN/compress run --model minilm --out "$W/dense" export
$BIN/compress bench "$W/dense/model.onnx" "$W/pruned/model.onnx" "$W/int8/qat_int8.onnx" "$W/int8/ort_dynamic.onnx" \
    --baseline "$W/dense/model.onnx" --batch 1 --threads 1 --max-seconds 60 --json "$W/bench_vs_dense.json"
