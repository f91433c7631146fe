"""Models whose forward returns more than one tensor: a dict, a tuple or list, or a dataclass such
as transformers' `ModelOutput`. One tensor is chosen (`--output NAME`, else `logits`, else
`last_hidden_state`, else the first tensor) and an adapter module returns it, so the exported graph
has one output and every measurement reads the same thing; one score per input ([batch]) becomes
[batch, 1]. Anything else (a scalar, text) is refused (UsageError).
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
    """`inner(*inputs)[key]` (a dict key, a tuple index or a dataclass field; the output itself
    when `key` is None) as a plain tensor; `column` turns one score per input, [batch], into
    [batch, 1], the [batch, features] every measurement compares."""

    def __init__(self, inner: nn.Module, key: str | int | None, column: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.key = key
        self.column = column

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.inner(*inputs)
        if self.key is not None:
            out = out[self.key] if isinstance(out, (Mapping, tuple, list)) else getattr(out, self.key)
        return out.unsqueeze(-1) if self.column else out


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
        return OutputOf(module, None, column=True) if out.dim() == 1 else module
    tensors = named_tensors(out)
    if not tensors:
        raise UsageError("model output", f"{name} returns {type(out).__name__}",
                         "compress takes a tensor, or a dict, tuple or dataclass holding tensors; return the model's output tensor")
    key = _choose(tensors, wanted, name)
    _check_batched(tensors[key], name, f"output {key!r}")
    return OutputOf(module, key, column=tensors[key].dim() == 1)


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
