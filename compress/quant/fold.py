"""Fold BatchNorm into the convolution before it, so QAT quantizes the weights inference uses
(Jacob et al. 2018; research/methods.md 4.5): W' = W * g / sqrt(v + eps), b' = beta + (b - m) * g / sqrt(v + eps).

Pairs are found by running the model once on its example inputs, not by tracing its code: torch.fx
cannot trace transformers' models (their forward branches on config values and returns ModelOutput
objects), so any model the forward runs is covered. A BatchNorm2d folds into the Conv2d before it
when, in that forward, each module ran once, the BatchNorm read exactly the tensor the conv wrote
(the same tensor, not changed in place since), and nothing else that reaches the outputs read that
tensor (counted on the autograd graph, which records every differentiable use). Folding replaces
the BatchNorm by Identity and gives the conv a bias; the pairs are recorded as an edit so a saved
model is rebuilt the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import torch
from torch import nn


def conv_bn_pairs(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, str]]:
    """(conv, bn) module names that fold, in the order the forward on `example_inputs` runs them."""
    names = {m: name for name, m in module.named_modules()
             if isinstance(m, nn.Conv2d) or (isinstance(m, nn.BatchNorm2d) and m.track_running_stats)}
    if not any(isinstance(m, nn.BatchNorm2d) for m in names):
        return []
    calls: Counter[nn.Module] = Counter()
    written: dict[int, tuple[nn.Module, torch.Tensor, int]] = {}  # id(conv output) -> (conv, output, its version then)
    # (conv, bn, their autograd nodes when they ran: an in-place op after them, such as a residual
    # `x += shortcut` on the BatchNorm's output, moves the tensor's grad_fn to its own node)
    read: list[tuple[nn.Module, nn.Module, object, object]] = []

    def after_conv(conv: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        calls[conv] += 1
        written[id(output)] = (conv, output, output._version)  # held, so no other tensor takes its id

    def after_bn(bn: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        calls[bn] += 1
        conv, tensor, version = written.get(id(inputs[0]), (None, None, None))
        if tensor is inputs[0] and tensor._version == version:
            read.append((conv, bn, tensor.grad_fn, output.grad_fn))

    handles = [m.register_forward_hook(after_conv if isinstance(m, nn.Conv2d) else after_bn) for m in names]
    was_training = module.training
    module.eval()  # the running statistics are what folds, so the forward must use them
    try:
        with torch.enable_grad():
            inputs = tuple(x.detach().requires_grad_() if x.is_floating_point() else x for x in example_inputs)
            outputs = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    uses = _uses(_tensors(outputs))
    return [(names[conv], names[bn]) for conv, bn, conv_node, bn_node in read
            if calls[conv] == calls[bn] == 1 and conv_node is not None and bn_node is not None and uses[conv_node] == 1
            and any(parent is conv_node for parent, _ in bn_node.next_functions)]


def _tensors(value: object) -> Iterator[torch.Tensor]:
    """The tensors of a model's output: a tensor, or tuples, lists, dicts (ModelOutput is one) of them."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def _uses(outputs: Iterator[torch.Tensor]) -> Counter:
    """How many autograd nodes read each node's result, over the graph that reaches `outputs`."""
    uses: Counter = Counter()
    seen: set = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for parent, _ in node.next_functions:
            if parent is not None:
                uses[parent] += 1
                stack.append(parent)
    return uses


@torch.no_grad()
def fold(module: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """Fold each (conv, bn) in place; the BatchNorm becomes Identity."""
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(beta + (bias - bn.running_mean) * scale)
        parent, _, attr = bn_name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, attr, nn.Identity())
    return module
