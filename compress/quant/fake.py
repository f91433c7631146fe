"""Fake quantization with learned step sizes (LSQ, Esser et al. 2020, "Learned Step Size
Quantization"), for quantization-aware training.

Weights: symmetric, one step per output channel, integers in [-Q, Q] with Q = 2^(b-1) - 1 (127 at
8 bits: onnxruntime's symmetric int8 range, so the learned grid exports exactly); ternary is the
b = 2 grid {-1, 0, 1} with its step initialised as in TWN (Li et al. 2016). Activations: one step
per tensor, 8 bits, [0, 255] for non-negative inputs (after ReLU) and [-128, 127] otherwise; both
export as uint8 (zero point 0 or 128), the fast U8S8 path of onnxruntime. Text encoders quantize
their activations dynamically instead (`DynamicQuantizer`): one uint8 range per tensor per call, as
onnxruntime's DynamicQuantizeLinear computes it, the faster and more faithful route for them
(benchmarks/README.md, "MiniLM").

Forward: x_hat = round(clamp(x / s, -Q_N, Q_P)) * s, with the straight-through estimator for the
rounding and the LSQ gradient scale g = 1 / sqrt(N * Q_P) on s (N: elements per step).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

def weight_levels(bits: str) -> tuple[int, int]:
    """(Q_N, Q_P) of the symmetric weight grid."""
    q = 1 if bits == "ternary" else 2 ** (int(bits) - 1) - 1
    return q, q


def activation_levels(signed: bool) -> tuple[int, int]:
    return (128, 127) if signed else (0, 255)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    return (x - x * scale).detach() + x * scale


class LsqQuantizer(nn.Module):
    """Fake-quantizes a tensor on a grid of `step` (one per channel along dim 0, or one in all)."""

    def __init__(self, q_n: int, q_p: int, channels: int = 1) -> None:
        super().__init__()
        self.q_n, self.q_p = q_n, q_p
        self.step = nn.Parameter(torch.ones(channels))

    @property
    def per_channel(self) -> bool:
        return self.step.numel() > 1

    def _shaped_step(self, x: torch.Tensor) -> torch.Tensor:
        per_step = x.numel() / self.step.numel()
        step = _grad_scale(self.step, 1.0 / math.sqrt(per_step * self.q_p))
        return step.view(-1, *([1] * (x.dim() - 1))) if self.per_channel else step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self._shaped_step(x)
        return _round_ste(torch.clamp(x / step, -self.q_n, self.q_p)) * step

    @torch.no_grad()
    def quantized(self, x: torch.Tensor) -> torch.Tensor:
        """The fake-quantized values without gradient bookkeeping (for export)."""
        step = self.step.view(-1, *([1] * (x.dim() - 1))) if self.per_channel else self.step
        return torch.clamp(torch.round(x / step), -self.q_n, self.q_p) * step


class DynamicQuantizer(nn.Module):
    """onnxruntime's DynamicQuantizeLinear, simulated: per tensor and per call, uint8 with the range
    [min(x, 0), max(x, 0)] -> scale = range / 255, zero point round(-min / scale); the rounding
    passes gradients straight through (every value is inside its own range). No parameter learns:
    the range is the tensor's own at inference too."""

    q_n, q_p = 0, 255

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
        scale = ((high - low) / 255).clamp(min=1e-12)
        zero = torch.round(-low / scale)
        return (torch.clamp(_round_ste(x / scale) + zero, 0, 255) - zero) * scale


