"""Run a torch model or an onnxruntime session over a dataset in batches, giving one tensor of
outputs, so every quality figure compares like with like."""

from __future__ import annotations

import torch

from compress.data.specs import Dataset
from compress.model import Model


@torch.no_grad()
def torch_outputs(model: Model, data: Dataset, batch_size: int = 64) -> torch.Tensor:
    model.module.eval()
    # Inputs go to the module's device (a student mid-training may sit on an accelerator); outputs come back to the CPU.
    device = next(model.module.parameters(), torch.empty(0)).device
    chunks = [model.module(*(x[i : i + batch_size].to(device) for x in data.inputs)).cpu() for i in range(0, len(data), batch_size)]
    return torch.cat(chunks).float()
