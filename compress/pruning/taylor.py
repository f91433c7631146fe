"""Gradients for first-order Taylor importance (Molchanov et al., CVPR 2019): a few batches of
the pass's data through the model, their loss back-propagated, gradients summed in `.grad`.

The loss is the task's own where it can be: cross-entropy on the labels when the data has them,
else on the model's own top-1 (a classifier's pseudo-labels). An embedding model has no labels
and its outputs are unit-norm, so it gets an in-batch contrastive loss against its own detached
embeddings (InfoNCE, temperature 0.05): zero-gradient losses such as "distance to itself" would
score every unit 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compress.data.specs import Dataset
from compress.model import Model

CONTRASTIVE_TEMPERATURE = 0.05


def accumulate_gradients(model: Model, data: Dataset, batches: int, batch_size: int, seed: int) -> int:
    """Back-propagate `batches` batches of `data` through `model.module` (eval mode, so BN uses
    its running statistics); returns the number of samples seen."""
    module = model.module.eval()
    module.zero_grad(set_to_none=True)
    seen = 0
    with torch.enable_grad():
        for index, batch in enumerate(data.batches(batch_size, shuffle=True, seed=seed)):
            if index == batches:
                break
            output = module(*batch.trimmed().inputs)  # padded text cut to its longest sentence: same outputs, faster
            _loss(model.task, output, batch.labels).backward()
            seen += len(batch)
    return seen


def _loss(task: str, output: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(output, labels if labels is not None else output.detach().argmax(dim=1))
    logits = output @ output.detach().T / CONTRASTIVE_TEMPERATURE
    return F.cross_entropy(logits, torch.arange(output.shape[0]))
