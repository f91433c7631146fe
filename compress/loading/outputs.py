"""Models whose forward returns more than one tensor: a dict, a tuple or list, or a dataclass such
as transformers' `ModelOutput`. One tensor is chosen (`--output NAME`, else `logits`, else
`last_hidden_state`, else the first tensor) and an adapter module returns it, so the exported graph
has one output and every measurement reads the same thing. Anything else is refused (UsageError).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compress.errors import UsageError

# Chosen in this order when the model returns several named tensors and --output is not given.
PREFERRED = ("logits", "last_hidden_state")


class OutputOf(nn.Module):
    """`inner(*inputs)[key]` (a dict key, a tuple index or a dataclass field) as a plain tensor."""

    def __init__(self, inner: nn.Module, key: str | int) -> None:
        super().__init__()
        self.inner = inner
        self.key = key

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.inner(*inputs)
        if isinstance(out, (Mapping, tuple, list)):
            return out[self.key]
        return getattr(out, self.key)


def named_tensors(out: Any) -> dict[str | int, torch.Tensor] | None:
    """The tensors of a dict, tuple/list or dataclass output by key, index or field; None for
    anything else."""
    if isinstance(out, Mapping):
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        items = list(enumerate(out))
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [(f.name, getattr(out, f.name)) for f in dataclasses.fields(out)]
    else:
        return None
    return {key: value for key, value in items if isinstance(value, torch.Tensor)}


@torch.no_grad()
def single_output(module: nn.Module, inputs: tuple[torch.Tensor, ...], wanted: str | None, name: str) -> nn.Module:
    """`module` when it returns one tensor with a batch axis; wrapped in `OutputOf` when it returns
    several (the tensor `wanted` names, else the preferred one). `name` names the model in errors."""
    module.eval()
    shapes = ", ".join(str(list(x.shape)) for x in inputs)
    try:
        out = module(*inputs)
    except Exception as exc:  # the user's forward can fail in any way; say where, with its inputs
        cause = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UsageError("model", name, f"fails on its example inputs {shapes} ({type(exc).__name__}: {cause}); check --input-shape or the example inputs its factory returns") from exc
    if isinstance(out, torch.Tensor):
        if wanted is not None:
            raise UsageError("--output", wanted, f"{name} returns a single tensor; leave --output out")
        _check_batched(out, name, "its output")
        return module
    tensors = named_tensors(out)
    if not tensors:
        raise UsageError("model output", f"{name} returns {type(out).__name__}",
                         "compress takes a tensor, or a dict, tuple or dataclass holding tensors; return the model's output tensor")
    key = _choose(tensors, wanted, name)
    _check_batched(tensors[key], name, f"output {key!r}")
    return OutputOf(module, key)


def _choose(tensors: dict[str | int, torch.Tensor], wanted: str | None, name: str) -> str | int:
    if wanted is None:
        return next((k for k in PREFERRED if k in tensors), next(iter(tensors)))
    for key in tensors:
        if str(key) == wanted:
            return key
    listed = ", ".join(f"{k} {list(t.shape)}" for k, t in tensors.items())
    raise UsageError("--output", wanted, f"{name} returns no tensor of that name or index; it returns {listed}")


def _check_batched(tensor: torch.Tensor, name: str, what: str) -> None:
    if tensor.dim() == 0:
        raise UsageError("model output", f"{name} {what} is a scalar",
                         "compress needs one output row per input (shape [batch, ...]); return per-example outputs, or choose another with --output")
