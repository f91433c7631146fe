"""What MiniLM-style and attention-output distillation read inside a Transformer encoder: per
encoder layer, the query, key and value projections' outputs ([batch, tokens, heads x head size])
and the attention block's output ([batch, tokens, hidden]), captured by forward hooks during the
one forward pass the KD loss makes anyway. The attention maps are recomputed from query and key
(softmax(QK^T / sqrt(d)) with the padding masked, what the model's own attention computes), so
nothing depends on the attention implementation (eager, SDPA) or on `output_attentions`.

The layers are those of a known layout (BERT family, DistilBERT, ViT: compress.pruning.heads),
which also gives each layer's current head count after head pruning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from compress.distill.layers import captured_outputs, uniform_layer_map
from compress.errors import UsageError
from compress.pruning.heads import EncoderLayer, encoder_layers

RelationLayers = Literal["last", "map"]
PARTS = ("query", "key", "value", "output")


@dataclass(frozen=True)
class LayerParts:
    """One encoder layer's captured tensors and its head count."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    output: torch.Tensor  # the attention block's output (BERT: after its LayerNorm)
    heads: int


def attention_layers(module: nn.Module, what: str) -> list[EncoderLayer]:
    """The encoder layers of `module`; a UsageError naming `what` when it has none of a known layout."""
    layers = encoder_layers(module)
    if not layers:
        raise UsageError(what, type(module).__name__, "needs a Transformer encoder of a known layout (BERT family, DistilBERT, ViT); set its weight to 0 for this model")
    return layers


def relation_layer_pairs(student_layers: int, teacher_layers: int, which: RelationLayers) -> tuple[tuple[int, int], ...]:
    """(student, teacher) pairs: the last layers only (MiniLM distils the last attention layer),
    or every student layer on TinyBERT's uniform map."""
    if which == "last":
        return ((student_layers - 1, teacher_layers - 1),)
    return uniform_layer_map(student_layers, teacher_layers)


def _modules(layer: EncoderLayer) -> list[nn.Module]:
    lay = layer.layout
    # The attention block is the first component of the output projection's path ("attention" in all three layouts).
    return [layer.part(lay.query), layer.part(lay.key), layer.part(lay.value), layer.part(lay.output.split(".")[0])]


@contextlib.contextmanager
def captured_parts(layers: Sequence[EncoderLayer]) -> Iterator[list[LayerParts]]:
    """Yield a list that holds, after a forward pass inside the block, one `LayerParts` per layer
    in the order given. Hooks are removed on exit."""
    parts: list[LayerParts] = []
    with captured_outputs([m for layer in layers for m in _modules(layer)]) as flat:
        yield parts
        for index, layer in enumerate(layers):
            query, key, value, output = flat[index * len(PARTS) : (index + 1) * len(PARTS)]
            parts.append(LayerParts(query, key, value, output, layer.heads))
