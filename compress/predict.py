"""Run a torch model over a dataset in batches, giving one tensor of outputs in the data's order,
so every quality figure compares like with like. Padded text runs sorted by length, each batch cut
to its longest real sequence (`Dataset.padded_batches`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from compress.data.specs import Dataset
from compress.model import Model


@torch.no_grad()
def torch_outputs(model: Model, data: Dataset, batch_size: int = 64) -> torch.Tensor:
    model.module.eval()
    return in_data_order((index, model.module(*inputs)) for index, inputs in data.padded_batches(batch_size))


def in_data_order(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One float tensor of every batch's outputs, each row put back at its row index."""
    indices, chunks = zip(*batches)
    outputs = torch.cat(chunks).float()
    index = torch.cat(indices)
    if outputs.shape[0] != index.shape[0] or torch.equal(index, torch.arange(len(index))):
        return outputs  # already in order, or a row count the caller refuses (a model that fixes its batch)
    placed = torch.empty_like(outputs)
    placed[index] = outputs
    return placed
