"""How many channels (heads, FFN neurons) each group keeps, and which ones.

- uniform: every group loses the same fraction (Torch-Pruning's `global_pruning=False`, so
  `ratio` means what its `pruning_ratio` means: keep int(width * (1 - ratio))).
- global: one threshold over the mean-normalised scores of all groups (Torch-Pruning's global
  thresholding), each group keeping at least (1 - MAX_GROUP_RATIO) of its width, because an
  uncapped global threshold empties whole layers (Liu et al., network slimming, ResNet-164 at 60 %).

Kept counts are rounded up to a multiple of `round_to` (SIMD and GEMM packing: see
benchmarks/README.md for the widths onnxruntime runs fastest here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch

from compress.errors import UsageError

Allocation = Literal["uniform", "global"]
MAX_GROUP_RATIO = 0.9


def kept_counts(
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    allocation: Allocation,
    round_to: int,
    strict_round: bool,
    cost: Mapping[str, float] | None = None,
    splits: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Channels each group keeps. `cost` (relative onnxruntime time per MAC of each group, from
    the latency table) divides the scores under global allocation, so channels whose MACs run
    slowest go first.
    A group narrower than `round_to` is refused when `strict_round` (the user asked for that
    rounding), else kept whole. A unit of a group split `splits[name]` ways stands for that many
    channels, so its count is rounded to round_to / gcd(round_to, splits)."""
    widths = {name: s.numel() for name, s in scores.items()}
    if allocation == "uniform":
        raw = {name: int(w * (1 - ratio)) for name, w in widths.items()}
    else:
        raw = _global_counts(scores, ratio, cost)
    counts = {}
    for name, width in widths.items():
        split = (splits or {}).get(name, 1)
        step = round_to // math.gcd(round_to, split)
        if width * split < round_to:
            if strict_round:
                raise UsageError("--round-to", round_to, f"is larger than {name}'s width {width * split}; use a smaller --round-to or --ignore it")
            counts[name] = width
            continue
        counts[name] = min(width, step * max(1, math.ceil(max(raw[name], 1) / step)))
    return counts


def _global_counts(scores: Mapping[str, torch.Tensor], ratio: float, cost: Mapping[str, float] | None) -> dict[str, int]:
    ranked = {name: (s / (cost[name] if cost else 1.0)) for name, s in scores.items()}
    every = torch.cat([r.flatten() for r in ranked.values()])
    keep_total = max(1, int(every.numel() * (1 - ratio)))
    threshold = every.sort(descending=True).values[keep_total - 1]
    counts = {}
    for name, r in ranked.items():
        floor = math.ceil(r.numel() * (1 - MAX_GROUP_RATIO))
        counts[name] = max(floor, int((r >= threshold).sum()))
    return counts


def kept_indices(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int]) -> dict[str, list[int]]:
    """The `counts[name]` highest-scoring indices of each group, ascending (ties: lower index)."""
    kept = {}
    for name, score in scores.items():
        order = sorted(range(score.numel()), key=lambda i: (-float(score[i]), i))
        kept[name] = sorted(order[: counts[name]])
    return kept
