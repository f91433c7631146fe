"""digits: the pruned student (`prune --ratio 0.5`) distilled with several step / batch / lr
settings and seeds; the figure is the test accuracy of the *last* state (`eval_every=0`: no state
is picked on the test split), with the CPU seconds of the distillation (1 torch thread).

    .venv/bin/python benchmarks/distill_digits.py '{"steps":150,"batch_size":32,"lr":2e-3,"seeds":[0,1,2]}'
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from compress.context import Context
from compress.data.specs import load_data
from compress.loading.checkpoint import load
from compress.metrics import accuracy
from compress.passes.distill import DistillConfig, distill
from compress.passes.prune import PruneConfig, prune
from compress.predict import torch_outputs


def main() -> None:
    torch.set_num_threads(1)
    model = load("digits")
    teacher = model.copy()
    teacher.module.requires_grad_(False)
    heldout = load_data("digits:test")
    run_dir = Path(tempfile.mkdtemp(prefix="distill_digits."))
    ctx = Context(run_dir=run_dir, teacher=teacher, data={"heldout": heldout}, heldout_spec="digits:test")
    pruned = prune(model, PruneConfig(ratio=0.5), ctx).model
    print(json.dumps({"pruned_accuracy": accuracy(torch_outputs(pruned, heldout), heldout.labels)}), flush=True)
    for spec in sys.argv[1:]:
        options = json.loads(spec)
        for seed in options.pop("seeds", [0]):
            cpu = time.process_time()
            seeded = Context(run_dir=run_dir, teacher=teacher, data=ctx.data, heldout_spec="digits:test", seed=seed)
            result = distill(pruned, DistillConfig(data="digits:train", eval_every=0, **options), seeded)
            correct = accuracy(torch_outputs(result.model, heldout), heldout.labels)
            print(json.dumps({**options, "seed": seed, "accuracy": correct, "cpu_s": round(time.process_time() - cpu, 1)}), flush=True)


if __name__ == "__main__":
    main()
