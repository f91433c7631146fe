"""Data-free distillation on MiniLM: the same pruned student (`prune --head-ratio 0.25 --ffn-ratio
0.5`, L2 importance, no data) distilled with the same budget on each data source, then measured by
its mean cosine to the original on text:heldout (553 sentences, never trained or selected on:
distill keeps its last state).

Rows: `real` (text:train, 1,662 sentences), and the synthetic sets of `synthesize` for each
`--text-method` named (random, vocab-rank, diverse). Each row is what

    compress run --model minilm --out DIR prune --head-ratio 0.25 --ffn-ratio 0.5 \
        synthesize --text-method METHOD --sequences N distill --data synthetic --steps S --eval-every 0

does (`distill --data text:train` for `real`), run in one process so the pruned student is made
once. The work folder is benchmarks/work/minilm_datafree (ignored by git); synthetic sets come
from the cache when the same one was made before (set COMPRESS_CACHE_DIR to time synthesis).

    nice -n 5 .venv/bin/python benchmarks/minilm_datafree.py --steps 100 random vocab-rank real diverse
    nice -n 5 .venv/bin/python benchmarks/minilm_datafree.py --steps 100 --distill '{"attention": 1.0, "value_relation": 1.0, "relation_layers": "map"}' diverse
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from compress.context import Context
from compress.data.specs import load_data
from compress.loading.checkpoint import load
from compress.metrics import cosine
from compress.model import save
from compress.passes.distill import DistillConfig, distill
from compress.passes.prune import PruneConfig, prune
from compress.passes.synthesize import SynthesizeConfig, synthesize
from compress.predict import torch_outputs

WORK = Path("benchmarks/work/minilm_datafree")
ROWS = ("real", "random", "vocab-rank", "diverse")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="+", choices=ROWS)
    parser.add_argument("--steps", type=int, default=300, help="KD steps, the same for every row")
    parser.add_argument("--sequences", type=int, default=1024, help="synthetic sequences per set")
    parser.add_argument("--distill", default="{}", help="more distill options as JSON, the same for every row, e.g. '{\"hidden\": 1}'")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load("minilm")
    teacher = model.copy()
    teacher.module.requires_grad_(False)
    heldout = load_data("text:heldout", model)
    reference = torch_outputs(teacher, heldout)
    pruned = _pruned(model, teacher, heldout)
    print(json.dumps({"pruned_cosine": round(cosine(torch_outputs(pruned, heldout), reference).mean().item(), 4)}), flush=True)
    table = []
    for row in args.rows:
        run_dir = WORK / f"{row}-{args.steps}-seed{args.seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        ctx = Context(run_dir=run_dir, teacher=teacher, data={"heldout": heldout}, heldout_spec="text:heldout", seed=args.seed, log=_log)
        load_before, cpu, wall = os.getloadavg()[0], time.process_time(), time.perf_counter()
        synthesis = {}
        if row != "real":
            made = synthesize(pruned, SynthesizeConfig(text_method=row, sequences=args.sequences), ctx)
            ctx.data.update(made.data)
            synthesis = made.figures
        synth_cpu = time.process_time() - cpu
        options = {"steps": args.steps, "eval_every": 0, **json.loads(args.distill)}
        result = distill(pruned, DistillConfig(data="text:train" if row == "real" else "synthetic", **options), ctx)
        figures = {
            "row": row, "heldout_cosine": round(cosine(torch_outputs(result.model, heldout), reference).mean().item(), 4),
            "steps": args.steps, "distill": options, "synthesis_cpu_s": round(synth_cpu, 1),
            "kd_cpu_s": round(time.process_time() - cpu - synth_cpu, 1), "wall_s": round(time.perf_counter() - wall, 1),
            "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1),
            "synthetic": {k: synthesis[k] for k in ("sequences", "tokens_mean", "distinct_tokens", "teacher_output_cosine_mean", "reused") if k in synthesis},
        }
        table.append(figures)
        print(json.dumps(figures), flush=True)
    print("\n| data | held-out cosine | synthesis CPU s | KD CPU s | wall s | load 1 min before / after |\n|---|---:|---:|---:|---:|---|")
    for f in table:
        print(f"| {f['row']} | {f['heldout_cosine']:.4f} | {f['synthesis_cpu_s']} | {f['kd_cpu_s']} | {f['wall_s']} | {f['load_before']} / {f['load_after']} |")


def _pruned(model, teacher, heldout):
    saved = WORK / "pruned_l2"
    if not (saved / "model.json").exists():
        WORK.mkdir(parents=True, exist_ok=True)
        ctx = Context(run_dir=WORK, teacher=teacher, data={"heldout": heldout}, heldout_spec="text:heldout", log=_log)
        save(prune(model, PruneConfig(head_ratio=0.25, ffn_ratio=0.5), ctx).model, saved)
    return load(str(saved))


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
