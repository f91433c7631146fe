#!/usr/bin/env bash
# ORT FP32 figures of the bundled models, every one from the compress CLI (benchmarks/README.md).
# Run from the repository root after `make install`; writes into benchmarks/work/ (git-ignored).
# Takes about 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
work=benchmarks/work
compress=.venv/bin/compress
mkdir -p "$work"

# Teacher accuracy of the bundled digits CNN on the real test split (360 images).
$compress eval digits --data digits:test --json > "$work/digits_eval.json"

# Export each bundled model (with the ORT-vs-torch parity check), then time its FP32 graph.
$compress run --model digits --out "$work/digits" --json export > "$work/digits_run.json"
$compress run --model minilm --out "$work/minilm" --json export > "$work/minilm_run.json"
$compress bench "$work/digits/model.onnx" --batch 1 --batch 8 --batch 32 --threads 1 --threads 2 \
    --json "$work/digits_bench.json" | tee "$work/digits_bench.txt"
$compress bench "$work/minilm/model.onnx" --batch 1 --batch 8 --threads 1 --threads 2 \
    --json "$work/minilm_bench.json" | tee "$work/minilm_bench.txt"
