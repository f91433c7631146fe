"""What can be pruned in a model and the edit that prunes it: CNN channel groups (through the
channel graph) or Transformer heads and FFN neurons (our own surgery), behind one interface.

`pruner_for(model, ignore)` picks the kind; `Pruner.groups` lists the prunable groups,
`Pruner.scores` scores their units, `Pruner.edit` turns ratios into the edit (kept indices) and
`Pruner.apply` applies it to a copy of the model through the same function that replays it on load.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from compress.errors import UsageError
from compress.model import Model
from compress.pruning.allocate import Allocation, kept_counts, kept_indices
from compress.pruning.edits import PRUNE_CHANNELS, PRUNE_HEADS, prune_channels, prune_heads

# onnxruntime runs widths that are multiples of 8 about 1.4x faster per MAC than other widths
# here; multiples of 16 are faster still but leave narrow networks unpruned (benchmarks/README.md,
# "--round-to default").
DEFAULT_ROUND_TO = 8
QUANTIZED_MARKERS = ("quant", "qat", "ptq", "int8")


@dataclass(frozen=True)
class Group:
    """A prunable group as `compress inspect --groups` shows it."""

    name: str
    width: int
    touches: tuple[str, ...]
    operations: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ratios:
    """Fraction removed: channels (CNNs), heads and FFN neurons (Transformers)."""

    channels: float
    heads: float
    ffn: float


class ChannelPruner:
    kind = "channels"

    def __init__(self, model: Model, ignore: tuple[str, ...]) -> None:
        from compress.pruning.channels import ChannelGraph

        self.model = model
        self.work = model.copy()
        self.graph = ChannelGraph(self.work.module, self.work.example_inputs, ignore)
        if not self.graph.groups:
            raise UsageError("prune", model.name, "has no prunable channel group (all are protected or reach the output); check --ignore")
        self.splits = {g.root: g.splits for g in self.graph.groups}

    @property
    def groups(self) -> list[Group]:
        return [Group(g.root, g.width, g.touches, g.operations) for g in self.graph.groups]

    def scores(self, importance: str) -> dict[str, torch.Tensor]:
        return self.graph.scores(importance)

    def edit(self, scores: Mapping[str, torch.Tensor], ratios: Ratios, allocation: Allocation, round_to: int,
             strict_round: bool, cost: Mapping[str, float] | None = None) -> dict[str, Any]:
        counts = kept_counts(scores, ratios.channels, allocation, round_to, strict_round, cost, self.splits)
        offsets = kept_indices(scores, counts)
        # A split group keeps the same offsets in every slice.
        kept = {root: [s * scores[root].numel() + j for s in range(self.splits[root]) for j in kept_offsets]
                for root, kept_offsets in offsets.items()}
        return {"kind": PRUNE_CHANNELS, "kept": kept}

    def apply(self, edit: dict[str, Any], check: bool = False) -> Model:
        return prune_channels(self.model.copy(), edit, check=check)


class HeadPruner:
    kind = "heads"

    def __init__(self, model: Model, layers) -> None:
        self.model = model
        self.work = model.copy()
        from compress.pruning.heads import encoder_layers

        names = {layer.name for layer in layers}
        self.layers = [layer for layer in encoder_layers(self.work.module) if layer.name in names]

    @property
    def groups(self) -> list[Group]:
        found = []
        for layer in self.layers:
            lay = layer.layout
            found.append(Group(f"{layer.name}:heads", layer.heads, tuple(f"{layer.name}.{p}" for p in (lay.query, lay.key, lay.value, lay.output))))
            found.append(Group(f"{layer.name}:ffn", layer.ffn, (f"{layer.name}.{lay.up} (out)", f"{layer.name}.{lay.down} (in)")))
        return found

    def scores(self, importance: str) -> dict[str, torch.Tensor]:
        from compress.pruning.heads import unit_scores

        return unit_scores(self.layers, importance)

    def edit(self, scores: Mapping[str, torch.Tensor], ratios: Ratios, allocation: Allocation, round_to: int,
             strict_round: bool, cost: Mapping[str, float] | None = None) -> dict[str, Any]:
        # Heads and neurons are ranked apart (Torch-Pruning's head_pruning_ratio): their scores
        # do not compare, and a head is kept whole (round to 1 head, at least one per layer).
        heads = {k: v for k, v in scores.items() if k.endswith(":heads")}
        ffn = {k: v for k, v in scores.items() if k.endswith(":ffn")}
        kept_heads = kept_indices(heads, kept_counts(heads, ratios.heads, allocation, 1, False))
        kept_ffn = kept_indices(ffn, kept_counts(ffn, ratios.ffn, allocation, round_to, strict_round))
        layers = {layer.name: {"heads": kept_heads[f"{layer.name}:heads"], "ffn": kept_ffn[f"{layer.name}:ffn"]} for layer in self.layers}
        return {"kind": PRUNE_HEADS, "layers": layers}

    def apply(self, edit: dict[str, Any], check: bool = False) -> Model:
        return prune_heads(self.model.copy(), edit)


def pruner_for(model: Model, ignore: tuple[str, ...]) -> ChannelPruner | HeadPruner:
    """Heads/FFN surgery for known Transformer encoders, the channel graph for everything else;
    an attention module of an unknown layout is refused (channel pruning would split its heads
    wrong). Already-quantized models are refused: quantization scales describe the old widths."""
    from compress.pruning.heads import encoder_layers, unknown_attention

    quantized = [e.get("kind") for e in model.edits if any(m in str(e.get("kind", "")).lower() for m in QUANTIZED_MARKERS)]
    if quantized:
        raise UsageError("prune", model.name, f"is already quantized ({quantized[0]}); prune first, then quantize: put prune before it in the recipe")
    layers = encoder_layers(model.module)
    if layers:
        kept = [layer for layer in layers if not any(fnmatch.fnmatch(layer.name, g) for g in ignore)]
        if not kept:
            raise UsageError("--ignore", ", ".join(ignore), "protects every encoder layer; nothing is left to prune")
        return HeadPruner(model, kept)
    unknown = unknown_attention(model.module, layers, ignore)
    if unknown is not None:
        raise UsageError("prune", unknown, "is an attention layout compress cannot prune yet (BERT, DistilBERT, RoBERTa, ViT are supported); protect it with --ignore GLOB")
    return ChannelPruner(model, ignore)


def unmatched_globs(model: Model, ignore: tuple[str, ...]) -> list[str]:
    """The --ignore globs that name no module (most likely typos; the pass warns about each)."""
    names = [name for name, _ in model.module.named_modules()]
    return [glob for glob in ignore if not any(fnmatch.fnmatch(name, glob) for name in names)]
