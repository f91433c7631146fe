"""Which layers of a Transformer encoder hidden-state distillation reads, how student layers map
to teacher layers, and a context manager that captures their outputs for one forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


def transformer_layers(module: nn.Module) -> list[nn.Module]:
    """The encoder blocks of a Transformer: the `nn.ModuleList` of same-class blocks holding the
    most parameters (`encoder.layer` in BERT, RoBERTa, ViT; `transformer.layer` in DistilBERT).
    Empty when the model has no such list (plain CNNs)."""
    candidates = [
        list(child) for child in module.modules()
        if isinstance(child, nn.ModuleList) and len(child) > 0 and len({type(block) for block in child}) == 1
    ]
    if not candidates:
        return []
    return max(candidates, key=lambda blocks: sum(p.numel() for block in blocks for p in block.parameters()))


def uniform_layer_map(student_layers: int, teacher_layers: int) -> tuple[tuple[int, int], ...]:
    """(student, teacher) layer pairs, 0-based: student layer i (1-based) reads teacher layer i*k,
    k = teacher/student (TinyBERT's uniform map, Jiao et al. 2020, section 3.3; task_distill.py).
    Equal depths (pruned heads and FFN neurons) map each layer to itself."""
    return tuple((i, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers))


@contextlib.contextmanager
def captured_outputs(layers: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Yield a list that fills with each layer's output ([batch, tokens, width]) during a forward
    pass inside the block, in the order given. The hooks are removed on exit, so the model carries
    no hook afterwards (export traces it clean)."""
    outputs: list[torch.Tensor | None] = [None] * len(layers)

    def keeper(index: int):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            # Older transformers layers return (hidden, attentions...); v5 returns the tensor.
            outputs[index] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [layer.register_forward_hook(keeper(i)) for i, layer in enumerate(layers)]
    try:
        yield outputs  # type: ignore[misc]  # filled by the forward pass inside the block
    finally:
        for handle in handles:
            handle.remove()
