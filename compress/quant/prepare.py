"""Make a float model fake-quantized for QAT: choose the layers, fold BatchNorm, find which layers
read the same tensor, and initialise every step from calibration data (min/max or MSE)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.data.specs import Dataset
from compress.quant.fake import QUANTIZABLE, LsqQuantizer, QuantLayer, quant_layers
from compress.quant.options import Init

if TYPE_CHECKING:
    from compress.model import Model
# Values kept per activation for the MSE search (a random subsample; min/max use every value).
MSE_SAMPLE = 65536


def quantizable(module: nn.Module, ignore: Sequence[str] = ()) -> list[str]:
    """Conv2d and Linear layers whose names match no --ignore glob."""
    return [name for name, m in module.named_modules()
            if isinstance(m, QUANTIZABLE) and not any(fnmatch.fnmatchcase(name, g) for g in ignore)]


def reaching_output(module: nn.Module, layers: list[str], example_inputs: tuple[torch.Tensor, ...]) -> list[str]:
    """The layers whose output reaches the model's output (found by autograd on one example
    forward): BERT's pooler under a sentence encoder runs but is not exported, so it has no node
    to carry its scales and is left float."""
    if not layers:
        return []
    marks = {name: torch.zeros((), requires_grad=True) for name in layers}

    def mark(name: str):
        return lambda _m, _args, out: out + marks[name] if isinstance(out, torch.Tensor) else out

    handles = [module.get_submodule(name).register_forward_hook(mark(name)) for name in layers]
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            output = module(*example_inputs)
            grads = torch.autograd.grad(output.float().sum(), list(marks.values()), allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return [name for name, grad in zip(layers, grads) if grad is not None]


@torch.no_grad()
def reads_token_sequences(module: nn.Module, layers: list[str], example_inputs: tuple[torch.Tensor, ...]) -> bool:
    """Whether a Linear layer reads [batch, tokens, width] inputs on one example forward: a
    Transformer over tokens, whatever its inputs (token ids, or a ViT's image patches)."""
    seen = []
    handles = [module.get_submodule(name).register_forward_pre_hook(lambda _m, args: seen.append(args[0].dim() == 3))
               for name in layers if isinstance(module.get_submodule(name), nn.Linear)]
    was_training = module.training
    try:
        module.eval()(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return any(seen)


@torch.no_grad()
def probe(module: nn.Module, layers: list[str], batches: list[Dataset]) -> tuple[dict[str, str], dict[str, bool], dict[str, torch.Tensor]]:
    """Run calibration batches through `module`: which layers read the same tensor as an earlier
    one (shared[name] = that layer), whether each input goes negative, and a sample of its values."""
    seen: dict[int, str] = {}
    shared: dict[str, str] = {}
    lows: dict[str, float] = {}
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    first = [True]

    def hook(name: str):
        def record(_: nn.Module, args: tuple) -> None:
            x = args[0]
            if first[0]:
                key = x.data_ptr()
                shared.setdefault(name, seen.setdefault(key, name))
            lows[name] = min(lows.get(name, 0.0), float(x.min()))
            samples[name].append(x.detach().flatten())
        return record

    handles = [module.get_submodule(name).register_forward_pre_hook(hook(name)) for name in layers]
    module.eval()
    try:
        for index, batch in enumerate(batches):
            first[0] = index == 0
            module(*batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    signed = {name: lows[name] < 0 for name in layers}
    return {k: v for k, v in shared.items() if k != v}, signed, {k: torch.cat(v) for k, v in samples.items()}


@torch.no_grad()
def init_steps(module: nn.Module, samples: dict[str, torch.Tensor], method: Init, bits: str, seed: int = 0) -> None:
    """Weights per channel and activations per tensor, by min/max or the MSE-best clipping (TWN for ternary)."""
    generator = torch.Generator().manual_seed(seed)
    for name, layer in quant_layers(module).items():
        init_weight_steps(layer, method, bits)
        values = samples[name]
        if values.numel() > MSE_SAMPLE:
            values = values[torch.randint(values.numel(), (MSE_SAMPLE,), generator=generator)]
        if isinstance(layer.input_quant, LsqQuantizer):  # dynamic inputs have no step to start
            layer.input_quant.step.copy_(_best_step(values, layer.input_quant, method).view(1))


@torch.no_grad()
def init_weight_steps(layer: QuantLayer, method: Init, bits: str) -> None:
    """One layer's weight steps, per output channel, from its float weight."""
    weight = layer.inner.weight.detach().flatten(1)
    quant = layer.weight_quant
    if bits == "ternary":
        quant.step.copy_(_twn_step(weight))
    else:
        quant.step.copy_(torch.stack([_best_step(row, quant, method) for row in weight]))


def _twn_step(weight: torch.Tensor) -> torch.Tensor:
    """TWN per channel: threshold 0.7 mean|w|; the step is the mean magnitude of the weights above it."""
    magnitude = weight.abs()
    threshold = 0.7 * magnitude.mean(dim=1, keepdim=True)
    above = magnitude > threshold
    return (magnitude * above).sum(dim=1) / above.sum(dim=1).clamp(min=1)


def _best_step(values: torch.Tensor, quant: LsqQuantizer, method: Init) -> torch.Tensor:
    """min/max: the step that just covers the largest magnitude; mse: the clipping, among 100
    fractions of it, with the least squared error (TensorRT's weight recipe, research/methods.md 4.7)."""
    largest = values.abs().max().clamp(min=1e-8)
    top = quant.q_p
    if method == "minmax":
        return largest / top
    candidates = largest * torch.linspace(1.0, 0.01, 100) / top
    errors = torch.stack([((torch.clamp(torch.round(values / s), -quant.q_n, quant.q_p) * s - values) ** 2).mean() for s in candidates])
    return candidates[errors.argmin()]


@torch.no_grad()
def most_sensitive(model: Model, reference: torch.Tensor, data: Dataset, count: int) -> list[str]:
    """The `count` quantized layers of `model` whose return to float raises the outputs' mean
    cosine to `reference` on `data` the most (each measured alone, all others quantized): the
    layers to keep in float. On MiniLM these are FFN layers whose inputs carry outliers
    (benchmarks/README.md)."""
    from compress.predict import torch_outputs

    gains = {}
    for name, layer in quant_layers(model.module).items():
        _swap(model.module, name, layer.inner)
        try:
            gains[name] = float(torch.nn.functional.cosine_similarity(torch_outputs(model, data), reference, dim=-1).mean())
        finally:
            _swap(model.module, name, layer)
    return sorted(gains, key=gains.__getitem__, reverse=True)[:count]


def _swap(module: nn.Module, name: str, replacement: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attr, replacement)


def unwrap(module: nn.Module, names: Sequence[str]) -> None:
    """Put the float layers back in place of the named QuantLayers (in place)."""
    layers = quant_layers(module)
    for name in names:
        _swap(module, name, layers[name].inner)
