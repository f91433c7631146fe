"""One data-free digits setting, in one process: prune --ratio 0.5, BN inversion with the given
settings, data-free KD on the set with the given distill settings (keeping the last state), then
the student's accuracy on the real train split (1,437 images: what the settings were chosen on)
and on the real test split (360 images: what benchmarks/README.md reports), with the CPU seconds of
the inversion and of the KD (one torch thread).

    .venv/bin/python benchmarks/digits_datafree_levers.py '{"synth": {"images": 128, "steps": 100}, "kd": {"steps": 400}}'

`synth` takes synthesize's options (InversionSettings), `kd` distill's (batch 64 and
`eval_every` 0 unless given); `{"noise": 128}` instead of `synth` trains on N(0, 1) images.
Prints one `RESULT {...}` line.
"""

from __future__ import annotations

import json
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
    torch.set_num_threads(1)
    setting = json.loads(sys.argv[1])
    model = load("digits")
    teacher = model.copy()
    teacher.module.requires_grad_(False)
    with tempfile.TemporaryDirectory() as folder:
        ctx = Context(run_dir=Path(folder), teacher=teacher, data={"heldout": load_data("digits:test", model)}, heldout_spec="digits:test")
        student = prune(model, PruneConfig(ratio=0.5), ctx).model
        started = time.process_time()
        if "noise" in setting:
            images = torch.randn(setting["noise"], 1, 32, 32, generator=torch.Generator().manual_seed(0))
        else:
            images = invert(teacher.module, (1, 32, 32), InversionSettings(**setting.get("synth", {})), seed=0).images
        synth_cpu = time.process_time() - started
        ctx.data["synthetic"] = Dataset("synthetic", (images,))
        started = time.process_time()
        trained = distill(student, DistillConfig(**{"data": "synthetic", "eval_every": 0, "batch_size": 64, **setting.get("kd", {})}), ctx).model
        kd_cpu = time.process_time() - started
    print("RESULT " + json.dumps({**setting, "train_accuracy": round(_accuracy(trained, "digits:train"), 4),
                                  "test_accuracy": round(_accuracy(trained, "digits:test"), 4),
                                  "synthesize_cpu_s": round(synth_cpu, 1), "distill_cpu_s": round(kd_cpu, 1),
                                  "load_1min": round(os.getloadavg()[0], 1)}), flush=True)


@torch.no_grad()
def _accuracy(model, spec: str) -> float:
    data = load_data(spec, model)
    return (model.module.eval()(data.inputs[0]).argmax(1) == data.labels).double().mean().item()


if __name__ == "__main__":
    main()
