"""SmoothQuant-style input smoothing (Xiao et al. 2023, "SmoothQuant"): Y = (X diag(s)^-1)(diag(s) W^T),
exact in float, with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) per input channel j, so outlier
channels of X hand part of their range to the weights (quantized per output channel); max|X_j| is
floored at the median channel's, so no channel quieter than the typical one is amplified (`scales`).

In post-LayerNorm BERT the LayerNorm that makes an FFN's or attention's input also feeds the residual,
so 1/s cannot fold into it: it is an explicit Mul on the input. The Mul sits on the first input of
the module just above the readers of one tensor (`attention.self` for query/key/value, which then
share one Mul and one dynamic quantization; `intermediate` for the FFN input; `output` for the GELU
output), as a forward pre-hook of a child `InputScale` module, so no layer changes its name (the
--ignore globs, --keep-float's report and Teacher Intervention's lookups still match) and the
scale is a buffer saved with the weights. The exported graph holds one Mul before each smoothed
group's DynamicQuantizeLinear.

Which groups to smooth is measured, as --keep-float measures its layers: each group smoothed alone
in the fake-quantized model, kept when that raises the mean cosine of the outputs to the float
model's on the calibration inputs (on MiniLM, smoothing the GELU outputs loses, the FFN inputs win:
benchmarks/README.md, "MiniLM W8A8").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.data.specs import Dataset
from compress.quant.options import Init

if TYPE_CHECKING:
    from compress.model import Model

# The child module's attribute on the module whose first input it scales.
ATTRIBUTE = "smooth_input"
# Floor of max|X_j| and max|W_j|: a channel that is zero everywhere keeps a finite scale.
FLOOR = 1e-5


class InputScale(nn.Module):
    """Multiplies its owner's first positional input by `inverse_scale` (1/s), as a forward pre-hook."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("inverse_scale", torch.ones(channels))

    def pre_hook(self, _owner: nn.Module, args: tuple) -> tuple:
        return (args[0] * self.inverse_scale, *args[1:])


def attach(module: nn.Module, at: str, channels: int) -> InputScale:
    """Give the module named `at` an InputScale on its first input (in place; ones until set)."""
    owner = module.get_submodule(at) if at else module
    scale = InputScale(channels)
    owner.add_module(ATTRIBUTE, scale)
    owner.register_forward_pre_hook(scale.pre_hook)
    return scale


@dataclass(frozen=True)
class Group:
    """Linear layers that read one tensor, the module whose first input that tensor is (where the
    Mul goes), and max|X_j| per channel of the tensor over the calibration inputs."""

    at: str
    readers: tuple[str, ...]
    input_max: torch.Tensor

    @property
    def channels(self) -> int:
        return self.input_max.numel()


@torch.no_grad()
def candidates(module: nn.Module, layers: Sequence[str], shared: dict[str, str], batches: Sequence[Dataset]) -> list[Group]:
    """The float Linear layers of `layers` grouped by the tensor they read (`shared` from probe),
    each group with the lowest module above its readers that receives that tensor as its first
    input (checked on the batches: a group without one cannot carry the Mul and is left out)."""
    readers: dict[str, list[str]] = {}
    for name in layers:
        if isinstance(module.get_submodule(name), nn.Linear):
            readers.setdefault(shared.get(name, name), []).append(name)
    parents = {owner: _common_parent(names) for owner, names in readers.items()}
    parents = {owner: at for owner, at in parents.items() if at is not None}
    maxima: dict[str, torch.Tensor] = {}
    read: dict[str, int] = {}
    received: dict[str, int] = {}

    def reader_hook(owner: str):
        def record(_m: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            read[owner] = x.data_ptr()
            x = x.abs().flatten(0, -2).amax(0)
            maxima[owner] = torch.maximum(maxima[owner], x) if owner in maxima else x
        return record

    def parent_hook(owner: str):
        def record(_m: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                received[owner] = args[0].data_ptr()
        return record

    handles = [module.get_submodule(owner).register_forward_pre_hook(reader_hook(owner)) for owner in parents]
    handles += [module.get_submodule(at).register_forward_pre_hook(parent_hook(owner)) for owner, at in parents.items()]
    module.eval()
    same = dict.fromkeys(parents, True)
    try:
        for batch in batches:
            read.clear()
            received.clear()
            module(*batch.inputs)
            for owner in parents:
                same[owner] = same[owner] and owner in read and received.get(owner) == read[owner]
    finally:
        for handle in handles:
            handle.remove()
    return [Group(parents[owner], tuple(readers[owner]), maxima[owner]) for owner in parents if same[owner]]


def _common_parent(names: Sequence[str]) -> str | None:
    """The longest module path above every name (None for a layer at the top level)."""
    common: list[str] = []
    for level in zip(*(name.split(".")[:-1] for name in names)):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common) if common else None


def scales(weights: Sequence[nn.Linear], input_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = m_j^alpha / max|W_j|^(1 - alpha), W_j the column j of every reader (one Mul for all),
    m_j = max|X_j| floored at the median channel's max|X|.

    The floor keeps smoothing to its job, shrinking the channels above the typical one: a quiet
    channel is not amplified. Amplifying one buys little under a per-tensor range and breaks when
    the calibration inputs under-estimate it: on MiniLM, synthetic token sequences put some GELU
    outputs' maxima at 1/30 of what real text gives, and those channels, scaled up ~10x, then set
    the dynamic range on real text (data-free `--steps 0` INT8 MiniLM, held-out recall@10 0.917
    without the floor, 0.943 with it; benchmarks/README.md, "MiniLM W8A8 data-free")."""
    weight_max = torch.stack([layer.weight.detach().abs().amax(0) for layer in weights]).amax(0)
    typical = max(float(input_max.median()), FLOOR)
    return input_max.clamp(min=typical) ** alpha / weight_max.clamp(min=FLOOR) ** (1 - alpha)


@torch.no_grad()
def smooth(module: nn.Module, group: Group, scale: torch.Tensor, weights: Sequence[nn.Linear]) -> None:
    """Apply one group's smoothing in place: the weight columns of its readers (`weights`, the float
    layers) times s, 1/s on the input."""
    for layer in weights:
        layer.weight.mul_(scale)
    attach(module, group.at, group.channels).inverse_scale.copy_(1 / scale)


def mean_cosine(model: Model, data: Dataset, reference: torch.Tensor) -> float:
    from compress.predict import torch_outputs

    return float(nn.functional.cosine_similarity(torch_outputs(model, data), reference, dim=-1).mean())


@torch.no_grad()
def cosine_each_alone(quantized: Model, groups: Sequence[Group], alpha: float, data: Dataset, reference: torch.Tensor,
                      method: Init, bits: str) -> dict[str, float]:
    """Mean cosine to `reference` on `data` of the fake-quantized model with each group smoothed
    alone (its readers' weight steps started again from their smoothed weights)."""
    result = {}
    for group in groups:
        twin = quantized.copy()
        smooth_quantized(twin.module, group, alpha, method, bits)
        result[group.at] = mean_cosine(twin, data, reference)
    return result


def smooth_quantized(module: nn.Module, group: Group, alpha: float, method: Init, bits: str) -> None:
    """Smooth a group whose readers are already fake-quantized: the float weights inside scaled, their steps started again."""
    from compress.quant.prepare import init_weight_steps

    readers = [module.get_submodule(name) for name in group.readers]
    smooth(module, group, scales([layer.inner for layer in readers], group.input_max, alpha), [layer.inner for layer in readers])
    for layer in readers:
        init_weight_steps(layer, method, bits)
