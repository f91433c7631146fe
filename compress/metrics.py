"""What a model costs (params, MACs, bytes) and how close it stays to its reference (accuracy,
top-1 agreement, cosine similarity, nearest-neighbour recall@k). Pure functions on tensors."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def state_bytes(module: nn.Module) -> int:
    """Bytes of every tensor the model stores (parameters and buffers such as BN statistics)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@torch.no_grad()
def mac_count(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass on `inputs` (torch counts FLOPs = 2 x MACs)."""
    module.eval()
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == labels).double().mean().item()


def top1_agreement(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == reference.argmax(dim=1)).double().mean().item()


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two [N, D] tensors."""
    return nn.functional.cosine_similarity(a.double(), b.double(), dim=1)


def neighbour_recall(embeddings: torch.Tensor, reference: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """(recall@k, top-1 agreement) of each row's nearest neighbours (cosine, self excluded).

    recall@k is the share of each row's reference top-k neighbours that are also in its top-k
    under `embeddings`, averaged over rows; top-1 agreement is the share whose nearest neighbour is
    the same under both.
    """
    n = embeddings.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return 1.0, 1.0
    ours = _neighbours(embeddings, k)
    theirs = _neighbours(reference, k)
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ours, theirs))
    return overlap / (n * k), (ours[:, 0] == theirs[:, 0]).double().mean().item()


def _neighbours(x: torch.Tensor, k: int) -> torch.Tensor:
    x = nn.functional.normalize(x.double(), dim=1)
    sims = x @ x.T
    sims.fill_diagonal_(-float("inf"))
    return sims.topk(k, dim=1).indices


def quality(task: str, outputs: torch.Tensor, reference: torch.Tensor | None, labels: torch.Tensor | None) -> dict[str, float]:
    """The flat quality figures of `outputs`: accuracy where there are labels, and fidelity to the
    reference outputs (top-1 agreement for classifiers; cosine and neighbour recall for encoders)."""
    figures: dict[str, float] = {}
    if task == "classification":
        if labels is not None:
            figures["accuracy"] = accuracy(outputs, labels)
        if reference is not None:
            figures["agreement"] = top1_agreement(outputs, reference)
    if reference is not None:
        cos = cosine(outputs, reference)
        figures["cosine_mean"] = cos.mean().item()
        figures["cosine_min"] = cos.min().item()
        if task == "embedding":
            figures["recall_at_10"], figures["nn_agreement"] = neighbour_recall(outputs, reference)
    return figures


def primary_metric(task: str, has_labels: bool) -> str:
    """The one figure a quality budget is checked on."""
    return "accuracy" if task == "classification" and has_labels else ("agreement" if task == "classification" else "cosine_mean")
