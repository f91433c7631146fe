"""MiniLM: a quarter of the heads and half the FFN neurons pruned (`prune --head-ratio 0.25
--ffn-ratio 0.5`), then distilled on text:train with each setting given. Printed per setting: the
best step `distill` picked on its validation share of text:train, and the mean cosine to the
original on text:heldout of the model it returned (text:heldout picks nothing), with the CPU
seconds (1 torch thread). The pruned model is saved once per importance in the work folder and reused.

    .venv/bin/python benchmarks/distill_minilm.py '{"steps":200,"hidden":1.0,"eval_every":50}'
    .venv/bin/python benchmarks/distill_minilm.py --importance taylor --taylor-batches 52 '{"steps":200,"hidden":1.0}'
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
from compress.predict import torch_outputs

WORK = Path("benchmarks/work/distill_minilm")  # ignored by git


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--importance", default="l2", help="prune importance: l2, l1 or taylor (on text:train)")
    parser.add_argument("--taylor-batches", type=int, default=4, help="batches of 32 of text:train for taylor importance")
    parser.add_argument("--save", type=Path, help="save the last setting's distilled model in this folder (for export and bench)")
    parser.add_argument("settings", nargs="*", help="distill options as JSON, one run each")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load("minilm")
    teacher = model.copy()
    teacher.module.requires_grad_(False)
    heldout = load_data("text:heldout", model)
    WORK.mkdir(parents=True, exist_ok=True)
    ctx = Context(run_dir=WORK, teacher=teacher, data={"heldout": heldout}, heldout_spec="text:heldout",
                  log=lambda line: print(line, file=sys.stderr, flush=True))
    name = f"pruned_{args.importance}" + (f"_{args.taylor_batches}" if args.importance == "taylor" else "")
    saved = WORK / name
    if not (saved / "model.json").exists():
        data = "text:train" if args.importance == "taylor" else None
        config = PruneConfig(head_ratio=0.25, ffn_ratio=0.5, importance=args.importance, data=data, taylor_batches=args.taylor_batches)
        save(prune(model, config, ctx).model, saved)
    pruned = load(str(saved))
    reference = torch_outputs(teacher, heldout)
    print(json.dumps({"pruned": name, "pruned_cosine": round(cosine(torch_outputs(pruned, heldout), reference).mean().item(), 4),
                      "load_avg": os.getloadavg()[0]}), flush=True)
    for spec in args.settings:
        options = json.loads(spec)
        cpu = time.process_time()
        result = distill(pruned, DistillConfig(data="text:train", **options), ctx)
        heldout_cosine = cosine(torch_outputs(result.model, heldout), reference).mean().item()
        figures = result.figures
        print(json.dumps({**options, "best_step": figures["best_step"], "validation_best": figures["validation_best"],
                          "validation_final": figures["validation_final"], "heldout_cosine": round(heldout_cosine, 4),
                          "cpu_s": round(time.process_time() - cpu, 1), "load_avg": os.getloadavg()[0]}), flush=True)
        if args.save is not None:
            save(result.model, args.save)


if __name__ == "__main__":
    main()
