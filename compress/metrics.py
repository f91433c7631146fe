"""What a model costs (params, MACs, bytes) and how close it stays to its reference (accuracy,
top-1 agreement, cosine similarity, nearest-neighbour recall@k). Pure functions on tensors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def state_bytes(module: nn.Module) -> int:
    """Bytes of every tensor the model stores (parameters and buffers such as BN statistics)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@torch.no_grad()
def mac_count(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass on `inputs`: convolutions, linear layers and
    matrix products (attention included), as torch's FlopCounterMode counts them (FLOPs / 2).

    Counted from the shapes of each call at the torch-function level (`_MacCounter`), which
    gives FlopCounterMode's number on the tested families (tests/test_metrics.py) without
    importing torch's compiler stack, which FlopCounterMode pulls in (~2 s on first use).
    """
    module.eval()
    with _MacCounter() as counter:
        module(*inputs)
    return counter.macs


def _matmul_macs(args: tuple, _kwargs: dict, out: torch.Tensor) -> int:
    return out.numel() * args[0].shape[-1]


def _addmm_macs(args: tuple, _kwargs: dict, out: torch.Tensor) -> int:
    return out.numel() * args[1].shape[-1]  # (bias, a, b): a's last axis is the reduced one


def _linear_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    return out.numel() * weight.shape[-1]


def _conv_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    weight = args[1] if len(args) > 1 else kwargs["weight"]  # [out, in / groups, *kernel]
    return out.numel() * math.prod(weight.shape[1:])


def _conv_transpose_macs(args: tuple, kwargs: dict, _out: torch.Tensor) -> int:
    weight = args[1] if len(args) > 1 else kwargs["weight"]  # [in, out / groups, *kernel]
    return args[0].numel() * math.prod(weight.shape[1:])


def _attention_macs(args: tuple, kwargs: dict, _out: torch.Tensor) -> int:
    query, key, value = (args[i] if len(args) > i else kwargs[name] for i, name in enumerate(("query", "key", "value")))
    # softmax(q k^T) v: [.., L, E] x [.., E, S], then [.., L, S] x [.., S, Ev]
    return math.prod(query.shape[:-1]) * key.shape[-2] * (query.shape[-1] + value.shape[-1])


_MAC_RULES: dict[Callable[..., Any], Callable[[tuple, dict, torch.Tensor], int]] = {
    **dict.fromkeys((torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm,
                     torch.bmm, torch.Tensor.bmm), _matmul_macs),
    **dict.fromkeys((torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm), _addmm_macs),
    F.linear: _linear_macs,
    **dict.fromkeys((F.conv1d, F.conv2d, F.conv3d), _conv_macs),
    **dict.fromkeys((F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d), _conv_transpose_macs),
    F.scaled_dot_product_attention: _attention_macs,
}


class _MacCounter(TorchFunctionMode):
    """Adds up the multiply-accumulates of every call that has a rule in `_MAC_RULES`."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = _MAC_RULES.get(func)
        if rule is not None:
            self.macs += int(rule(args, kwargs, out))
        return out


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