class _Wrapper(nn.Module):
    """A module wrapping `inner` whose attributes (and items) read through it: models read their
    layers' attributes in their forward (transformers' ViT asks
    `patch_embeddings.projection.weight.dtype`), and those reads must not break when a layer is wrapped."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self._modules.get("inner")
            if inner is None or name == "inner":
                raise
            return getattr(inner, name)

    def __getitem__(self, index: Any) -> Any:  # a wrapped Sequential indexed in a forward
        return self.inner[index]


class QuantLayer(_Wrapper):
    """A Conv or Linear layer whose input and weight are fake-quantized. `inner` keeps the float
    layer (its weight is what trains); `input_quant` may be shared with the other layers that read
    the same tensor, as onnxruntime gives a tensor one scale."""

    def __init__(self, inner: nn.Conv2d | nn.Linear, bits: str, input_quant: LsqQuantizer | DynamicQuantizer) -> None:
        super().__init__()
        self.inner = inner
        self.weight_quant = LsqQuantizer(*weight_levels(bits), channels=inner.weight.shape[0])
        self.input_quant = input_quant
        # Set by `wrap_outputs` where onnxruntime quantizes this layer's output (compress/quant/placement.py).
        self.output_quant: LsqQuantizer | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        weight = self.weight_quant(self.inner.weight)
        bias = self._bias()
        if isinstance(self.inner, nn.Linear):
            y = F.linear(x, weight, bias)
        else:
            y = self.inner._conv_forward(x, weight, bias)
        return y if self.output_quant is None else self.output_quant(y)

    def _bias(self) -> torch.Tensor | None:
        """onnxruntime's static INT8 layers add the bias as int32 on the grid input step x weight
        step (per channel): rounded the same way here (straight-through), so a bias between two
        grid points does not move outputs across a rounding boundary in one model only."""
        bias = self.inner.bias
        if bias is None or not isinstance(self.input_quant, LsqQuantizer):
            return bias
        grid = (self.input_quant.step * self.weight_quant.step).detach()
        return _round_ste(bias / grid) * grid


class OutputQuant(_Wrapper):
    """A module whose output is fake-quantized: a tensor that onnxruntime quantizes between the
    layers (a residual block's output, the pooled features), so every reader sees the quantized
    values, the residual skip included, as in the INT8 graph."""

    def __init__(self, inner: nn.Module, quant: LsqQuantizer) -> None:
        super().__init__()
        self.inner = inner
        self.quant = quant

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.quant(self.inner(*args))


class TableQuant(_Wrapper):
    """An embedding table that the INT8 graph stores as int8 with one scale per row
    (compress.quant.embeddings): each looked-up row is fake-quantized on its own symmetric grid,
    scale = max|row| / 127. A row's scale depends on that row alone, so rounding the rows looked up
    is rounding the table, at the cost of the batch's rows instead of the whole table; the rounding
    passes gradients straight through and the scale learns nothing."""

    def __init__(self, inner: nn.Embedding) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return row_quantized(self.inner(*args), ste=True)


def row_quantized(rows: torch.Tensor, ste: bool = False) -> torch.Tensor:
    """Symmetric int8 per row (the last dimension): round(x / s) * s, s = max|row| / 127 (1 for an
    all-zero row), as compress.quant.embeddings.row_quantize stores it."""
    largest = rows.detach().abs().amax(dim=-1, keepdim=True)
    scale = torch.where(largest > 0, largest / 127, torch.ones_like(largest))
    scaled = rows / scale
    return torch.clamp(_round_ste(scaled) if ste else torch.round(scaled), -127, 127) * scale


def quantizable_tables(module: nn.Module, ignore: Iterable[str] = ()) -> list[str]:
    """nn.Embedding tables of at least MIN_VALUES values (the ONNX rewrite's threshold), not tied
    to another layer, whose names match no --ignore glob."""
    import fnmatch

    from compress.quant.embeddings import MIN_VALUES

    globs = tuple(ignore)
    # A table tied to another layer (a language-model head reading the word embeddings) stays
    # float: that layer quantizes the same weight on its own grid.
    shared = {id(p) for m in module.modules() if not isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
    return [name for name, m in module.named_modules()
            if isinstance(m, nn.Embedding) and m.weight.numel() >= MIN_VALUES and id(m.weight) not in shared
            and not any(fnmatch.fnmatchcase(name, g) for g in globs)]


def wrap_tables(module: nn.Module, names: Iterable[str]) -> None:
    """Replace each named nn.Embedding by a TableQuant (in place)."""
    for name in names:
        parent, _, attr = name.rpartition(".")
        holder = module.get_submodule(parent) if parent else module
        setattr(holder, attr, TableQuant(getattr(holder, attr)))


QUANTIZABLE = (nn.Conv2d, nn.Linear)


def quant_layers(module: nn.Module) -> dict[str, QuantLayer]:
    return {name: m for name, m in module.named_modules() if isinstance(m, QuantLayer)}


def wrap(module: nn.Module, layers: Iterable[str], bits: str, shared: dict[str, str], signed: dict[str, bool],
         activations: str = "static") -> nn.Module:
    """Replace each named layer by a QuantLayer (in place). `shared[name]` names the layer whose
    input quantizer this one reuses; `signed[name]` chooses the activation grid; `activations`
    "dynamic" gives every layer a `DynamicQuantizer` instead of a learned step."""
    quantizers: dict[str, LsqQuantizer | DynamicQuantizer] = {}
    for name in layers:
        owner = shared.get(name, name)
        if owner not in quantizers:
            quantizers[owner] = DynamicQuantizer() if activations == "dynamic" else LsqQuantizer(*activation_levels(signed[owner]))
        parent, _, attr = name.rpartition(".")
        holder = module.get_submodule(parent) if parent else module
        setattr(holder, attr, QuantLayer(getattr(holder, attr), bits, quantizers[owner]))
    return module


def submodule(module: nn.Module, name: str) -> nn.Module:
    """`module.get_submodule(name)` for a name of the float model: an OutputQuant met on the way is
    looked through, as a module and its child can both be wrapped (a ViT block and a layer in it)."""
    target = module
    for part in name.split(".") if name else ():
        if isinstance(target, OutputQuant) and part not in target._modules:
            target = target.inner
        target = target.get_submodule(part)
    return target


def output_quantizer(module: nn.Module, name: str) -> LsqQuantizer | None:
    """The quantizer on the output of the module called `name` (a QuantLayer's or an OutputQuant's)."""
    target = submodule(module, name)
    return target.output_quant if isinstance(target, QuantLayer) else target.quant if isinstance(target, OutputQuant) else None


def wrap_outputs(module: nn.Module, outputs: dict[str, dict]) -> None:
    """Fake-quantize the outputs of the modules named in `outputs` (in place): each entry's "owner"
    names the layer whose input quantizer the output shares (the tensor that layer reads), else a
    new per-tensor quantizer on the "signed" grid."""
    for name, entry in outputs.items():
        owner = entry.get("owner")
        quant = submodule(module, owner).input_quant if owner else LsqQuantizer(*activation_levels(entry["signed"]))
        target = submodule(module, name)
        if isinstance(target, QuantLayer):
            target.output_quant = quant
            continue
        parent, _, attr = name.rpartition(".")
        holder = submodule(module, parent)
        setattr(holder.inner if isinstance(holder, OutputQuant) else holder, attr, OutputQuant(target, quant))
