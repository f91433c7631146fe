"""Do two torch threads speed up the default run's training? One process per thread count: prune
--ratio 0.5, BN inversion (128 images x 100 steps, not timed), then 100 data-free KD steps (batch
64, the default recipe's distill) timed in wall and CPU seconds, with the load average around it.

    .venv/bin/python benchmarks/digits_kd_threads.py 1; .venv/bin/python benchmarks/digits_kd_threads.py 2
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from compress.context import Context
from compress.data.specs import Dataset, load_data
from compress.distill.settings import InversionSettings
from compress.distill.synthetic import invert
from compress.loading.checkpoint import load
from compress.passes.distill import DistillConfig, distill
from compress.passes.prune import PruneConfig, prune


def main() -> None:
    threads = int(sys.argv[1])
    torch.set_num_threads(threads)
    model = load("digits")
    teacher = model.copy()
    teacher.module.requires_grad_(False)
    images = invert(teacher.module, (1, 32, 32), InversionSettings(images=128, steps=100), seed=0).images
    ctx = Context(run_dir=Path(tempfile.mkdtemp()), teacher=teacher, heldout_spec="digits:test",
                  data={"heldout": load_data("digits:test", model), "synthetic": Dataset("synthetic", (images,))})
    student = prune(model, PruneConfig(ratio=0.5), ctx).model
    load_before, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
    distill(student, DistillConfig(data="synthetic", steps=100, batch_size=64, eval_every=0), ctx)
    print(f"threads {threads}: 100 KD steps, wall {time.perf_counter() - wall:.1f} s, CPU {time.process_time() - cpu:.1f} s, "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
