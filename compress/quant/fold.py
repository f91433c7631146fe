"""Fold BatchNorm into the convolution before it, so QAT quantizes the weights inference uses
(Jacob et al. 2018; research/methods.md 4.5): W' = W * g / sqrt(v + eps), b' = beta + (b - m) * g / sqrt(v + eps).

Pairs are found on the torch.fx graph: a BatchNorm2d whose only input is a Conv2d that feeds
nothing else. Folding replaces the BatchNorm by Identity and gives the conv a bias; the pairs are
recorded as an edit so a saved model is rebuilt the same way.
"""

from __future__ import annotations

import torch
from torch import fx, nn


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module names that fold; empty when the model cannot be traced (e.g. HF text models)."""
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - tracing fails on data-dependent control flow; then nothing folds
        return []
    modules = dict(module.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (isinstance(source, fx.Node) and source.op == "call_module" and isinstance(modules.get(source.target), nn.Conv2d)
                and len(source.users) == 1):
            pairs.append((str(source.target), str(node.target)))
    return pairs


@torch.no_grad()
def fold(module: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """Fold each (conv, bn) in place; the BatchNorm becomes Identity."""
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)
        parent, _, attr = bn_name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, attr, nn.Identity())
    return module
